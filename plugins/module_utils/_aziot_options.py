# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""aziot_config's options -> the subset of /etc/aziot/config.toml they set (None = not managed)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from ansible_collections.iotfleet.aziot.plugins.module_utils._aziot_toml import deep_merge
from ansible_collections.iotfleet.aziot.plugins.module_utils._aziot_validation import ConfigError

DEFAULT_GLOBAL_ENDPOINT = "https://global.azure-devices-provisioning.net"


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
            path = "provisioning.attestation"
            result["attestation"] = {"method": attestation.get("method"), "registration_id": None}
            result["attestation"].update(_identity_options(attestation, path))
            result["attestation"]["registration_id"] = attestation.get("registration_id")
            result["attestation"]["symmetric_key"] = _key_table(attestation, "symmetric_key", path)
    elif source == "manual":
        result["connection_string"] = options.get("connection_string")
        result["iothub_hostname"] = options.get("iothub_hostname")
        result["device_id"] = options.get("device_id")
        authentication = options.get("authentication")
        if authentication:
            path = "provisioning.authentication"
            result["authentication"] = _identity_options(authentication, path)
            result["authentication"]["device_id_pk"] = _key_table(authentication, "device_id_pk", path)
    return _drop_none(result)


def _identity_options(options: Mapping[str, Any], path: str) -> dict[str, Any]:
    result: dict[str, Any] = {"method": options.get("method")}
    if options.get("identity_cert"):
        result["identity_cert"] = to_cert_uri(options["identity_cert"], f"{path}.identity_cert")
    if options.get("identity_pk"):
        result["identity_pk"] = to_key_uri(options["identity_pk"], f"{path}.identity_pk")
    return result


def _key_table(options: Mapping[str, Any], option: str, path: str) -> dict[str, str] | None:
    """The two ways config.toml takes a key: `{ value = "<base64>" }` from `option`, `{ uri = "file:///..." }` from
    `<option>_uri` (aziot_config's argument spec makes the two mutually exclusive)."""
    if options.get(option) is not None:
        return {"value": options[option]}
    if options.get(f"{option}_uri") is not None:
        return {"uri": to_key_uri(options[f"{option}_uri"], f"{path}.{option}_uri")}
    return None
