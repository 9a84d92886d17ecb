"""Enrollment records in the DPS service API's shapes (2021-10-01): validation, answers, and the compiled form.

A record is kept "internal": the JSON DPS takes in a PUT, completed with defaults, server-owned fields (etag,
timestamps) and the secrets DPS never returns in a GET (symmetric keys). `public_view` is what a GET answers,
`written_view` what a PUT answers (with the keys); `compile_record` turns a record into the `Enrollment` the device
API matches devices against.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .pki import certificate_info
from .tpm import RsaPublic, parse_rsa_public

INDIVIDUAL = "enrollments"
GROUP = "enrollmentGroups"
KINDS = (INDIVIDUAL, GROUP)
ID_FIELD = {INDIVIDUAL: "registrationId", GROUP: "enrollmentGroupId"}
ITEM_TYPE = {INDIVIDUAL: "enrollment", GROUP: "enrollmentGroup"}
# The spec: "a case-insensitive string (up to 128 characters long) of alphanumeric characters plus certain special
# characters : . _ -. No special characters allowed at start or end." Used for enrollment group ids too.
ENROLLMENT_ID_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9\-._:]{0,126}[A-Za-z0-9])?$")
# IoT Hub device ids: up to 128 characters of letters, digits and - . + % _ # * ? ! ( ) , : = @ $ '
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9\-.+%_#*?!(),:=@$']{1,128}$")
ALLOCATION_POLICIES = ("hashed", "geoLatency", "static", "custom")
PROVISIONING_STATUSES = ("enabled", "disabled")
KEY_BYTES = (16, 64)  # DPS symmetric keys are 16-64 bytes once base64-decoded
GENERATED_KEY_BYTES = 64


class ValidationError(ValueError):
    """The record is not acceptable; the message says what to fix."""


@dataclass
class CaCertificate:
    """A CA certificate "uploaded" to the provisioning service (Resource Manager: the config's `certificates`)."""

    name: str
    certificate: x509.Certificate
    verified: bool


@dataclass
class Context:
    """What a record is validated against: the linked hubs and the uploaded CA certificates."""

    linked_hubs: list[str]
    certificates: dict[str, CaCertificate] = field(default_factory=dict)  # lower-case name -> certificate

    def certificate(self, name: str) -> CaCertificate | None:
        return self.certificates.get(name.lower())


@dataclass
class Enrollment:
    """An enrollment compiled for matching: an enrollment group (`group_id`) or an individual (`registration_id`)."""

    attestation: str  # "x509" | "symmetric_key" | "tpm"
    group_id: str | None = None
    registration_id: str | None = None
    device_id: str | None = None
    provisioning_status: str = "enabled"
    allocation_policy: str = "hashed"
    iot_hubs: tuple[str, ...] = ()  # empty: every linked hub
    ca_certs: tuple[x509.Certificate, ...] = ()  # group: signingCertificates or the referenced CA certificates
    thumbprints: tuple[str, ...] = ()  # individual x509: SHA-1 and SHA-256 of the client certificates
    keys: tuple[bytes, ...] = ()
    endorsement_key: RsaPublic | None = None  # individual tpm: the EK, and the SRK when the enrollment gives one
    storage_root_key: RsaPublic | None = None
    initial_twin: dict[str, Any] = field(default_factory=dict)
    update_hub_assignment: bool = True
    migrate_device_data: bool = True

    @property
    def label(self) -> str:
        if self.group_id is not None:
            return f"enrollment group '{self.group_id}'"
        return f"individual enrollment '{self.registration_id}'"

    @property
    def enabled(self) -> bool:
        return self.provisioning_status == "enabled"


def record_id(kind: str, record: dict[str, Any]) -> str:
    return record[ID_FIELD[kind]]


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(GENERATED_KEY_BYTES)).decode("ascii")


def fingerprint(record: dict[str, Any]) -> str:
    """Stable digest of a record's content (used to notice that a config seed changed)."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode("utf-8")).hexdigest()


def decode_key(value: Any, where: str, strict: bool = True) -> bytes:
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{where} must be a base64 string")
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(f"{where} is not valid base64") from None
    low, high = KEY_BYTES if strict else (1, 1 << 16)
    if not low <= len(key) <= high:
        raise ValidationError(f"{where} must decode to {low}-{high} bytes, not {len(key)}")
    return key


def load_pem(value: Any, where: str) -> x509.Certificate:
    if not isinstance(value, str) or "-----BEGIN CERTIFICATE-----" not in value:
        raise ValidationError(f"{where} must be a PEM certificate (-----BEGIN CERTIFICATE----- ...)")
    try:
        return x509.load_pem_x509_certificate(value.encode("ascii", errors="replace"))
    except ValueError:
        raise ValidationError(f"{where} is not a valid PEM certificate") from None


def _thumbprints(cert: x509.Certificate) -> list[str]:
    der = cert.public_bytes(Encoding.DER)
    return [hashlib.sha1(der).hexdigest().upper(), hashlib.sha256(der).hexdigest().upper()]  # noqa: S324


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(f"{where} must be a JSON object")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"{where} must be true or false")
    return value


def _hub(value: Any, where: str, context: Context) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{where} must be an IoT hub host name")
    for hub in context.linked_hubs:
        if hub.lower() == value.lower():
            return hub
    raise ValidationError(
        f"{where}: IoT hub '{value}' is not linked to this provisioning service "
        f"(linked hubs: {', '.join(context.linked_hubs)})"
    )


def _certificates(value: Any, where: str, allow_thumbprints: bool) -> dict[str, Any]:
    """X509Certificates {primary, secondary}: each {certificate: PEM} (or, from the config, {info: thumbprints})."""
    value = _object(value, where)
    result: dict[str, Any] = {}
    for slot in ("primary", "secondary"):
        entry = value.get(slot)
        if entry is None:
            continue
        entry = _object(entry, f"{where}.{slot}")
        if entry.get("certificate") is not None:
            load_pem(entry["certificate"], f"{where}.{slot}.certificate")
            result[slot] = {"certificate": entry["certificate"]}
        elif allow_thumbprints and isinstance(entry.get("info"), dict):
            result[slot] = {"info": dict(entry["info"])}
        else:
            raise ValidationError(f"{where}.{slot}.certificate is required (the PEM certificate)")
    if "primary" not in result:
        raise ValidationError(f"{where}.primary.certificate is required (the PEM certificate)")
    return result


def _attestation(kind: str, value: Any, context: Context, strict: bool, allow_thumbprints: bool) -> dict[str, Any]:
    value = _object(value, "attestation")
    attestation_type = value.get("type")
    if attestation_type == "tpm":
        if kind == GROUP:
            raise ValidationError(
                "attestation type 'tpm' is not supported for enrollment groups: TPM attestation takes an individual "
                "enrollment per device (its endorsement key); use x509 or symmetricKey for a group"
            )
        return {"type": "tpm", "tpm": _tpm(value.get("tpm"))}
    if attestation_type == "symmetricKey":
        given = value.get("symmetricKey")
        keys = _object(given, "attestation.symmetricKey") if given is not None else {}
        result = {}
        for name in ("primaryKey", "secondaryKey"):
            if keys.get(name) is not None:
                decode_key(keys[name], f"attestation.symmetricKey.{name}", strict)
                result[name] = keys[name]
            else:
                result[name] = new_key()  # DPS generates the keys it is not given
        return {"type": "symmetricKey", "symmetricKey": result}
    if attestation_type == "x509":
        x509_value = _object(value.get("x509"), "attestation.x509")
        if kind == INDIVIDUAL:
            for other in ("signingCertificates", "caReferences"):
                if x509_value.get(other) is not None:
                    raise ValidationError(
                        f"attestation.x509.{other} is for enrollment groups; an individual enrollment takes "
                        "attestation.x509.clientCertificates (the device certificate)"
                    )
            if x509_value.get("clientCertificates") is None:
                raise ValidationError("attestation.x509.clientCertificates is required for an individual enrollment")
            certificates = _certificates(
                x509_value["clientCertificates"], "attestation.x509.clientCertificates", allow_thumbprints
            )
            return {"type": "x509", "x509": {"clientCertificates": certificates}}
        if x509_value.get("clientCertificates") is not None:
            raise ValidationError(
                "attestation.x509.clientCertificates is for individual enrollments; an enrollment group takes "
                "signingCertificates (the CA PEM) or caReferences (the name of an uploaded CA certificate)"
            )
        signing, references = x509_value.get("signingCertificates"), x509_value.get("caReferences")
        if (signing is None) == (references is None):
            raise ValidationError(
                "attestation.x509 of an enrollment group needs exactly one of signingCertificates or caReferences"
            )
        if signing is not None:
            certificates = _certificates(signing, "attestation.x509.signingCertificates", False)
            return {"type": "x509", "x509": {"signingCertificates": certificates}}
        references = _object(references, "attestation.x509.caReferences")
        result = {}
        for slot in ("primary", "secondary"):
            name = references.get(slot)
            if name is None:
                continue
            if not isinstance(name, str) or context.certificate(name) is None:
                uploaded = ", ".join(sorted(cert.name for cert in context.certificates.values())) or "none"
                raise ValidationError(
                    f"attestation.x509.caReferences.{slot}: no CA certificate named {name!r} is uploaded to this "
                    f"provisioning service (uploaded: {uploaded})"
                )
            result[slot] = name
        if "primary" not in result:
            raise ValidationError("attestation.x509.caReferences.primary is required")
        return {"type": "x509", "x509": {"caReferences": result}}
    raise ValidationError(f"attestation.type must be x509, symmetricKey or tpm, got {attestation_type!r}")


def tpm_key(value: Any, where: str) -> RsaPublic:
    """An endorsementKey / storageRootKey: base64 of a marshalled TPM2B_PUBLIC holding an RSA-2048 storage key."""
    data = decode_key(value, f"{where} (the key's TPM2B_PUBLIC, as tpm2_readpublic -o writes it)", strict=False)
    try:
        return parse_rsa_public(data, where)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def _tpm(value: Any) -> dict[str, str]:
    """TpmAttestation: endorsementKey (required), storageRootKey (optional), both kept as given."""
    value = _object(value, "attestation.tpm")
    if value.get("endorsementKey") is None:
        raise ValidationError("attestation.tpm.endorsementKey is required (base64 of the EK's TPM2B_PUBLIC)")
    result = {}
    for name in ("endorsementKey", "storageRootKey"):
        if value.get(name) is not None:
            tpm_key(value[name], f"attestation.tpm.{name}")
            result[name] = value[name]
    return result


def _initial_twin(value: Any) -> dict[str, Any]:
    value = _object(value, "initialTwin")
    twin: dict[str, Any] = {}
    if value.get("tags") is not None:
        twin["tags"] = copy.deepcopy(_object(value["tags"], "initialTwin.tags"))
    if value.get("properties") is not None:
        properties = _object(value["properties"], "initialTwin.properties")
        twin["properties"] = {}
        if properties.get("desired") is not None:
            twin["properties"]["desired"] = copy.deepcopy(
                _object(properties["desired"], "initialTwin.properties.desired")
            )
    return twin


def normalize(
    kind: str,
    body: Any,
    path_id: str | None,
    context: Context,
    *,
    strict_keys: bool = True,
    allow_thumbprints: bool = False,
) -> dict[str, Any]:
    """Validate an IndividualEnrollment / EnrollmentGroup and return the internal record (without etag, timestamps).

    Fields DPS owns (etag, createdDateTimeUtc, lastUpdatedDateTimeUtc, registrationState) are ignored in the input;
    so are fields the spec does not know.
    """
    body = _object(body, "the request body")
    id_field = ID_FIELD[kind]
    identifier = body.get(id_field)
    if identifier is None and path_id is not None:
        identifier = path_id
    if not isinstance(identifier, str) or not ENROLLMENT_ID_RE.match(identifier):
        raise ValidationError(
            f"{id_field} {identifier!r} is invalid: use 1-128 letters, digits and '-._:', starting and ending with a "
            "letter or digit"
        )
    if path_id is not None and identifier.lower() != path_id.lower():
        raise ValidationError(f"{id_field} {identifier!r} in the body does not match {path_id!r} in the URL")
    if body.get("attestation") is None:
        raise ValidationError("attestation is required")
    record: dict[str, Any] = {
        id_field: identifier,
        "attestation": _attestation(kind, body["attestation"], context, strict_keys, allow_thumbprints),
    }
    if kind == INDIVIDUAL and body.get("deviceId") is not None:
        if not isinstance(body["deviceId"], str) or not DEVICE_ID_RE.match(body["deviceId"]):
            raise ValidationError(f"deviceId {body['deviceId']!r} is not a valid IoT Hub device id")
        record["deviceId"] = body["deviceId"]
    capabilities = body.get("capabilities")
    iot_edge = False
    if capabilities is not None:
        capabilities = _object(capabilities, "capabilities")
        if capabilities.get("iotEdge") is not None:
            iot_edge = _bool(capabilities["iotEdge"], "capabilities.iotEdge")
    record["capabilities"] = {"iotEdge": iot_edge}
    status = body.get("provisioningStatus", "enabled")
    if status not in PROVISIONING_STATUSES:
        raise ValidationError(f"provisioningStatus must be enabled or disabled, got {status!r}")
    record["provisioningStatus"] = status
    policy = body.get("reprovisionPolicy")
    reprovision = {"updateHubAssignment": True, "migrateDeviceData": True}
    if policy is not None:
        policy = _object(policy, "reprovisionPolicy")
        for name in reprovision:
            if policy.get(name) is not None:
                reprovision[name] = _bool(policy[name], f"reprovisionPolicy.{name}")
    record["reprovisionPolicy"] = reprovision
    if body.get("initialTwin") is not None:
        record["initialTwin"] = _initial_twin(body["initialTwin"])
    hubs: list[str] = []
    if body.get("iotHubs") is not None:
        if not isinstance(body["iotHubs"], list):
            raise ValidationError("iotHubs must be a list of IoT hub host names")
        hubs = [_hub(hub, f"iotHubs[{index}]", context) for index, hub in enumerate(body["iotHubs"])]
        record["iotHubs"] = hubs
    if body.get("iotHubHostName") is not None:
        record["iotHubHostName"] = _hub(body["iotHubHostName"], "iotHubHostName", context)
    allocation = body.get("allocationPolicy")
    if allocation is None:
        allocation = "static" if "iotHubHostName" in record and not hubs else "hashed"
    if allocation not in ALLOCATION_POLICIES:
        raise ValidationError(f"allocationPolicy must be one of {', '.join(ALLOCATION_POLICIES)}, got {allocation!r}")
    if allocation == "custom":
        raise ValidationError("allocationPolicy 'custom' (Azure Function webhooks) is not supported by the emulator")
    if allocation == "static":
        targets = hubs or ([record["iotHubHostName"]] if "iotHubHostName" in record else [])
        if len(targets) != 1:
            raise ValidationError("allocationPolicy 'static' needs exactly one IoT hub (iotHubs or iotHubHostName)")
    record["allocationPolicy"] = allocation
    if body.get("optionalDeviceInformation") is not None and kind == INDIVIDUAL:
        record["optionalDeviceInformation"] = copy.deepcopy(
            _object(body["optionalDeviceInformation"], "optionalDeviceInformation")
        )
    return record


def _certificate_view(entry: dict[str, Any]) -> dict[str, Any]:
    """X509CertificateWithInfo: the PEM as uploaded and the facts DPS derives from it."""
    if entry.get("certificate"):
        certificate = x509.load_pem_x509_certificate(entry["certificate"].encode("ascii"))
        return {"certificate": entry["certificate"], "info": certificate_info(certificate)}
    return {"info": dict(entry.get("info") or {})}  # seeded from a thumbprint only


def public_view(record: dict[str, Any]) -> dict[str, Any]:
    """What a GET answers: no symmetric key values (DPS does not return them); certificates with their info."""
    view = copy.deepcopy(record)
    attestation = view.get("attestation") or {}
    if "symmetricKey" in attestation:
        attestation["symmetricKey"] = {}
    certificates = attestation.get("x509") or {}
    for name in ("clientCertificates", "signingCertificates"):
        if name in certificates:
            certificates[name] = {slot: _certificate_view(entry) for slot, entry in certificates[name].items()}
    return view


def attestation_view(record: dict[str, Any]) -> dict[str, Any]:
    """POST .../attestationmechanism: the attestation with its symmetric keys."""
    attestation = public_view(record)["attestation"]
    if "symmetricKey" in record["attestation"]:
        attestation["symmetricKey"] = copy.deepcopy(record["attestation"]["symmetricKey"])
    return attestation


def written_view(record: dict[str, Any]) -> dict[str, Any]:
    """What a create or update (PUT) answers: the public view with the symmetric keys, given or generated.

    DPS returns them there: `az iot dps enrollment create` without keys reads the generated keys from this answer,
    and Microsoft's SDK tests compare attestationmechanism's keys with the create answer's."""
    view = public_view(record)
    view["attestation"] = attestation_view(record)
    return view


def compile_record(kind: str, record: dict[str, Any], context: Context) -> Enrollment:
    """The matching form of a stored record; ValidationError if the record no longer fits the context."""
    attestation = record["attestation"]
    hubs = tuple(_hub(hub, "iotHubs", context) for hub in record.get("iotHubs") or ())
    if record.get("iotHubHostName"):
        host = _hub(record["iotHubHostName"], "iotHubHostName", context)
        if not hubs:
            hubs = (host,)
    twin = record.get("initialTwin") or {}
    enrollment = Enrollment(
        attestation={"x509": "x509", "tpm": "tpm"}.get(attestation["type"], "symmetric_key"),
        provisioning_status=record.get("provisioningStatus", "enabled"),
        allocation_policy=record.get("allocationPolicy", "hashed"),
        iot_hubs=hubs,
        initial_twin={
            "tags": copy.deepcopy(twin.get("tags") or {}),
            "properties": {"desired": copy.deepcopy((twin.get("properties") or {}).get("desired") or {})},
        },
        update_hub_assignment=record.get("reprovisionPolicy", {}).get("updateHubAssignment", True),
        migrate_device_data=record.get("reprovisionPolicy", {}).get("migrateDeviceData", True),
    )
    if kind == GROUP:
        enrollment.group_id = record["enrollmentGroupId"]
    else:
        enrollment.registration_id = record["registrationId"]
        enrollment.device_id = record.get("deviceId") or record["registrationId"]
    if attestation["type"] == "symmetricKey":
        keys = attestation["symmetricKey"]
        enrollment.keys = tuple(
            base64.b64decode(keys[name]) for name in ("primaryKey", "secondaryKey") if keys.get(name)
        )
        return enrollment
    if attestation["type"] == "tpm":
        keys = attestation["tpm"]
        enrollment.endorsement_key = tpm_key(keys["endorsementKey"], "attestation.tpm.endorsementKey")
        if keys.get("storageRootKey"):
            enrollment.storage_root_key = tpm_key(keys["storageRootKey"], "attestation.tpm.storageRootKey")
        return enrollment
    certificates = attestation["x509"]
    if "clientCertificates" in certificates:
        thumbprints: list[str] = []
        for entry in certificates["clientCertificates"].values():
            if entry.get("certificate"):
                thumbprints += _thumbprints(x509.load_pem_x509_certificate(entry["certificate"].encode("ascii")))
            for name in ("sha1Thumbprint", "sha256Thumbprint"):
                value = (entry.get("info") or {}).get(name)
                if value:
                    thumbprints.append(value.replace(":", "").upper())
        enrollment.thumbprints = tuple(thumbprints)
    elif "signingCertificates" in certificates:
        enrollment.ca_certs = tuple(
            x509.load_pem_x509_certificate(entry["certificate"].encode("ascii"))
            for entry in certificates["signingCertificates"].values()
        )
    else:
        cas = []
        for name in certificates["caReferences"].values():
            uploaded = context.certificate(name)
            if uploaded is None:
                raise ValidationError(f"CA certificate {name!r} is no longer uploaded (config `certificates`)")
            cas.append(uploaded.certificate)
        enrollment.ca_certs = tuple(cas)
    return enrollment
