# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Validation of a /etc/aziot/config.toml document against _aziot_schema.py, and the certificate CN check.

Every problem is one ConfigError: where (dotted TOML path), what, and how to fix it, with a difflib suggestion
for a misspelt key or value.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from ansible_collections.iotfleet.aziot.plugins.module_utils._aziot_schema import (
    ALL_PROVISIONING_KEYS,
    ANY,
    ATTESTATION_KEYS,
    ATTESTATION_REQUIRED,
    AUTHENTICATION_KEYS,
    AUTHENTICATION_REQUIRED,
    BASE64,
    BOOL,
    CERT_URI,
    COMMON_TOP,
    EDGE_TOP,
    INT,
    KEY_URI,
    MIN_CLOUD_TIMEOUT_SEC,
    PROVISIONING_SOURCES,
    PROVISIONING_VARIANTS,
    STR,
    URL,
    Enum,
    ListOf,
    Map,
    OneOf,
    Table,
    provisioning_variant,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._pki import (
    HAS_CRYPTOGRAPHY,
    PkiError,
    common_name,
    load_certificate,
)


class ConfigError(Exception):
    """One problem in the document: where (dotted TOML path), what, and how to fix it."""

    def __init__(self, option_path: str, problem: str, hint: str = "") -> None:
        self.option_path = option_path
        self.problem = problem
        self.hint = hint
        super().__init__(self.format())

    def format(self, config_path: str | None = None) -> str:
        where = f" in {config_path}" if config_path else ""
        text = f"{self.option_path or '(top level)'}: {self.problem}{where}"
        if self.hint:
            text += f"; {self.hint}"
        return text


def unwrap(value: Any) -> Any:
    """tomlkit items -> plain Python (dict/list/str/int...)."""
    if hasattr(value, "unwrap"):
        return value.unwrap()
    if isinstance(value, Mapping):
        return {str(k): unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# The schema of the tables whose keys depend on a value in them (source, method)
# --------------------------------------------------------------------------------------------
def _check_method(value: Any, path: str, methods: Mapping[str, Any]) -> str:
    if not _is_table(value):
        raise ConfigError(path, f"must be a table, got {_kind(value)}", f"write [{path}] with method = ...")
    method = value.get("method")
    if method is None:
        raise ConfigError(path, "missing required key 'method'", f"set method to one of {_choices(methods)}")
    if method not in methods:
        raise ConfigError(
            f"{path}.method", f"invalid value {method!r}", f"use one of {_choices(methods)}{_suggest(method, methods)}"
        )
    return str(method)


def _method_schema(value: Any, path: str, keys_by_method: dict, required_by_method: dict) -> Table:
    """Schema of a table whose allowed keys depend on its `method` ([provisioning.attestation] and
    [provisioning.authentication])."""
    method = _check_method(value, path, keys_by_method)
    keys = keys_by_method[method]
    foreign = frozenset(k for spec in keys_by_method.values() for k in spec) - frozenset(keys)
    required = required_by_method[method]
    if method == "x509" and isinstance(value.get("identity_cert"), str):
        required = (*required, "identity_pk")  # a preloaded cert needs its key; an issued one does not
    return Table(
        keys,
        required=required,
        variant=f"method = '{method}'",
        foreign=foreign,
        foreign_hint="remove {key!r} (it belongs to another method)",
    )


def _attestation_schema(value: Any, path: str) -> Table:
    return _method_schema(value, path, ATTESTATION_KEYS, ATTESTATION_REQUIRED)


def _authentication_schema(value: Any, path: str) -> Table:
    return _method_schema(value, path, AUTHENTICATION_KEYS, AUTHENTICATION_REQUIRED)


def _provisioning_schema(value: Any, path: str) -> Table:
    if not _is_table(value):
        raise ConfigError(path, f"must be a table, got {_kind(value)}", "write a [provisioning] table")
    source = value.get("source")
    if source is None:
        raise ConfigError(path, "missing required key 'source'", "set source to 'dps', 'manual' or 'none'")
    if source not in PROVISIONING_SOURCES:
        raise ConfigError(
            f"{path}.source",
            f"invalid value {source!r}",
            f"use one of {_choices(PROVISIONING_SOURCES)}{_suggest(source, PROVISIONING_SOURCES)}",
        )
    variant = provisioning_variant(value)
    if variant == "manual_ambiguous":
        raise ConfigError(
            path,
            "source = 'manual' has both connection_string and iothub_hostname/device_id/authentication",
            "keep either connection_string or iothub_hostname + device_id + [provisioning.authentication]",
        )
    allowed = PROVISIONING_VARIANTS[str(variant)]
    keys: dict[str, Any] = {"source": STR}
    required: tuple[str, ...] = ()
    if variant == "dps":
        keys.update(
            {
                "global_endpoint": URL,
                "id_scope": STR,
                "attestation": _attestation_schema,
                "payload": Table({"uri": CERT_URI}, required=("uri",)),
            }
        )
        required = ("global_endpoint", "id_scope", "attestation")
    elif variant == "manual_connection_string":
        keys["connection_string"] = "connection_string"
        required = ("connection_string",)
    elif variant == "manual_explicit":
        keys.update({"iothub_hostname": STR, "device_id": STR, "authentication": _authentication_schema})
        required = ("iothub_hostname", "device_id", "authentication")
    label = "source = 'manual'" if source == "manual" else f"source = {source!r}"
    return Table(
        {k: keys[k] for k in allowed},
        required=required,
        variant=label,
        foreign=ALL_PROVISIONING_KEYS - set(allowed),
        foreign_hint="remove {key!r} (it belongs to another provisioning variant)",
    )


def top_level_schema(product: str) -> Table:
    keys: dict[str, Any] = dict(COMMON_TOP)
    keys["provisioning"] = _provisioning_schema
    foreign: frozenset[str] = frozenset()
    if product == "edge":
        keys.update(EDGE_TOP)
    else:
        foreign = frozenset(EDGE_TOP)
    return Table(
        keys,
        required=("provisioning",),
        variant="product = 'identity_service'",
        foreign=foreign,
        foreign_hint="{key!r} is an IoT Edge setting: remove it or use product=edge",
    )


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping)


# What a value is, in TOML words (bool before int: True is an int in Python).
_KINDS = ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"), (Mapping, "a table"))


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    return next((name for kind, name in _KINDS if isinstance(value, kind)), type(value).__name__)


def _choices(values: Any) -> str:
    return ", ".join(repr(v) for v in values)


def _suggest(word: Any, candidates: Any) -> str:
    matches = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def did_you_mean(word: str, candidates: Any) -> str | None:
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def join_path(path: str, key: str) -> str:
    """The dotted path of `key` inside the table at `path`."""
    return f"{path}.{key}" if path else key


def _check_uri(value: Any, path: str, kind: str) -> None:
    if not isinstance(value, str):
        raise ConfigError(path, f"must be a {kind} string, got {_kind(value)}", "quote the value")
    scheme = value.split(":", 1)[0].lower() if ":" in value else ""
    if kind == CERT_URI:
        if scheme != "file" or not value.startswith("file:///"):
            raise ConfigError(path, f"{value!r} is not a file:// URI", "write certificates as file:///absolute/path")
    elif kind == KEY_URI:
        if scheme == "file":
            if not value.startswith("file:///"):
                raise ConfigError(path, f"{value!r} is not a valid file URI", "write keys as file:///absolute/path")
        elif scheme != "pkcs11":
            raise ConfigError(
                path, f"{value!r} is not a file: or pkcs11: URI", "keys must be file:///path or pkcs11:... URIs"
            )
    else:  # URL
        parsed = urlparse(value)
        if not parsed.scheme or (parsed.scheme in ("http", "https") and not parsed.netloc):
            raise ConfigError(path, f"{value!r} is not a URL", "write an absolute URL such as https://host/")


_CONNECTION_STRING_FIELDS = ("HostName", "DeviceId", "SharedAccessKey")


def _check_connection_string(value: Any, path: str) -> None:
    hint = "use HostName=<hub>.azure-devices.net;DeviceId=<id>;SharedAccessKey=<base64 key>"
    if not isinstance(value, str):
        raise ConfigError(path, f"must be a string, got {_kind(value)}", hint)
    fields: dict[str, str] = {}
    for part in value.split(";"):
        name, sep, field_value = part.partition("=")
        if not sep:
            raise ConfigError(path, "is not a connection string (expected Name=value pairs separated by ';')", hint)
        fields[name.strip()] = field_value
    missing = [name for name in _CONNECTION_STRING_FIELDS if not fields.get(name)]
    if missing:
        raise ConfigError(path, f"connection string lacks {', '.join(missing)}", hint)


def _check_scalar(value: Any, spec: Any, path: str) -> None:
    if spec == ANY:
        return
    if spec == STR:
        if not isinstance(value, str):
            raise ConfigError(path, f"must be a string, got {_kind(value)}", "quote the value")
    elif spec == INT:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"must be an integer, got {_kind(value)}", "write a number without quotes")
        if value < 0:
            raise ConfigError(path, f"must not be negative, got {value}", "use 0 or more")
    elif spec == BOOL:
        if not isinstance(value, bool):
            raise ConfigError(path, f"must be a boolean, got {_kind(value)}", "write true or false without quotes")
    elif spec == BASE64:
        if not isinstance(value, str):
            raise ConfigError(path, f"must be a base64 string, got {_kind(value)}", "quote the value")
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(path, "is not valid base64", "paste the key exactly as Azure shows it") from None
    elif spec in (URL, CERT_URI, KEY_URI):
        _check_uri(value, path, spec)
    elif spec == "connection_string":
        _check_connection_string(value, path)
    elif isinstance(spec, Enum):
        if value not in spec.values:
            raise ConfigError(
                path,
                f"invalid value {value!r}",
                f"use one of {_choices(spec.values)} (case-sensitive){_suggest(value, spec.values)}",
            )
    else:  # pragma: no cover - schema bug
        raise ConfigError(path, f"internal schema error: unknown spec {spec!r}")


def _check_value(value: Any, spec: Any, path: str) -> None:
    if callable(spec) and not isinstance(spec, type):
        spec = spec(value, path)
    if isinstance(spec, Table):
        _check_table(value, spec, path)
    elif isinstance(spec, Map):
        if not _is_table(value):
            raise ConfigError(path, f"must be a table, got {_kind(value)}", f"write [{path}] as a table")
        for key, item in value.items():
            _check_value(item, spec.value, join_path(path, str(key)))
    elif isinstance(spec, ListOf):
        if not isinstance(value, list):
            raise ConfigError(path, f"must be an array, got {_kind(value)}", "write [ ... ]")
        for index, item in enumerate(value):
            _check_value(item, spec.value, f"{path}[{index}]")
    elif isinstance(spec, OneOf):
        _check_one_of(value, spec, path)
    else:
        _check_scalar(value, spec, path)


def _check_one_of(value: Any, spec: OneOf, path: str) -> None:
    # Match on the shape first so the error talks about the shape the user meant.
    tables = [option for option in spec.options if isinstance(option, Table)]
    scalars = [option for option in spec.options if not isinstance(option, Table)]
    if not _is_table(value):
        if not scalars:
            raise ConfigError(path, f"must be a table, got {_kind(value)}", f"write {path} = {{ ... }}")
        _check_scalar(value, scalars[0], path)
        return
    if not tables:
        raise ConfigError(path, "must not be a table", f"write {path} as a {scalars[0]}")
    # Pick the table shape sharing the most keys with the value (serde untagged: first that fits).
    best = max(tables, key=lambda table: len(set(value) & set(table.keys)))
    if len(tables) > 1 and not set(value) & set(best.keys):
        allowed = sorted({k for table in tables for k in table.keys})
        unknown = next(iter(value), None)
        if unknown is None:
            raise ConfigError(path, "is an empty table", f"set one of {_choices(allowed)}")
        raise ConfigError(
            path, f"unknown key {unknown!r}", did_you_mean_hint(str(unknown), allowed) or f"use {_choices(allowed)}"
        )
    _check_table(value, best, path)


def did_you_mean_hint(word: str, candidates: Any) -> str:
    match = did_you_mean(word, candidates)
    return f"did you mean {match!r}?" if match else ""


def _check_table(value: Any, spec: Table, path: str) -> None:
    if not _is_table(value):
        where = f"[{path}]" if path else "the document"
        raise ConfigError(path, f"must be a table, got {_kind(value)}", f"write {where} as a table")
    for key in value:
        if key in spec.keys:
            continue
        if key in spec.foreign:
            raise ConfigError(
                join_path(path, key),
                f"key not allowed with {spec.variant}",
                spec.foreign_hint.format(key=key),
            )
        hint = did_you_mean_hint(str(key), spec.keys)
        raise ConfigError(
            path, f"unknown key {key!r}", hint or f"remove it; known keys here are {_choices(sorted(spec.keys))}"
        )
    for key in spec.required:
        if key not in value:
            extra = f" for {spec.variant}" if spec.variant and spec.variant.startswith(("source", "method")) else ""
            raise ConfigError(path, f"missing required key {key!r}{extra}", f"set {join_path(path, key)}")
    for key, item in value.items():
        _check_value(item, spec.keys[key], join_path(path, key))


def validate_config(document: Mapping[str, Any], product: str = "edge") -> None:
    """Raise ConfigError for the first problem in a parsed config.toml (plain dict or tomlkit document)."""
    plain = unwrap(document)
    if "provisioning" not in plain:
        raise ConfigError("provisioning", "missing required table [provisioning]", "set the provisioning option")
    _check_table(plain, top_level_schema(product), "")
    timeout = plain.get("cloud_timeout_sec")
    if timeout is not None and timeout < MIN_CLOUD_TIMEOUT_SEC:
        raise ConfigError(
            "cloud_timeout_sec",
            f"value {timeout} is below the minimum of {MIN_CLOUD_TIMEOUT_SEC}",
            f"set cloud_timeout_sec to {MIN_CLOUD_TIMEOUT_SEC} or more",
        )
    if plain["provisioning"].get("source") == "dps":
        for key in ("parent_hostname", "local_gateway_hostname"):
            if key in plain:
                raise ConfigError(
                    key,
                    "DPS provisioning cannot be combined with a parent/local gateway hostname",
                    f"remove {key} or use manual provisioning for a nested (child) device",
                )


# --------------------------------------------------------------------------------------------
# Certificate CN check
# --------------------------------------------------------------------------------------------
def uri_to_path(uri: str) -> str | None:
    """Local path of a file:// URI, None for other schemes."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return None
    return url2pathname(parsed.path)


def check_registration_id_matches_cert(document: Mapping[str, Any]) -> list[str]:
    """For DPS x509, the identity cert CN must equal registration_id. Returns warnings; raises ConfigError.

    The certificate is read with _pki (python cryptography), which is optional here: without it the check is skipped
    with a warning.
    """
    plain = unwrap(document)
    provisioning = plain.get("provisioning", {})
    attestation = provisioning.get("attestation", {})
    if provisioning.get("source") != "dps" or attestation.get("method") != "x509":
        return []
    registration_id = attestation.get("registration_id")
    identity_cert = attestation.get("identity_cert")
    if not registration_id or not isinstance(identity_cert, str):
        return []
    if not HAS_CRYPTOGRAPHY:
        return ["python cryptography is not installed: the identity_cert CN was not compared with registration_id"]
    cert_path = uri_to_path(identity_cert)
    if cert_path is None or not os.access(cert_path, os.R_OK):
        return [f"identity_cert {identity_cert} is not readable here: its CN was not compared with registration_id"]
    try:
        with open(cert_path, "rb") as handle:
            found = common_name(load_certificate(handle.read(), cert_path).subject)
    except (OSError, PkiError) as exc:
        raise ConfigError(
            "provisioning.attestation.identity_cert",
            f"{cert_path} is not a PEM certificate ({exc})",
            "point identity_cert at the device certificate (PEM)",
        ) from None
    if found != registration_id:
        raise ConfigError(
            "provisioning.attestation.registration_id",
            f"{registration_id!r} does not match the CN {found!r} of {cert_path}",
            "DPS requires registration_id to equal the certificate CN; fix one of them (or set validate_cert_cn=false)",
        )
    return []
