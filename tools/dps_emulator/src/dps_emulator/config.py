"""Load and validate the emulator's configuration file (YAML).

The file holds what Azure keeps outside the DPS service API - the id scope, the linked IoT hubs, the uploaded CA
certificates and whether each is verified, the shared access policies, the linked hubs' own policies and limits
(`iot_hub`) - plus enrollments to seed and faults.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .enrollments import (
    GROUP,
    INDIVIDUAL,
    CaCertificate,
    Context,
    ValidationError,
    compile_record,
    fingerprint,
    normalize,
)

FAULT_TYPES = ("throttle", "error", "slow", "drop")
DEVICE_ENDPOINTS = ("register", "operation", "status")
SERVICE_ENDPOINTS = ("enrollments", "enrollmentGroups", "registrations")
FAULT_ENDPOINTS = (*DEVICE_ENDPOINTS, *SERVICE_ENDPOINTS, "service")
ATTESTATIONS = ("x509", "symmetric_key")
PROVISIONING_STATUSES = ("enabled", "disabled")
RIGHTS = ("ServiceConfig", "EnrollmentRead", "EnrollmentWrite", "RegistrationStatusRead", "RegistrationStatusWrite")
HUB_RIGHTS = ("RegistryRead", "RegistryWrite", "ServiceConnect", "DeviceConnect")
# IoT Hub's limits: 100 configurations per hub (Edge deployments have their own 100; the emulator counts them
# together per hub unless told otherwise) and 20 configuration operations per minute (S1, one unit).
HUB_CONFIGURATION_LIMIT = 100
HUB_CONFIGURATION_OPERATIONS_PER_MINUTE = 20
# Seconds a TPM challenge key may sign a register request: long enough for a slow device (a Pi running tpm2-tools
# over SSH), short enough that a stale challenge is refused. Real DPS's lifetime is not documented.
DEFAULT_TPM_CHALLENGE_LIFETIME = 300
# Device API registration ids: letters, digits and '-._:', ending with a letter, digit or '-'.
REGISTRATION_ID_RE = re.compile(r"^[A-Za-z0-9\-._:]{0,127}[A-Za-z0-9\-]$")


class ConfigError(ValueError):
    """The configuration file is invalid; the message names the entry and the fix."""


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
class Policy:
    """A shared access policy of the service API: name, keys (raw bytes) and rights."""

    name: str
    keys: tuple[bytes, ...]
    rights: frozenset[str]


@dataclass
class HubSettings:
    """The `iot_hub` key: what every linked hub's service API uses (policies, limits)."""

    policies: list[Policy] = field(default_factory=list)
    configuration_limit: int = HUB_CONFIGURATION_LIMIT
    configuration_operations_per_minute: int = HUB_CONFIGURATION_OPERATIONS_PER_MINUTE


@dataclass
class Seed:
    """An enrollment declared in the config: created at start-up when the state dir does not hold it."""

    kind: str  # enrollments.INDIVIDUAL | enrollments.GROUP
    record: dict[str, Any]  # normalized (keys the config does not give are generated)
    where: str
    digest: str  # of the config entry itself: tells whether the entry changed since it was seeded


@dataclass
class Config:
    id_scope: str
    linked_hubs: list[str]
    assignment_delay: float = 1.0
    retry_after: int = 3
    rate_limit_per_minute: int = 0
    operations_per_minute: int = 0
    # how long a TPM challenge (the HMAC key sent in a 401's authenticationKey) may sign a register request
    tpm_challenge_lifetime: int = DEFAULT_TPM_CHALLENGE_LIFETIME
    service_host: str | None = None
    policies: list[Policy] = field(default_factory=list)
    certificates: list[CaCertificate] = field(default_factory=list)
    # CA certificates of `enrollment_groups` given with `ca_cert`, and whether each is `verified` (the older form
    # of an uploaded CA: it counts as uploaded-and-verified for the matching rule, not as a caReferences name).
    group_cas: list[tuple[x509.Certificate, bool]] = field(default_factory=list)
    seeds: list[Seed] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    iot_hub: HubSettings = field(default_factory=HubSettings)

    def context(self) -> Context:
        return Context(
            linked_hubs=list(self.linked_hubs),
            certificates={certificate.name.lower(): certificate for certificate in self.certificates},
        )

    def verified_cas(self) -> list[x509.Certificate]:
        """Every CA verified by proof of possession (`certificates` with verified: true, verified group CAs)."""
        return [ca.certificate for ca in self.certificates if ca.verified] + [
            certificate for certificate, verified in self.group_cas if verified
        ]


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


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(Encoding.PEM).decode("ascii")


def _load_key(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a base64 symmetric key")
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: not valid base64") from None
    if not key:
        raise ConfigError(f"{where}: key is empty")
    return value


def _common(entry: dict[str, Any], where: str, hubs: list[str]) -> dict[str, Any]:
    """The record fields shared by groups and individual enrollments (service API names)."""
    attestation = entry.get("attestation")
    if attestation not in ATTESTATIONS:
        raise ConfigError(f"{where}: attestation must be one of {', '.join(ATTESTATIONS)}, got {attestation!r}")
    status = entry.get("provisioning_status", "enabled")
    if status not in PROVISIONING_STATUSES:
        raise ConfigError(f"{where}: provisioning_status must be enabled or disabled, got {status!r}")
    record: dict[str, Any] = {"provisioningStatus": status}
    hub = entry.get("iot_hub")
    if hub is not None:
        if hub not in hubs:
            raise ConfigError(f"{where}: iot_hub {hub!r} is not in linked_hubs ({', '.join(hubs)})")
        record.update({"allocationPolicy": "static", "iotHubs": [hub], "iotHubHostName": hub})
    if entry.get("iot_edge") is not None:
        if not isinstance(entry["iot_edge"], bool):
            raise ConfigError(f"{where}.iot_edge: expected true or false")
        record["capabilities"] = {"iotEdge": entry["iot_edge"]}
    if entry.get("initial_twin") is not None:
        twin = _require_mapping(entry["initial_twin"], f"{where}.initial_twin")
        _check_keys(twin, {"tags", "properties"}, f"{where}.initial_twin")
        record["initialTwin"] = twin
    return record


def _symmetric_attestation(entry: dict[str, Any], where: str) -> dict[str, Any]:
    if "primary_key" not in entry:
        raise ConfigError(f"{where}: symmetric_key attestation needs primary_key (base64)")
    keys = {"primaryKey": _load_key(entry["primary_key"], f"{where}.primary_key")}
    if entry.get("secondary_key") is not None:
        keys["secondaryKey"] = _load_key(entry["secondary_key"], f"{where}.secondary_key")
    return {"type": "symmetricKey", "symmetricKey": keys}


def _seed(kind: str, record: dict[str, Any], where: str, context: Context) -> Seed:
    try:
        normalized = normalize(kind, record, None, context, strict_keys=False, allow_thumbprints=True)
        compile_record(kind, normalized, context)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return Seed(kind, normalized, where, fingerprint(record))


def _parse_group(entry: Any, index: int, base_dir: Path, config: Config) -> Seed:
    where = f"enrollment_groups[{index}]"
    entry = _require_mapping(entry, where)
    allowed = {"name", "attestation", "provisioning_status", "iot_hub", "iot_edge", "initial_twin"}
    if entry.get("attestation") == "x509":
        allowed |= {"ca_cert", "verified", "ca_reference"}
    else:
        allowed |= {"primary_key", "secondary_key"}
    _check_keys(entry, allowed, where)
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: name (the enrollmentGroupId) is required")
    where = f"enrollment group '{name}'"
    record = {"enrollmentGroupId": name, **_common(entry, where, config.linked_hubs)}
    if entry["attestation"] == "x509":
        if ("ca_cert" in entry) == ("ca_reference" in entry):
            raise ConfigError(
                f"{where}: x509 attestation needs ca_cert (PEM file path or inline PEM) or ca_reference "
                "(the name of an entry of certificates)"
            )
        if "ca_cert" in entry:
            certificate = _load_certificate(entry["ca_cert"], base_dir, f"{where}.ca_cert")
            verified = entry.get("verified", True)
            if not isinstance(verified, bool):
                raise ConfigError(f"{where}.verified: expected true or false")
            config.group_cas.append((certificate, verified))
            signing = {"primary": {"certificate": _pem(certificate)}}
            record["attestation"] = {"type": "x509", "x509": {"signingCertificates": signing}}
        else:
            if "verified" in entry:
                raise ConfigError(f"{where}.verified: with ca_reference, verified belongs to the certificates entry")
            record["attestation"] = {"type": "x509", "x509": {"caReferences": {"primary": entry["ca_reference"]}}}
    else:
        record["attestation"] = _symmetric_attestation(entry, where)
    return _seed(GROUP, record, where, config.context())


def _normalise_thumbprint(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a hex SHA-1 or SHA-256 thumbprint")
    text = value.replace(":", "").replace(" ", "").upper()
    if not re.fullmatch(r"[0-9A-F]{40}|[0-9A-F]{64}", text):
        raise ConfigError(f"{where}: {value!r} is not a SHA-1 (40 hex) or SHA-256 (64 hex) thumbprint")
    return text


def _parse_individual(entry: Any, index: int, base_dir: Path, config: Config) -> Seed:
    where = f"individual_enrollments[{index}]"
    entry = _require_mapping(entry, where)
    allowed = {"registration_id", "device_id", "attestation", "provisioning_status", "iot_hub", "iot_edge"}
    allowed.add("initial_twin")
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
    record = {"registrationId": registration_id, **_common(entry, where, config.linked_hubs)}
    if entry.get("device_id") is not None:
        record["deviceId"] = str(entry["device_id"])
    if entry["attestation"] == "x509":
        slots: list[dict[str, Any]] = []
        if entry.get("cert") is not None:
            slots.append({"certificate": _pem(_load_certificate(entry["cert"], base_dir, f"{where}.cert"))})
        for key in ("thumbprint", "secondary_thumbprint"):
            if entry.get(key) is not None:
                thumbprint = _normalise_thumbprint(entry[key], f"{where}.{key}")
                name = "sha1Thumbprint" if len(thumbprint) == 40 else "sha256Thumbprint"
                slots.append({"info": {name: thumbprint}})
        if not slots:
            raise ConfigError(f"{where}: x509 attestation needs cert (PEM path or inline) or thumbprint")
        if len(slots) > 2:
            raise ConfigError(f"{where}: give at most two of cert, thumbprint, secondary_thumbprint")
        client = dict(zip(("primary", "secondary"), slots, strict=False))
        record["attestation"] = {"type": "x509", "x509": {"clientCertificates": client}}
    else:
        record["attestation"] = _symmetric_attestation(entry, where)
    return _seed(INDIVIDUAL, record, where, config.context())


def _parse_certificate(entry: Any, index: int, base_dir: Path) -> CaCertificate:
    where = f"certificates[{index}]"
    entry = _require_mapping(entry, where)
    _check_keys(entry, {"name", "certificate", "verified"}, where)
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: name is required (what caReferences refer to)")
    where = f"certificate '{name}'"
    if "certificate" not in entry:
        raise ConfigError(f"{where}: certificate (PEM file path or inline PEM) is required")
    verified = entry.get("verified")
    if not isinstance(verified, bool):
        raise ConfigError(f"{where}: verified (true or false: proven by proof of possession) is required")
    return CaCertificate(name, _load_certificate(entry["certificate"], base_dir, f"{where}.certificate"), verified)


def _parse_policy(
    entry: Any,
    index: int,
    rights_known: tuple[str, ...] = RIGHTS,
    where: str = "shared_access_policies",
    example: str = "provisioningserviceowner",
    noun: str = "shared access policy",
) -> Policy:
    where = f"{where}[{index}]"
    entry = _require_mapping(entry, where)
    _check_keys(entry, {"name", "primary_key", "secondary_key", "rights"}, where)
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: name (the SharedAccessKeyName, e.g. {example}) is required")
    where = f"{noun} '{name}'"
    if "primary_key" not in entry:
        raise ConfigError(f"{where}: primary_key (base64) is required")
    keys = [base64.b64decode(_load_key(entry["primary_key"], f"{where}.primary_key"))]
    if entry.get("secondary_key") is not None:
        keys.append(base64.b64decode(_load_key(entry["secondary_key"], f"{where}.secondary_key")))
    rights = entry.get("rights")
    if isinstance(rights, str):  # Resource Manager's form: "EnrollmentRead, EnrollmentWrite"
        rights = [right.strip() for right in rights.split(",") if right.strip()]
    if not isinstance(rights, list) or not rights:
        raise ConfigError(f"{where}: rights must be a list of {', '.join(rights_known)}")
    unknown = [right for right in rights if right not in rights_known]
    if unknown:
        raise ConfigError(f"{where}: unknown right(s) {', '.join(map(str, unknown))}; use {', '.join(rights_known)}")
    return Policy(name, tuple(keys), frozenset(rights))


def _check_unique(kind: str, names: list[str]) -> None:
    lowered = [name.lower() for name in names]
    for name in lowered:
        if lowered.count(name) > 1:
            raise ConfigError(f"{kind} '{name}' is declared twice (names are case-insensitive)")


def _count(value: Any, where: str, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{where} must be a non-negative integer ({what})")
    return value


def _parse_iot_hub(value: Any) -> HubSettings:
    """The optional `iot_hub` key: the IoT Hub service API's shared access policies and limits (every linked hub)."""
    where = "config.iot_hub"
    entry = _require_mapping(value, where)
    _check_keys(entry, {"shared_access_policies", "configuration_limit", "configuration_operations_per_minute"}, where)
    settings = HubSettings()
    policies = entry.get("shared_access_policies") or []
    if not isinstance(policies, list):
        raise ConfigError(f"{where}.shared_access_policies: expected a list of policies (name, primary_key, rights)")
    for index, policy in enumerate(policies):
        settings.policies.append(
            _parse_policy(
                policy,
                index,
                HUB_RIGHTS,
                f"{where}.shared_access_policies",
                "iothubowner",
                "IoT Hub shared access policy",
            )
        )
    _check_unique("IoT Hub shared access policy", [policy.name for policy in settings.policies])
    if "configuration_limit" in entry:
        settings.configuration_limit = _count(
            entry["configuration_limit"], f"{where}.configuration_limit", "configurations per hub; IoT Hub: 100"
        )
    if "configuration_operations_per_minute" in entry:
        settings.configuration_operations_per_minute = _count(
            entry["configuration_operations_per_minute"],
            f"{where}.configuration_operations_per_minute",
            "0 = no limit; IoT Hub: 20",
        )
    return settings


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


TOP_LEVEL_KEYS = {
    "id_scope",
    "linked_hubs",
    "defaults",
    "service_host",
    "shared_access_policies",
    "certificates",
    "enrollment_groups",
    "individual_enrollments",
    "faults",
    "iot_hub",
}


def load_config(path: str | Path) -> Config:
    """Read and validate the YAML configuration file; raise ConfigError with a one-line message."""
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
    _check_keys(data, TOP_LEVEL_KEYS, "config")
    id_scope = data.get("id_scope")
    if not isinstance(id_scope, str) or not re.fullmatch(r"[A-Za-z0-9]{1,64}", id_scope):
        raise ConfigError("config: id_scope is required, e.g. 0ne00000001 (letters and digits)")
    hubs = data.get("linked_hubs")
    if not isinstance(hubs, list) or not hubs or not all(isinstance(hub, str) and hub for hub in hubs):
        raise ConfigError("config: linked_hubs must be a non-empty list of IoT Hub host names")
    defaults = _require_mapping(data.get("defaults") or {}, "config.defaults")
    _check_keys(
        defaults,
        {"assignment_delay", "retry_after", "rate_limit_per_minute", "operations_per_minute", "tpm_challenge_lifetime"},
        "config.defaults",
    )
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
    operations = defaults.get("operations_per_minute", 0)
    if not isinstance(operations, int) or isinstance(operations, bool) or operations < 0:
        raise ConfigError(
            "config.defaults.operations_per_minute must be a non-negative integer (0 = no quota; DPS: 1000)"
        )
    config.operations_per_minute = operations
    lifetime = defaults.get("tpm_challenge_lifetime", DEFAULT_TPM_CHALLENGE_LIFETIME)
    if not isinstance(lifetime, int) or isinstance(lifetime, bool) or not 1 <= lifetime <= 86400:
        raise ConfigError("config.defaults.tpm_challenge_lifetime must be an integer number of seconds (1-86400)")
    config.tpm_challenge_lifetime = lifetime
    service_host = data.get("service_host")
    if service_host is not None:
        if not isinstance(service_host, str) or not re.fullmatch(r"[A-Za-z0-9.\-]+(:[0-9]+)?", service_host):
            raise ConfigError("config.service_host must be a host name, e.g. mydps.azure-devices-provisioning.net")
        config.service_host = service_host.lower()
    base_dir = path.resolve().parent
    for index, entry in enumerate(data.get("shared_access_policies") or []):
        config.policies.append(_parse_policy(entry, index))
    for index, entry in enumerate(data.get("certificates") or []):
        config.certificates.append(_parse_certificate(entry, index, base_dir))
    for kind, items in (("shared access policy", config.policies), ("certificate", config.certificates)):
        _check_unique(kind, [item.name for item in items])
    if data.get("iot_hub") is not None:
        config.iot_hub = _parse_iot_hub(data["iot_hub"])
    for index, entry in enumerate(data.get("enrollment_groups") or []):
        config.seeds.append(_parse_group(entry, index, base_dir, config))
    for index, entry in enumerate(data.get("individual_enrollments") or []):
        config.seeds.append(_parse_individual(entry, index, base_dir, config))
    seen: set[tuple[str, str]] = set()
    for seed in config.seeds:
        key = (seed.kind, (seed.record.get("enrollmentGroupId") or seed.record.get("registrationId")).lower())
        if key in seen:
            raise ConfigError(f"{seed.where} is declared twice (ids are case-insensitive)")
        seen.add(key)
    for index, entry in enumerate(data.get("faults") or []):
        config.faults.append(parse_fault(entry, f"faults[{index}]"))
    return config
