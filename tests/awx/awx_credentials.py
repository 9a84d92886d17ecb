"""AWX credential types as AWX reads and injects them, for the tests (no AWX here).

`load_credential_types()` reads extensions/awx/credential_types/*.yml. `shape_problems()` checks a definition the way
AWX's API would refuse it (and a little more: secrets must be marked secret). `inject()` renders a credential's
injectors the way AWX's `CredentialType.inject_credential` does (awx/main/models/credential/__init__.py): Jinja in an
ImmutableSandboxedEnvironment over the credential's non-empty inputs, every `file` injector written to its own file
under `<private data dir>/env/` and named `tower.filename` (one file) or `tower.filename.<label>` (`template.<label>`),
at its path inside the execution environment (`/runner/env/...`); `env` and `extra_vars` rendered to strings.
"""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tests.support.paths import REPO_ROOT

CREDENTIAL_TYPES_DIR = REPO_ROOT / "extensions" / "awx" / "credential_types"
# Kinds AWX lets users create (the API refuses the others for custom credential types).
CUSTOM_KINDS = {"cloud", "net"}
FIELD_TYPES = {"string", "boolean"}
FIELD_KEYS = {"id", "label", "type", "secret", "multiline", "help_text", "default", "choices", "format"}
INJECTOR_KINDS = {"file", "env", "extra_vars"}
# Field ids that hold secrets: they must be `secret: true` (masked in the UI and API, encrypted in the database).
SECRET_WORDS = ("key", "passphrase", "password", "connection_string", "token", "secret")
# In the execution environment, the private data directory is mounted here.
CONTAINER_ROOT = "/runner"


def load_credential_types() -> dict[str, dict]:
    """file name -> credential type definition."""
    return {
        path.name: yaml.safe_load(path.read_text(encoding="utf-8"))
        for path in sorted(CREDENTIAL_TYPES_DIR.glob("*.yml"))
    }


def _references(template: str) -> tuple[set[str], set[str]]:
    """(input field names, file labels) a Jinja template uses: `tower.filename.<label>`, '' for `tower.filename`,
    and `<tower.x>` for any other attribute of `tower` (which AWX does not define)."""
    tree = ImmutableSandboxedEnvironment().parse(template)
    names = meta.find_undeclared_variables(tree) - {"tower"}
    attributes = list(tree.find_all(nodes.Getattr))
    outer = {id(node.node): node for node in attributes}  # tower.filename -> tower.filename.<label>
    labels = set()
    for node in attributes:
        if isinstance(node.node, nodes.Name) and node.node.name == "tower":
            if node.attr != "filename":
                labels.add(f"<tower.{node.attr}>")
                continue
            parent = outer.get(id(node))
            labels.add(parent.attr if parent is not None else "")
    return names, labels


def shape_problems(definition: dict) -> list[str]:
    """What is wrong with a credential type definition (empty when nothing)."""
    problems = []
    unknown = set(definition) - {"name", "description", "kind", "inputs", "injectors"}
    if unknown:
        problems.append(f"unknown top-level keys {sorted(unknown)}")
    if not str(definition.get("name", "")).strip():
        problems.append("no name")
    if definition.get("kind") not in CUSTOM_KINDS:
        problems.append(f"kind {definition.get('kind')!r} is not one AWX lets users create ({sorted(CUSTOM_KINDS)})")
    inputs = definition.get("inputs") or {}
    fields = inputs.get("fields") or []
    if not fields:
        problems.append("inputs.fields is empty")
    ids = []
    for item in fields:
        field_id = item.get("id", "")
        ids.append(field_id)
        if not str(field_id).isidentifier():
            problems.append(f"field id {field_id!r} is not an identifier (Jinja cannot name it)")
        if set(item) - FIELD_KEYS:
            problems.append(f"field {field_id}: unknown keys {sorted(set(item) - FIELD_KEYS)}")
        if not item.get("label"):
            problems.append(f"field {field_id}: no label")
        if item.get("type") not in FIELD_TYPES:
            problems.append(f"field {field_id}: type {item.get('type')!r} is not one of {sorted(FIELD_TYPES)}")
        if "secret" in item and not isinstance(item["secret"], bool):
            problems.append(f"field {field_id}: secret must be true or false")
        holds_secret = any(word in str(field_id) for word in SECRET_WORDS) and "cert" not in str(field_id)
        if holds_secret and item.get("secret") is not True:
            problems.append(f"field {field_id}: holds a secret but is not secret: true")
    if len(ids) != len(set(ids)):
        problems.append(f"duplicate field ids in {ids}")
    for required in inputs.get("required") or []:
        if required not in ids:
            problems.append(f"required field {required!r} is not declared")
    injectors = definition.get("injectors") or {}
    if set(injectors) - INJECTOR_KINDS:
        problems.append(f"unknown injector kinds {sorted(set(injectors) - INJECTOR_KINDS)}")
    file_labels = set()
    for label in injectors.get("file") or {}:
        if label == "template":
            file_labels.add("")
        elif label.startswith("template.") and label.count(".") == 1 and label.split(".")[1].isidentifier():
            file_labels.add(label.split(".")[1])
        else:
            problems.append(f"file injector {label!r}: must be 'template' or 'template.<name>'")
    if "" in file_labels and len(file_labels) > 1:
        problems.append("file injectors mix 'template' and 'template.<name>'")
    for kind in ("file", "env", "extra_vars"):
        for key, template in (injectors.get(kind) or {}).items():
            if kind == "env" and key.upper().startswith("ANSIBLE_"):
                problems.append(f"env injector {key}: ANSIBLE_* variables are reserved by AWX")
            names, labels = _references(str(template))
            for name in sorted(names - set(ids)):
                problems.append(f"{kind} injector {key}: references undeclared field {name!r}")
            for label in sorted(labels - file_labels):
                shown = label if label.startswith("<") else "tower.filename" + (f".{label}" if label else "")
                problems.append(f"{kind} injector {key}: references {shown}, which no file injector writes")
            if kind == "file" and labels:
                problems.append(f"file injector {key}: a file cannot name another file")
    return problems


@dataclass
class Injected:
    """What a job gets from one credential: environment, extra vars, and the files written (host path -> content)."""

    env: dict[str, str] = field(default_factory=dict)
    extra_vars: dict[str, str] = field(default_factory=dict)
    files: dict[Path, str] = field(default_factory=dict)


class _Namespace:
    pass


def inject(definition: dict, inputs: dict, private_data_dir: Path, container_root: str = CONTAINER_ROOT) -> Injected:
    """Render `definition`'s injectors for a credential with `inputs`, as AWX does for a job."""
    environment = ImmutableSandboxedEnvironment()
    namespace: dict = {}
    for item in definition["inputs"]["fields"]:
        value = inputs.get(item["id"])
        if item["type"] == "boolean":
            namespace[item["id"]] = bool(value)
        elif value:  # AWX leaves empty inputs out: the template sees them undefined (rendered as "")
            namespace[item["id"]] = value
    tower = _Namespace()
    namespace["tower"] = tower
    injected = Injected()
    env_dir = private_data_dir / "env"
    env_dir.mkdir(parents=True, exist_ok=True)
    for label, template in (definition["injectors"].get("file") or {}).items():
        data = environment.from_string(template).render(**namespace)
        handle, path = tempfile.mkstemp(dir=env_dir)
        with os.fdopen(handle, "w") as written:
            written.write(data)
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IWGRP)
        container_path = f"{container_root}/{Path(path).relative_to(private_data_dir)}"
        injected.files[Path(path)] = data
        if "." not in label:
            tower.filename = container_path
        else:
            if not hasattr(tower, "filename"):
                tower.filename = _Namespace()
            setattr(tower.filename, label.split(".")[1], container_path)
    for name, template in (definition["injectors"].get("env") or {}).items():
        injected.env[name] = environment.from_string(template).render(**namespace)
    for name, template in (definition["injectors"].get("extra_vars") or {}).items():
        injected.extra_vars[name] = environment.from_string(template).render(**namespace)
    return injected
