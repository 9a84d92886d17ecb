"""Every input whose name says it is a secret is `no_log: true`: role argument specs and module argument specs.

A name looks secret when its last word is one of SECRET_WORDS (`group_key`, `ca_key_passphrase`, `policy_key`), or
it is a connection string or a webhook URL (whose query is a key). `key_path`, `key_type`, `key_owner`,
`symmetric_key_uri` ... end with another word and are not secrets. What looks secret but is not (a path, a policy
name) is listed in NOT_SECRET with the reason, and every entry there must still exist.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import yaml

from ansible_collections.iotfleet.aziot.plugins.module_utils import _device_cert
from tests.support.paths import MODULES, REPO_ROOT

SECRET_WORDS = {"passphrase", "password", "passwd", "secret", "token", "key", "pk", "sas", "signature", "credential"}
SECRET_SUFFIXES = ("connection_string", "webhook_url")

NOT_SECRET = {
    ("roles/device_identity", "device_identity_regenerate_key"): "when to replace the key: never/on_mismatch/always",
    ("roles/dps_registration", "dps_registration_client_key"): "the path of the device key file",
    ("module dps_register", "client_key"): "the path of the device key file",
    ("module x509_device_cert", "regenerate_key"): "when to replace the key: never/on_mismatch/always",
    ("action x509_device_cert", "regenerate_key"): "when to replace the key: never/on_mismatch/always",
    ("module aziot_config", "provisioning.attestation.identity_pk"): "a file: or pkcs11: URI of the key",
    ("module aziot_config", "provisioning.authentication.identity_pk"): "a file: or pkcs11: URI of the key",
    ("module aziot_config", "edge_ca.pk"): "a file: or pkcs11: URI of the key",
    ("module dps_enrollment", "endorsement_key"): "a TPM's public endorsement key (TPM2B_PUBLIC)",
    ("module dps_enrollment", "storage_root_key"): "a TPM's public storage root key (TPM2B_PUBLIC)",
}


def looks_secret(name: str) -> bool:
    return name.split("_")[-1] in SECRET_WORDS or name.endswith(SECRET_SUFFIXES)


def secret_options(options: Mapping | None, prefix: str = "") -> Iterator[tuple[str, dict]]:
    """(dotted name, spec) of every option, suboptions included, whose name looks secret."""
    for name, spec in (options or {}).items():
        spec = spec or {}
        if looks_secret(name):
            yield f"{prefix}{name}", spec
        yield from secret_options(spec.get("options"), f"{prefix}{name}.")


def exposed(where: str, options: Mapping | None) -> list[str]:
    """The secret-looking options of `where` without no_log: true and not in NOT_SECRET."""
    return [
        f"{where}: {name}"
        for name, spec in secret_options(options)
        if spec.get("no_log") is not True and (where, name) not in NOT_SECRET
    ]


def role_options(path: Path) -> dict:
    """The options of every entry point of a role's meta/argument_specs.yml."""
    entry_points = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("argument_specs") or {}
    options: dict = {}
    for entry_point in entry_points.values():
        options.update(entry_point.get("options") or {})
    return options


def role_specs(roles: Path) -> dict[str, Path]:
    """{'roles/<role>': its meta/argument_specs.yml} under `roles`."""
    return {f"roles/{path.parent.parent.name}": path for path in sorted(roles.glob("*/meta/argument_specs.yml"))}


def module_options(where: str) -> Mapping:
    """argument_spec() of 'module <name>', or of the x509_device_cert action plugin (every user option)."""
    if where == "action x509_device_cert":
        return _device_cert.argument_spec()
    name = where.removeprefix("module ")
    return importlib.import_module(f"ansible_collections.iotfleet.aziot.plugins.modules.{name}").argument_spec()


ROLES = role_specs(REPO_ROOT / "roles")
MODULE_SPECS = [f"module {path.stem}" for path in sorted(MODULES.glob("*.py"))] + ["action x509_device_cert"]


def options_of(where: str) -> Mapping:
    return role_options(ROLES[where]) if where in ROLES else module_options(where)


@pytest.mark.parametrize("where", [*ROLES, *MODULE_SPECS])
def test_secret_inputs_are_no_log(where: str) -> None:
    assert exposed(where, options_of(where)) == [], "mark these no_log: true (or list them in NOT_SECRET, with why)"


def test_every_exception_still_exists() -> None:
    names = {(where, name) for where in [*ROLES, *MODULE_SPECS] for name, _spec in secret_options(options_of(where))}
    assert set(NOT_SECRET) <= names, sorted(set(NOT_SECRET) - names)


def test_the_scan_sees_every_role() -> None:
    roles = {f"roles/{path.name}" for path in (REPO_ROOT / "roles").iterdir() if (path / "meta").is_dir()}
    assert roles <= set(ROLES)


def test_a_planted_secret_without_no_log_is_named(tmp_path: Path) -> None:
    spec = tmp_path / "roles" / "planted" / "meta" / "argument_specs.yml"
    spec.parent.mkdir(parents=True)
    spec.write_text(
        yaml.safe_dump(
            {
                "argument_specs": {
                    "main": {
                        "options": {
                            "planted_api_token": {"type": "str"},
                            "planted_admin_password": {"type": "str", "no_log": False},
                            "planted_group_key": {"type": "str", "no_log": True},
                            "planted_key_path": {"type": "path"},
                            "planted_hub": {
                                "type": "dict",
                                "options": {"connection_string": {"type": "str"}, "key_owner": {"type": "str"}},
                            },
                        }
                    }
                }
            },
            sort_keys=False,
        ),
        encoding="utf-8",
    )
    options = role_options(role_specs(tmp_path / "roles")["roles/planted"])
    assert exposed("roles/planted", options) == [
        "roles/planted: planted_api_token",
        "roles/planted: planted_admin_password",
        "roles/planted: planted_hub.connection_string",
    ]
