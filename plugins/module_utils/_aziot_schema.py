# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What /etc/aziot/config.toml may hold: the schema data, per product and provisioning variant.

The allowed keys per table come from the super-config structs that `iotedge config apply` /
`aziotctl config apply` deserialize:
- identity service: aziotctl/aziotctl-common/src/config/super_config.rs (Azure/iot-identity-service)
- IoT Edge: edgelet/iotedge/src/config/super_config.rs (Azure/iotedge), which flattens the former
and the commented templates config.toml.template / config.toml.edge.template.

Those structs do not deny unknown fields: a misspelt key is silently ignored by IoT Edge, so
_aziot_validation.py flags every key this schema does not know. Data only: no parsing, no checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MIN_CLOUD_TIMEOUT_SEC = 70
AUTO_REPROVISIONING_MODES = ("Dynamic", "AlwaysOnStartup", "OnErrorOnly")
PRODUCTS = ("edge", "identity_service")
PROVISIONING_SOURCES = ("dps", "manual", "none")

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

COMMON_TOP: dict[str, Any] = {
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

EDGE_TOP: dict[str, Any] = {
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
MANUAL_EXPLICIT_ONLY = ("iothub_hostname", "device_id", "authentication")


def provisioning_variant(provisioning: Mapping[str, Any]) -> str | None:
    """Name of the variant a [provisioning] table is (trying to be), or None if the source is unknown."""
    source = provisioning.get("source")
    if source == "manual":
        if "connection_string" in provisioning and not any(k in provisioning for k in MANUAL_EXPLICIT_ONLY):
            return "manual_connection_string"
        if "connection_string" in provisioning:
            return "manual_ambiguous"
        return "manual_explicit"
    if source in ("dps", "none"):
        return source
    return None
