# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Schema, validation and comment-preserving merge for /etc/aziot/config.toml.

The allowed keys per table come from the super-config structs that `iotedge config apply` /
`aziotctl config apply` deserialize:
- identity service: aziotctl/aziotctl-common/src/config/super_config.rs (Azure/iot-identity-service)
- IoT Edge: edgelet/iotedge/src/config/super_config.rs (Azure/iotedge), which flattens the former
and the commented templates config.toml.template / config.toml.edge.template.

Those structs do not deny unknown fields: a misspelt key is silently ignored by IoT Edge, so this
module flags every key it does not know, with a difflib suggestion.
"""

from __future__ import annotations

import base64
import binascii
import copy
import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

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

try:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - exercised only on hosts without cryptography
    HAS_CRYPTOGRAPHY = False

DEFAULT_PATH = "/etc/aziot/config.toml"
DEFAULT_GLOBAL_ENDPOINT = "https://global.azure-devices-provisioning.net"
MASK = "********"
MIN_CLOUD_TIMEOUT_SEC = 70
AUTO_REPROVISIONING_MODES = ("Dynamic", "AlwaysOnStartup", "OnErrorOnly")
PRODUCTS = ("edge", "identity_service")


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


class TomlSyntaxError(Exception):
    """The existing file is not valid TOML; carries line and column."""

    def __init__(self, line: int, col: int, message: str) -> None:
        self.line = line
        self.col = col
        super().__init__(message)


# --------------------------------------------------------------------------------------------
# Value kinds
# --------------------------------------------------------------------------------------------
STR = "string"
INT = "integer"
BOOL = "boolean"
URL = "URL"
CERT_URI = "certificate URI"
KEY_URI = "key URI"
BASE64 = "base64 string"
ANY = "any value"


@dataclass(frozen=True)
class Enum:
    values: tuple[str, ...]


@dataclass(frozen=True)
class Map:
    """A table whose keys are free (names chosen by the user), values of one kind."""

    value: Any = ANY


@dataclass(frozen=True)
class ListOf:
    value: Any


@dataclass(frozen=True)
class OneOf:
    """A value that may take one of several shapes (serde untagged enums)."""

    options: tuple[Any, ...]


@dataclass(frozen=True)
class Table:
    keys: Mapping[str, Any]
    required: tuple[str, ...] = ()
    # Describes the variant ("source = 'dps'"), used in messages about keys of another variant.
    variant: str = ""
    # Keys that are valid in a sibling variant but not in this one, and how to fix them ({key} is replaced).
    foreign: frozenset[str] = field(default_factory=frozenset)
    foreign_hint: str = "remove {key!r} (it belongs to another variant)"


# Cert issuance options (CertIssuanceOptions + EstAuth flattened), used for identity_cert / edge_ca.
_EST_AUTH_KEYS: dict[str, Any] = {
    "username": STR,
    "password": STR,
    "identity_cert": CERT_URI,
    "identity_pk": KEY_URI,
    "bootstrap_identity_cert": CERT_URI,
    "bootstrap_identity_pk": KEY_URI,
}
_AUTO_RENEW = Table({"rotate_key": BOOL, "threshold": STR, "retry": STR})
_CERT_ISSUANCE_OPTIONS = Table(
    {
        "method": Enum(("est", "local_ca", "self_signed")),
        "common_name": STR,
        "expiry_days": INT,
        "subject": ANY,
        "url": URL,
        "auto_renew": _AUTO_RENEW,
        **_EST_AUTH_KEYS,
    },
    required=("method",),
)

_CERT_ISSUANCE = Table(
    {
        "est": Table(
            {
                "trusted_certs": ListOf(CERT_URI),
                "auth": Table(dict(_EST_AUTH_KEYS)),
                "urls": Map(URL),
                "identity_auto_renew": _AUTO_RENEW,
            },
            required=("auth", "urls"),
        ),
        "local_ca": Table({"cert": OneOf((CERT_URI, _CERT_ISSUANCE_OPTIONS)), "pk": KEY_URI}, required=("cert",)),
    }
)

_COMMON_TOP: dict[str, Any] = {
    "hostname": STR,
    # `parent_hostname` (Edge) and `local_gateway_hostname` (identity service) are serde aliases.
    "parent_hostname": STR,
    "local_gateway_hostname": STR,
    "cloud_timeout_sec": INT,
    "cloud_retries": INT,
    "prefer_module_identity_cache": BOOL,
    "provisioning": "provisioning",  # resolved by provisioning_schema()
    "localid": Table({"domain": STR}, required=("domain",)),
    "aziot_keys": Map(STR),
    "preloaded_keys": Map(KEY_URI),
    "cert_issuance": _CERT_ISSUANCE,
    "preloaded_certs": Map(ANY),
    "aziot_max_requests": Table({"keyd": INT, "certd": INT, "identityd": INT, "tpmd": INT}),
    "tpm": Table({"tcti": STR, "auth_key_index": INT, "hierarchy_authorization": ANY}),
}

_EDGE_TOP: dict[str, Any] = {
    "trust_bundle_cert": CERT_URI,
    "manifest_trust_bundle_cert": CERT_URI,
    "additional_info": CERT_URI,
    "auto_reprovisioning_mode": Enum(AUTO_REPROVISIONING_MODES),
    "imported_master_encryption_key": STR,
    "allow_elevated_docker_permissions": BOOL,
    "iotedge_max_requests": Table({"management": INT, "workload": INT}),
    "agent": Table(
        {
            "name": STR,
            "type": STR,
            "imagePullPolicy": Enum(("on-create", "never")),
            "config": Table(
                {
                    "image": STR,
                    "imageHash": STR,
                    "createOptions": ANY,
                    "digest": STR,
                    "auth": Table({"serveraddress": STR, "username": STR, "password": STR}),
                },
                required=("image",),
            ),
            "env": Map(ANY),
        },
        required=("name", "type", "config"),
    ),
    "connect": Table({"workload_uri": URL, "management_uri": URL}),
    "listen": Table({"workload_uri": URL, "management_uri": URL, "min_tls_version": STR}),
    "watchdog": Table({"max_retries": ANY}),
    "edge_ca": OneOf(
        (
            Table({"cert": CERT_URI, "pk": KEY_URI}, required=("cert", "pk")),
            Table({"auto_generated_edge_ca_expiry_days": INT, "auto_renew": _AUTO_RENEW}),
            _CERT_ISSUANCE_OPTIONS,
        )
    ),
    "moby_runtime": Table(
        {
            "uri": URL,
            "network": OneOf((STR, Table({"name": STR, "ipv6": BOOL, "ipam": ANY}, required=("name",)))),
            "content_trust": Table({"ca_certs": Map(CERT_URI)}),
        },
        required=("uri", "network"),
    ),
    "image_garbage_collection": Table(
        {"enabled": BOOL, "cleanup_recurrence": STR, "image_age_cleanup_threshold": STR, "cleanup_time": STR}
    ),
}

_SYMMETRIC_KEY = OneOf((Table({"value": BASE64}, required=("value",)), Table({"uri": KEY_URI}, required=("uri",))))
_X509_IDENTITY_KEYS: dict[str, Any] = {
    "identity_cert": OneOf((CERT_URI, _CERT_ISSUANCE_OPTIONS)),
    "identity_pk": KEY_URI,
}

ATTESTATION_KEYS: dict[str, dict[str, Any]] = {
    "x509": {"method": STR, "registration_id": STR, **_X509_IDENTITY_KEYS},
    "symmetric_key": {"method": STR, "registration_id": STR, "symmetric_key": _SYMMETRIC_KEY},
    "tpm": {"method": STR, "registration_id": STR},
}
ATTESTATION_REQUIRED = {
    "x509": ("identity_cert",),
    "symmetric_key": ("registration_id", "symmetric_key"),
    "tpm": ("registration_id",),
}
AUTHENTICATION_KEYS: dict[str, dict[str, Any]] = {
    "sas": {"method": STR, "device_id_pk": _SYMMETRIC_KEY},
    "x509": {"method": STR, **_X509_IDENTITY_KEYS},
}
AUTHENTICATION_REQUIRED = {"sas": ("device_id_pk",), "x509": ("identity_cert",)}

# Keys of [provisioning] per variant. "manual" has two shapes (serde untagged enum).
PROVISIONING_VARIANTS: dict[str, tuple[str, ...]] = {
    "dps": ("source", "global_endpoint", "id_scope", "attestation", "payload"),
    "manual_connection_string": ("source", "connection_string"),
    "manual_explicit": ("source", "iothub_hostname", "device_id", "authentication"),
    "none": ("source",),
}
ALL_PROVISIONING_KEYS = frozenset(k for keys in PROVISIONING_VARIANTS.values() for k in keys)
_MANUAL_EXPLICIT_ONLY = ("iothub_hostname", "device_id", "authentication")


def provisioning_variant(provisioning: Mapping[str, Any]) -> str | None:
    """Name of the variant a [provisioning] table is (trying to be), or None if the source is unknown."""
    source = provisioning.get("source")
    if source == "manual":
        if "connection_string" in provisioning and not any(k in provisioning for k in _MANUAL_EXPLICIT_ONLY):
            return "manual_connection_string"
        if "connection_string" in provisioning:
            return "manual_ambiguous"
        return "manual_explicit"
    if source in ("dps", "none"):
        return source
    return None


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
    if source not in ("dps", "manual", "none"):
        raise ConfigError(
            f"{path}.source",
            f"invalid value {source!r}",
            f"use one of 'dps', 'manual', 'none'{_suggest(source, ('dps', 'manual', 'none'))}",
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
    keys: dict[str, Any] = dict(_COMMON_TOP)
    keys["provisioning"] = _provisioning_schema
    foreign: frozenset[str] = frozenset()
    if product == "edge":
        keys.update(_EDGE_TOP)
    else:
        foreign = frozenset(_EDGE_TOP)
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


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _choices(values: Any) -> str:
    return ", ".join(repr(v) for v in values)


def _suggest(word: Any, candidates: Any) -> str:
    matches = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def did_you_mean(word: str, candidates: Any) -> str | None:
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _join(path: str, key: str) -> str:
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
            _check_value(item, spec.value, _join(path, str(key)))
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
                _join(path, key),
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
            raise ConfigError(path, f"missing required key {key!r}{extra}", f"set {_join(path, key)}")
    for key, item in value.items():
        _check_value(item, spec.keys[key], _join(path, key))


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
    from urllib.request import url2pathname

    return url2pathname(parsed.path)


def certificate_common_name(pem_path: str) -> str | None:
    """CN of the first certificate in a PEM file (None when the subject has no CN)."""
    with open(pem_path, "rb") as handle:
        data = handle.read()
    certificate = x509.load_pem_x509_certificate(data)
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        return None
    value = names[0].value
    return value.decode() if isinstance(value, bytes) else str(value)


def check_registration_id_matches_cert(document: Mapping[str, Any]) -> list[str]:
    """For DPS x509, the identity cert CN must equal registration_id. Returns warnings; raises ConfigError."""
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
        common_name = certificate_common_name(cert_path)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            "provisioning.attestation.identity_cert",
            f"{cert_path} is not a PEM certificate ({exc})",
            "point identity_cert at the device certificate (PEM)",
        ) from None
    if common_name != registration_id:
        raise ConfigError(
            "provisioning.attestation.registration_id",
            f"{registration_id!r} does not match the CN {common_name!r} of {cert_path}",
            "DPS requires registration_id to equal the certificate CN; fix one of them (or set validate_cert_cn=false)",
        )
    return []


# --------------------------------------------------------------------------------------------
# Parsing, masking, merging
# --------------------------------------------------------------------------------------------
def parse_toml(text: str) -> Any:
    """Parse text with tomlkit; raise TomlSyntaxError carrying line/column."""
    try:
        return tomlkit.parse(text)
    except TomlParseError as exc:
        raise TomlSyntaxError(exc.line, exc.col, str(exc)) from None


def unwrap(value: Any) -> Any:
    """tomlkit items -> plain Python (dict/list/str/int...)."""
    if hasattr(value, "unwrap"):
        return value.unwrap()
    if isinstance(value, Mapping):
        return {str(k): unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


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
            removed.append(_join(path, key))


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
        drop: tuple[str, ...] = _MANUAL_EXPLICIT_ONLY
    elif any(k in desired_provisioning for k in _MANUAL_EXPLICIT_ONLY):
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


# --------------------------------------------------------------------------------------------
# Module options -> desired TOML
# --------------------------------------------------------------------------------------------
def to_cert_uri(value: str, option: str) -> str:
    """Plain absolute path -> file:// URI; file: URIs pass through."""
    if value.startswith("file:"):
        return value
    if value.startswith("pkcs11:") or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", value):
        raise ConfigError(option, f"{value!r} is not a file path or file:// URI", "certificates must be files")
    if not os.path.isabs(value):
        raise ConfigError(option, f"{value!r} is a relative path", "give an absolute path or a file:/// URI")
    return "file://" + _quote_path(value)


def to_key_uri(value: str, option: str) -> str:
    """Plain absolute path -> file:// URI; file: and pkcs11: URIs pass through."""
    if value.startswith(("file:", "pkcs11:")):
        return value
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", value):
        raise ConfigError(option, f"{value!r} is not a file path, file:// or pkcs11: URI", "use file:// or pkcs11:")
    if not os.path.isabs(value):
        raise ConfigError(option, f"{value!r} is a relative path", "give an absolute path or a file:/// URI")
    return "file://" + _quote_path(value)


def _quote_path(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="/-._~")


def _drop_none(value: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, Mapping):
            item = _drop_none(item)
            if not item:
                continue
        if item is not None:
            result[key] = item
    return result


def desired_from_options(params: Mapping[str, Any], existing: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Build the desired TOML subset from the module's options (None = not managed)."""
    existing = existing or {}
    desired: dict[str, Any] = {}
    settings = params.get("settings")
    if settings:
        desired = deep_merge(desired, settings)
    top: dict[str, Any] = {}
    for key in ("hostname", "cloud_timeout_sec", "auto_reprovisioning_mode"):
        if params.get(key) is not None:
            top[key] = params[key]
    if params.get("trust_bundle_cert"):
        top["trust_bundle_cert"] = to_cert_uri(params["trust_bundle_cert"], "trust_bundle_cert")
    agent = params.get("agent")
    if agent:
        top["agent"] = _drop_none(
            {
                "name": agent.get("name"),
                "type": agent.get("type"),
                "imagePullPolicy": agent.get("image_pull_policy"),
                "config": {"image": (agent.get("config") or {}).get("image")},
            }
        )
    edge_ca = params.get("edge_ca")
    if edge_ca:
        top["edge_ca"] = _drop_none(
            {
                "cert": to_cert_uri(edge_ca["cert"], "edge_ca.cert") if edge_ca.get("cert") else None,
                "pk": to_key_uri(edge_ca["pk"], "edge_ca.pk") if edge_ca.get("pk") else None,
                "auto_generated_edge_ca_expiry_days": edge_ca.get("auto_generated_edge_ca_expiry_days"),
            }
        )
    moby = params.get("moby_runtime")
    if moby:
        top["moby_runtime"] = _drop_none({"uri": moby.get("uri"), "network": moby.get("network")})
    provisioning = params.get("provisioning")
    if provisioning:
        top["provisioning"] = provisioning_from_options(provisioning, existing.get("provisioning") or {})
    return deep_merge(desired, top)


def provisioning_from_options(options: Mapping[str, Any], existing: Mapping[str, Any]) -> dict[str, Any]:
    source = options["source"]
    result: dict[str, Any] = {"source": source}
    if source == "dps":
        endpoint = options.get("global_endpoint")
        if endpoint is None and existing.get("source") != "dps":
            endpoint = DEFAULT_GLOBAL_ENDPOINT
        result["global_endpoint"] = endpoint
        result["id_scope"] = options.get("id_scope")
        if options.get("payload_uri"):
            result["payload"] = {"uri": to_cert_uri(options["payload_uri"], "provisioning.payload_uri")}
        attestation = options.get("attestation")
        if attestation:
            result["attestation"] = {"method": attestation.get("method"), "registration_id": None}
            result["attestation"].update(_identity_options(attestation, "provisioning.attestation"))
            result["attestation"]["registration_id"] = attestation.get("registration_id")
            if attestation.get("symmetric_key") is not None and attestation.get("symmetric_key_uri") is not None:
                raise ConfigError(
                    "provisioning.attestation",
                    "symmetric_key and symmetric_key_uri are mutually exclusive",
                    "set only one",
                )
            if attestation.get("symmetric_key") is not None:
                result["attestation"]["symmetric_key"] = {"value": attestation["symmetric_key"]}
            elif attestation.get("symmetric_key_uri") is not None:
                uri = to_key_uri(attestation["symmetric_key_uri"], "provisioning.attestation.symmetric_key_uri")
                result["attestation"]["symmetric_key"] = {"uri": uri}
    elif source == "manual":
        result["connection_string"] = options.get("connection_string")
        result["iothub_hostname"] = options.get("iothub_hostname")
        result["device_id"] = options.get("device_id")
        authentication = options.get("authentication")
        if authentication:
            result["authentication"] = _identity_options(authentication, "provisioning.authentication")
            if authentication.get("device_id_pk") is not None and authentication.get("device_id_pk_uri") is not None:
                raise ConfigError(
                    "provisioning.authentication",
                    "device_id_pk and device_id_pk_uri are mutually exclusive",
                    "set only one",
                )
            if authentication.get("device_id_pk") is not None:
                result["authentication"]["device_id_pk"] = {"value": authentication["device_id_pk"]}
            elif authentication.get("device_id_pk_uri") is not None:
                uri = to_key_uri(authentication["device_id_pk_uri"], "provisioning.authentication.device_id_pk_uri")
                result["authentication"]["device_id_pk"] = {"uri": uri}
    return _drop_none(result)


def _identity_options(options: Mapping[str, Any], path: str) -> dict[str, Any]:
    result: dict[str, Any] = {"method": options.get("method")}
    if options.get("identity_cert"):
        result["identity_cert"] = to_cert_uri(options["identity_cert"], f"{path}.identity_cert")
    if options.get("identity_pk"):
        result["identity_pk"] = to_key_uri(options["identity_pk"], f"{path}.identity_pk")
    return result
