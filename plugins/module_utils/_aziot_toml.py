# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""/etc/aziot/config.toml as text: parse, merge the desired settings in place (comments and order survive), prune
the keys of a previous provisioning variant, validate the result, and mask secrets for output and diffs."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

try:
    import tomlkit
    from tomlkit.exceptions import ParseError as TomlParseError
    from tomlkit.items import InlineTable
    from tomlkit.items import Table as TomlTable

    HAS_TOMLKIT = True
    TOMLKIT_IMPORT_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - exercised only on hosts without tomlkit
    HAS_TOMLKIT = False
    TOMLKIT_IMPORT_ERROR = str(exc)

from ansible_collections.iotfleet.aziot.plugins.module_utils._aziot_schema import (
    ALL_PROVISIONING_KEYS,
    ATTESTATION_KEYS,
    AUTHENTICATION_KEYS,
    MANUAL_EXPLICIT_ONLY,
    PROVISIONING_VARIANTS,
    provisioning_variant,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._aziot_validation import join_path, unwrap, validate_config

MASK = "********"


class TomlSyntaxError(Exception):
    """The existing file is not valid TOML; carries line and column."""

    def __init__(self, line: int, col: int, message: str) -> None:
        self.line = line
        self.col = col
        super().__init__(message)


def parse_toml(text: str) -> Any:
    """Parse text with tomlkit; raise TomlSyntaxError carrying line/column."""
    try:
        return tomlkit.parse(text)
    except TomlParseError as exc:
        raise TomlSyntaxError(exc.line, exc.col, str(exc)) from None


_SAK_RE = re.compile(r"(SharedAccessKey=)([^;\"'\s]*)", re.IGNORECASE)
# Table keys whose `value` is an inline secret, and plain secret keys.
_SECRET_VALUE_TABLES = ("symmetric_key", "device_id_pk")
_SECRET_KEYS = ("password",)


def mask_connection_string(value: str) -> str:
    return _SAK_RE.sub(lambda m: m.group(1) + MASK, value)


def mask_secrets(document: Any) -> Any:
    """Mask secrets in place (works for tomlkit documents and plain dicts); returns the document."""
    if not isinstance(document, Mapping):
        return document
    for key in list(document.keys()):
        item = document[key]
        if key in _SECRET_VALUE_TABLES and isinstance(item, Mapping) and "value" in item:
            item["value"] = MASK
        elif key in _SECRET_KEYS and isinstance(item, str):
            document[key] = MASK
        elif key == "connection_string" and isinstance(item, str):
            document[key] = mask_connection_string(str(item))
        elif isinstance(item, Mapping):
            mask_secrets(item)
    return document


def masked_text(text: str) -> str:
    """The TOML text with secrets masked, formatting kept. Unparseable text is masked by regex only."""
    if not text:
        return text
    try:
        document = tomlkit.parse(text)
    except TomlParseError:
        return mask_connection_string(text)
    return tomlkit.dumps(mask_secrets(document))


def _new_table(inline: bool) -> Any:
    return tomlkit.inline_table() if inline else tomlkit.table()


def _to_item(value: Any, inline: bool) -> Any:
    if isinstance(value, Mapping):
        table = _new_table(inline)
        for key, item in value.items():
            table[key] = _to_item(item, inline=True if inline else key in INLINE_TABLE_KEYS)
        return table
    return value


# Tables written inline, as the templates do: `symmetric_key = { value = "..." }`.
INLINE_TABLE_KEYS = frozenset({"symmetric_key", "device_id_pk", "payload", "createOptions"})


def deep_merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Plain-dict deep merge; overlay wins."""
    result = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = deep_merge(dict(result[key]), value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def apply_desired(container: Any, desired: Mapping[str, Any]) -> None:
    """Set desired keys into a tomlkit container, touching nothing else (comments and order survive)."""
    for key, value in desired.items():
        existing = container.get(key) if key in container else None
        if isinstance(value, Mapping):
            if isinstance(existing, (TomlTable, InlineTable)) or (
                existing is not None and isinstance(existing, Mapping)
            ):
                apply_desired(existing, value)
                continue
            item = _to_item(value, inline=key in INLINE_TABLE_KEYS or isinstance(container, InlineTable))
            _add_key(container, key, item, existing is not None)
            continue
        if existing is not None and unwrap(existing) == value and type(unwrap(existing)) is type(value):
            continue
        _add_key(container, key, value, existing is not None)


def _add_key(container: Any, key: str, item: Any, exists: bool) -> None:
    """Set a key; a new key goes after the table's last key rather than after trailing comments.

    Comments that end a table's body usually introduce the *next* section of the file (the templates are
    written that way), so appending after them would put our key under someone else's heading.
    """
    if exists or isinstance(container, InlineTable):
        container[key] = item
        return
    body_owner = container.value if isinstance(container, TomlTable) else container
    body = getattr(body_owner, "body", None)
    insert_at = getattr(body_owner, "_insert_at", None)
    is_table = isinstance(item, TomlTable)
    if body is None or insert_at is None or (is_table and body_owner is container):
        container[key] = item
        return
    keyed = [i for i, (k, v) in enumerate(body) if k is not None and (is_table or not isinstance(v, TomlTable))]
    if keyed:
        index = keyed[-1] + 1
    elif body_owner is container:  # top level without plain keys: before the comment block above the first table
        tables = [i for i, (k, _v) in enumerate(body) if k is not None]
        index = tables[0] if tables else len(body)
        while index > 0 and body[index - 1][0] is None and type(body[index - 1][1]).__name__ == "Comment":
            index -= 1
    else:
        index = 0
    if index >= len(body):
        container[key] = item
        return
    try:
        insert_at(index, key, item)
    except Exception:  # private tomlkit API: fall back to a plain append
        container[key] = item


def _prune(container: Any, allowed: Any, path: str, removed: list[str], candidates: frozenset[str]) -> None:
    for key in list(container.keys()):
        if key in candidates and key not in allowed:
            del container[key]
            removed.append(join_path(path, key))


def prune_other_variants(document: Any) -> list[str]:
    """Drop [provisioning] keys that belong to another variant than the resulting one.

    Only keys known to some variant are dropped; unknown keys (typos) stay and are reported by validation.
    Returns the dotted paths removed.
    """
    removed: list[str] = []
    provisioning = document.get("provisioning")
    if not isinstance(provisioning, Mapping):
        return removed
    variant = provisioning_variant(provisioning)
    if variant in PROVISIONING_VARIANTS:
        _prune(provisioning, PROVISIONING_VARIANTS[variant], "provisioning", removed, ALL_PROVISIONING_KEYS)
    for table_key, methods in (("attestation", ATTESTATION_KEYS), ("authentication", AUTHENTICATION_KEYS)):
        table = provisioning.get(table_key)
        if isinstance(table, Mapping) and table.get("method") in methods:
            everything = frozenset(k for spec in methods.values() for k in spec)
            _prune(table, methods[table["method"]], f"provisioning.{table_key}", removed, everything)
    return removed


def _manual_shape_switch(document: Any, desired_provisioning: Mapping[str, Any]) -> None:
    """Moving between the two manual shapes: the desired keys decide which shape wins."""
    provisioning = document.get("provisioning")
    if not isinstance(provisioning, Mapping) or provisioning.get("source") != "manual":
        return
    if "connection_string" in desired_provisioning:
        drop: tuple[str, ...] = MANUAL_EXPLICIT_ONLY
    elif any(k in desired_provisioning for k in MANUAL_EXPLICIT_ONLY):
        drop = ("connection_string",)
    else:
        return
    for key in drop:
        if key in provisioning:
            del provisioning[key]


@dataclass
class MergeResult:
    before: str
    after: str
    document: Any
    removed: list[str]

    @property
    def changed(self) -> bool:
        return self.before != self.after


def merge_config(
    before: str,
    desired: Mapping[str, Any],
    product: str = "edge",
    validate: Callable[[Any], None] | None = None,
) -> MergeResult:
    """Apply desired settings to the TOML text `before`; validate the result; return the new text.

    Raises TomlSyntaxError for an unparseable `before` and ConfigError for an invalid result.
    """
    document = parse_toml(before)
    removed: list[str] = []
    desired_provisioning = desired.get("provisioning")
    apply_desired(document, desired)
    if isinstance(desired_provisioning, Mapping):
        _manual_shape_switch(document, desired_provisioning)
        removed.extend(prune_other_variants(document))
    validate_config(document, product)
    if validate is not None:
        validate(document)
    after = tomlkit.dumps(document)
    return MergeResult(before=before, after=after, document=document, removed=sorted(set(removed)))
