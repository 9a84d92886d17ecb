"""Load and validate the emulator's enrollment file (YAML)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

FAULT_TYPES = ("throttle", "error", "slow", "drop")
FAULT_ENDPOINTS = ("register", "operation", "status")
ATTESTATIONS = ("x509", "symmetric_key")
PROVISIONING_STATUSES = ("enabled", "disabled")
REGISTRATION_ID_RE = re.compile(r"^[A-Za-z0-9\-._:]{0,127}[A-Za-z0-9\-]$")


class ConfigError(ValueError):
    """The enrollment file is invalid; the message names the entry and the fix."""


@dataclass
class Enrollment:
    """An enrollment group (`group_id` set) or an individual enrollment (`registration_id` set)."""

    attestation: str
    group_id: str | None = None
    registration_id: str | None = None
    device_id: str | None = None
    provisioning_status: str = "enabled"
    iot_hub: str | None = None
    ca_cert: x509.Certificate | None = None
    verified: bool = True
    thumbprints: tuple[str, ...] = ()
    keys: tuple[bytes, ...] = ()

    @property
    def label(self) -> str:
        if self.group_id is not None:
            return f"enrollment group '{self.group_id}'"
        return f"individual enrollment '{self.registration_id}'"

    @property
    def enabled(self) -> bool:
        return self.provisioning_status == "enabled"


@dataclass
class Fault:
    """A fault to inject; `count` None means for ever."""

    type: str
    count: int | None = None
    registration_id: str | None = None
    endpoint: str | None = None
    seconds: float = 1.0
    retry_after: int = 1
    status: int = 500

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "count": self.count,
            "registration_id": self.registration_id,
            "endpoint": self.endpoint,
            "seconds": self.seconds,
            "retry_after": self.retry_after,
            "status": self.status,
        }


@dataclass
class Config:
    id_scope: str
    linked_hubs: list[str]
    assignment_delay: float = 1.0
    retry_after: int = 3
    rate_limit_per_minute: int = 0
    groups: list[Enrollment] = field(default_factory=list)
    individuals: list[Enrollment] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)


def _require_mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _check_keys(entry: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _load_certificate(value: Any, base_dir: Path, where: str) -> x509.Certificate:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected a PEM file path or inline PEM text")
    if "-----BEGIN CERTIFICATE-----" in value:
        data = value.encode("ascii", errors="replace")
    else:
        path = Path(value)
        if not path.is_absolute():
            path = base_dir / path
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read certificate file {path}: {exc.strerror}") from None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise ConfigError(f"{where}: not a PEM certificate") from None


def _load_key(value: Any, where: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a base64 symmetric key")
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: not valid base64") from None
    if not key:
        raise ConfigError(f"{where}: key is empty")
    return key


def _common(entry: dict[str, Any], where: str, hubs: list[str]) -> dict[str, Any]:
    attestation = entry.get("attestation")
    if attestation not in ATTESTATIONS:
        raise ConfigError(f"{where}: attestation must be one of {', '.join(ATTESTATIONS)}, got {attestation!r}")
    status = entry.get("provisioning_status", "enabled")
    if status not in PROVISIONING_STATUSES:
        raise ConfigError(f"{where}: provisioning_status must be enabled or disabled, got {status!r}")
    hub = entry.get("iot_hub")
    if hub is not None and hub not in hubs:
        raise ConfigError(f"{where}: iot_hub {hub!r} is not in linked_hubs ({', '.join(hubs)})")
    return {"attestation": attestation, "provisioning_status": status, "iot_hub": hub}


def _symmetric_keys(entry: dict[str, Any], where: str) -> tuple[bytes, ...]:
    if "primary_key" not in entry:
        raise ConfigError(f"{where}: symmetric_key attestation needs primary_key (base64)")
    keys = [_load_key(entry["primary_key"], f"{where}.primary_key")]
    if entry.get("secondary_key") is not None:
        keys.append(_load_key(entry["secondary_key"], f"{where}.secondary_key"))
    return tuple(keys)


def _parse_group(entry: Any, index: int, base_dir: Path, hubs: list[str]) -> Enrollment:
    where = f"enrollment_groups[{index}]"
    entry = _require_mapping(entry, where)
    allowed = {"name", "attestation", "provisioning_status", "iot_hub"}
    if entry.get("attestation") == "x509":
        allowed |= {"ca_cert", "verified"}
    else:
        allowed |= {"primary_key", "secondary_key"}
    _check_keys(entry, allowed, where)
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: name (the enrollmentGroupId) is required")
    where = f"enrollment group '{name}'"
    common = _common(entry, where, hubs)
    enrollment = Enrollment(group_id=name, **common)
    if enrollment.attestation == "x509":
        if "ca_cert" not in entry:
            raise ConfigError(f"{where}: x509 attestation needs ca_cert (PEM file path or inline PEM)")
        enrollment.ca_cert = _load_certificate(entry["ca_cert"], base_dir, f"{where}.ca_cert")
        verified = entry.get("verified", True)
        if not isinstance(verified, bool):
            raise ConfigError(f"{where}.verified: expected true or false")
        enrollment.verified = verified
    else:
        enrollment.keys = _symmetric_keys(entry, where)
    return enrollment


def _normalise_thumbprint(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a hex SHA-1 or SHA-256 thumbprint")
    text = value.replace(":", "").replace(" ", "").upper()
    if not re.fullmatch(r"[0-9A-F]{40}|[0-9A-F]{64}", text):
        raise ConfigError(f"{where}: {value!r} is not a SHA-1 (40 hex) or SHA-256 (64 hex) thumbprint")
    return text


def _parse_individual(entry: Any, index: int, base_dir: Path, hubs: list[str]) -> Enrollment:
    where = f"individual_enrollments[{index}]"
    entry = _require_mapping(entry, where)
    allowed = {"registration_id", "device_id", "attestation", "provisioning_status", "iot_hub"}
    if entry.get("attestation") == "x509":
        allowed |= {"cert", "thumbprint", "secondary_thumbprint"}
    else:
        allowed |= {"primary_key", "secondary_key"}
    _check_keys(entry, allowed, where)
    registration_id = entry.get("registration_id")
    if not isinstance(registration_id, str) or not REGISTRATION_ID_RE.match(registration_id):
        raise ConfigError(
            f"{where}: registration_id {registration_id!r} must be 1-128 characters of letters, digits, '-._:'"
        )
    where = f"individual enrollment '{registration_id}'"
    common = _common(entry, where, hubs)
    device_id = entry.get("device_id", registration_id)
    enrollment = Enrollment(registration_id=registration_id, device_id=str(device_id), **common)
    if enrollment.attestation == "x509":
        thumbprints: list[str] = []
        if entry.get("cert") is not None:
            cert = _load_certificate(entry["cert"], base_dir, f"{where}.cert")
            der = cert.public_bytes(Encoding.DER)
            thumbprints += [hashlib.sha1(der).hexdigest().upper(), hashlib.sha256(der).hexdigest().upper()]  # noqa: S324
        for key in ("thumbprint", "secondary_thumbprint"):
            if entry.get(key) is not None:
                thumbprints.append(_normalise_thumbprint(entry[key], f"{where}.{key}"))
        if not thumbprints:
            raise ConfigError(f"{where}: x509 attestation needs cert (PEM path or inline) or thumbprint")
        enrollment.thumbprints = tuple(thumbprints)
    else:
        enrollment.keys = _symmetric_keys(entry, where)
    return enrollment


def parse_fault(entry: Any, where: str) -> Fault:
    """Validate one fault mapping (from the config file or the admin endpoint)."""
    entry = _require_mapping(entry, where)
    _check_keys(entry, {"type", "count", "registration_id", "endpoint", "seconds", "retry_after", "status"}, where)
    fault_type = entry.get("type")
    if fault_type not in FAULT_TYPES:
        raise ConfigError(f"{where}: type must be one of {', '.join(FAULT_TYPES)}, got {fault_type!r}")
    count = entry.get("count")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        raise ConfigError(f"{where}: count must be a positive integer (omit it for 'always')")
    endpoint = entry.get("endpoint")
    if endpoint is not None and endpoint not in FAULT_ENDPOINTS:
        raise ConfigError(f"{where}: endpoint must be one of {', '.join(FAULT_ENDPOINTS)}, got {endpoint!r}")
    registration_id = entry.get("registration_id")
    if registration_id is not None and not isinstance(registration_id, str):
        raise ConfigError(f"{where}: registration_id must be a string")
    seconds = entry.get("seconds", 1.0)
    retry_after = entry.get("retry_after", 1)
    status = entry.get("status", 500)
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 <= seconds <= 600:
        raise ConfigError(f"{where}: seconds must be a number between 0 and 600")
    if not isinstance(retry_after, int) or isinstance(retry_after, bool) or not 0 <= retry_after <= 3600:
        raise ConfigError(f"{where}: retry_after must be an integer number of seconds (0-3600)")
    if not isinstance(status, int) or isinstance(status, bool) or not 500 <= status <= 599:
        raise ConfigError(f"{where}: status must be a 5xx HTTP status")
    return Fault(
        type=fault_type,
        count=count,
        registration_id=registration_id,
        endpoint=endpoint,
        seconds=float(seconds),
        retry_after=retry_after,
        status=status,
    )


def load_config(path: str | Path) -> Config:
    """Read and validate the YAML enrollment file; raise ConfigError with a one-line message."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    data = _require_mapping(data, f"config file {path}")
    _check_keys(
        data, {"id_scope", "linked_hubs", "defaults", "enrollment_groups", "individual_enrollments", "faults"}, "config"
    )
    id_scope = data.get("id_scope")
    if not isinstance(id_scope, str) or not re.fullmatch(r"[A-Za-z0-9]{1,64}", id_scope):
        raise ConfigError("config: id_scope is required, e.g. 0ne00000001 (letters and digits)")
    hubs = data.get("linked_hubs")
    if not isinstance(hubs, list) or not hubs or not all(isinstance(hub, str) and hub for hub in hubs):
        raise ConfigError("config: linked_hubs must be a non-empty list of IoT Hub host names")
    defaults = _require_mapping(data.get("defaults") or {}, "config.defaults")
    _check_keys(defaults, {"assignment_delay", "retry_after", "rate_limit_per_minute"}, "config.defaults")
    config = Config(id_scope=id_scope, linked_hubs=list(hubs))
    delay = defaults.get("assignment_delay", 1.0)
    if not isinstance(delay, int | float) or isinstance(delay, bool) or not 0 <= delay <= 600:
        raise ConfigError("config.defaults.assignment_delay must be seconds between 0 and 600")
    config.assignment_delay = float(delay)
    retry_after = defaults.get("retry_after", 3)
    if not isinstance(retry_after, int) or isinstance(retry_after, bool) or not 0 <= retry_after <= 3600:
        raise ConfigError("config.defaults.retry_after must be an integer number of seconds (0-3600)")
    config.retry_after = retry_after
    rate = defaults.get("rate_limit_per_minute", 0)
    if not isinstance(rate, int) or isinstance(rate, bool) or rate < 0:
        raise ConfigError("config.defaults.rate_limit_per_minute must be a non-negative integer (0 = no limit)")
    config.rate_limit_per_minute = rate
    base_dir = path.resolve().parent
    for index, entry in enumerate(data.get("enrollment_groups") or []):
        config.groups.append(_parse_group(entry, index, base_dir, config.linked_hubs))
    for index, entry in enumerate(data.get("individual_enrollments") or []):
        config.individuals.append(_parse_individual(entry, index, base_dir, config.linked_hubs))
    seen: set[str] = set()
    for enrollment in config.groups:
        if enrollment.group_id in seen:
            raise ConfigError(f"enrollment group '{enrollment.group_id}' is declared twice")
        seen.add(enrollment.group_id or "")
    seen = set()
    for enrollment in config.individuals:
        if enrollment.registration_id in seen:
            raise ConfigError(f"individual enrollment '{enrollment.registration_id}' is declared twice")
        seen.add(enrollment.registration_id or "")
    for index, entry in enumerate(data.get("faults") or []):
        config.faults.append(parse_fault(entry, f"faults[{index}]"))
    return config
