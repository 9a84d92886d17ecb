"""The DPS device API: register, poll the operation, status lookup - with X.509, symmetric-key and TPM attestation.

Devices match against the shared enrollment store, so enrollments written through the service API count from the
next request on. Assignment writes the registration record and the device in its "IoT hub" (with the twin copied
from the enrollment's initialTwin when the device is first created there).

TPM attestation (individual enrollments only) is DPS's challenge flow: a register request carrying
`tpm: {endorsementKey, storageRootKey}` and no credentials is answered 401 with an `authenticationKey` (tpm.py: a
fresh HMAC key that only the enrolled TPM can import); the device then signs a SAS token with that key inside its
TPM and registers with it. The challenge key signs one register request within `tpm_challenge_lifetime` seconds;
an operation's polls are accepted with the token it was registered with until the token's `se`. The assigned result
carries a second authenticationKey wrapping the device's IoT Hub key (its hub identity is a SAS one with that key).
Challenges live in memory, as operations do: after a restart a device asks for a new one.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import logging
import secrets
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from .config import REGISTRATION_ID_RE, Config
from .enrollments import GROUP, INDIVIDUAL, Enrollment
from .faults import FaultInjector
from .pki import certificate_info, common_name, iso_utc, match_group, thumbprints, utcnow, validity_problem
from .router import Route
from .sas import SasError, SasToken, check_token, derive_device_key, parse_sas, signature_matches
from .state import RegistrationStore, authentication_type, hub_etag
from .store import EnrollmentStore, new_etag
from .tpm import RsaPublic, authentication_key_blob, parse_rsa_public
from .wire import (
    ERROR_OPERATION_NOT_FOUND,
    ERROR_REGISTRATION_NOT_FOUND,
    ERROR_UNAUTHORIZED,
    ApiError,
    Request,
    Response,
    bad_request,
    json_body,
)

LOG = logging.getLogger("dps_emulator")
ATTESTATION_NAMES = {"x509": "X.509", "symmetric_key": "symmetric key", "tpm": "TPM"}
TPM_KEY_BYTES = 32  # the challenge key and a TPM device's IoT Hub key (HMAC-SHA256 keys)


@dataclass
class TpmChallenge:
    """An authenticationKey sent to a TPM device: the HMAC key in it, and the EK and SRK it was made for."""

    registration_id: str
    key: bytes
    expires_at: float  # unix time
    endorsement_key: RsaPublic
    storage_root_key: RsaPublic
    used: bool = False  # a register request was accepted with it: a challenge is good for one registration


@dataclass
class Operation:
    operation_id: str
    registration_id: str
    enrollment: Enrollment
    attestation: dict[str, Any]
    payload: Any
    ready_at: float
    result: dict[str, Any] | None = None
    tpm: TpmChallenge | None = None  # a TPM registration: the challenge whose key signed it


@dataclass
class Attested:
    """What authentication established about a device request."""

    registration_id: str
    enrollment: Enrollment
    attestation: dict[str, Any]  # {"x509": {...}}, {"symmetricKey": {...}} or {"tpm": {}} for the registration result
    body: dict[str, Any] | None
    tpm: TpmChallenge | None = None


class TpmChallengeAnswer(ApiError):
    """DPS's answer to a TPM device's unauthenticated register request: 401 with the key to activate. The body is
    what the clients read: Node and aziot-identityd take authenticationKey, the C SDK also needs keyName."""

    def __init__(self, registration_id: str, blob: bytes, lifetime: int) -> None:
        super().__init__(
            401,
            ERROR_UNAUTHORIZED,
            f"Registration '{registration_id}': TPM challenge. Activate authenticationKey with the TPM and sign a "
            f"SAS token with it within {lifetime} s.",
        )
        self.authentication_key = base64.b64encode(blob).decode("ascii")

    def response(self) -> Response:
        body = {"authenticationKey": self.authentication_key, "keyName": "registration", "message": self.message}
        return Response(self.status, body)


def attestation_name(attestation: dict[str, Any]) -> str:
    """The attestation of a registration result as records and hub devices name it."""
    return next((name for name in ("x509", "tpm") if name in attestation), "symmetricKey")


class DeviceApi:
    def __init__(
        self,
        config: Config,
        enrollments: EnrollmentStore,
        registrations: RegistrationStore,
        faults: FaultInjector,
    ) -> None:
        self.config = config
        self.enrollments = enrollments
        self.registrations = registrations
        self.faults = faults
        self.lock = threading.Lock()
        self.operations: dict[str, Operation] = {}
        self.tpm_challenges: dict[str, TpmChallenge] = {}  # the latest challenge by lower-case registration id

    def routes(self) -> list[Route]:
        return [
            Route(
                "PUT",
                "/{idScope}/registrations/{registrationId}/register",
                "device",
                self.register,
                endpoint="register",
                target="registrationId",
            ),
            Route(
                "GET",
                "/{idScope}/registrations/{registrationId}/operations/{operationId}",
                "device",
                self.operation,
                endpoint="operation",
                target="registrationId",
            ),
            Route(
                "POST",
                "/{idScope}/registrations/{registrationId}",
                "device",
                self.status,
                endpoint="status",
                target="registrationId",
            ),
        ]

    # --- authentication ------------------------------------------------------------------------------------
    def authenticate(self, request: Request, params: dict[str, str], route: Route) -> Attested:
        """Id scope, registration id, body, quota, then attestation (TLS client certificate or SAS)."""
        id_scope, registration_id = params["idScope"], params["registrationId"]
        if id_scope != self.config.id_scope:
            raise ApiError(401, ERROR_UNAUTHORIZED, f"ID scope '{id_scope}' is not known to this provisioning service.")
        if not REGISTRATION_ID_RE.match(registration_id):
            raise bad_request(
                f"Registration id {registration_id!r} is invalid: use 1-128 letters, digits and '-._:', ending with "
                "a letter, digit or '-'."
            )
        body: dict[str, Any] | None = None
        if route.endpoint in ("register", "status"):
            parsed = json_body(request, required=False)
            if not isinstance(parsed, dict):
                raise bad_request("The request body must be a JSON object.")
            body_id = parsed.get("registrationId")
            if body_id is not None and (not isinstance(body_id, str) or body_id.lower() != registration_id.lower()):
                raise bad_request(
                    f"registrationId {body_id!r} in the body does not match {registration_id!r} in the URL."
                )
            body = parsed
        if route.endpoint == "register":
            limited = self.faults.rate_limited()
            if limited is not None:
                raise ApiError(limited.status, limited.body["errorCode"], limited.body["message"], limited.headers)
        authorization = request.headers.get("authorization", "")
        challenge = None
        if authorization:
            enrollment, attestation, challenge = self._authenticate_sas(
                authorization, registration_id, route, params, body
            )
        elif request.leaf is not None:
            enrollment, attestation = self._authenticate_x509(request.leaf, request.presented, registration_id)
        elif route.endpoint == "register" and body is not None and body.get("tpm") is not None:
            raise self._tpm_challenge(registration_id, body["tpm"])
        else:
            raise ApiError(
                401,
                ERROR_UNAUTHORIZED,
                f"Registration '{registration_id}': no client certificate and no SharedAccessSignature "
                "Authorization header; the request is not authenticated.",
            )
        return Attested(registration_id, enrollment, attestation, body, challenge)

    @staticmethod
    def _refuse(registration_id: str, reason: str) -> ApiError:
        LOG.info("refused %s: %s", registration_id, reason)
        return ApiError(401, ERROR_UNAUTHORIZED, f"Registration '{registration_id}' refused: {reason}")

    def _authenticate_x509(
        self, leaf: x509.Certificate, presented: list[x509.Certificate], registration_id: str
    ) -> tuple[Enrollment, dict[str, Any]]:
        cn = common_name(leaf)
        if cn is None or cn.lower() != registration_id.lower():  # registration ids are case-insensitive
            raise self._refuse(
                registration_id,
                f"certificate CN {cn!r} does not match the registration id; the CN must equal the registration id",
            )
        problem = validity_problem(leaf, "device certificate")
        if problem:
            raise self._refuse(registration_id, problem)
        sha1, sha256 = thumbprints(leaf)
        individual_attestation = {
            "x509": {
                "certificateInfo": certificate_info(leaf),
                "enrollmentGroupId": None,
                "signingCertificateInfo": None,
            }
        }
        own = self.enrollments.individual(registration_id)
        if own is not None:
            # an individual enrollment for this registration id is the one DPS uses: it wins over any group
            if own.attestation != "x509":
                raise self._refuse(
                    registration_id, f"{own.label} uses {ATTESTATION_NAMES[own.attestation]} attestation, not X.509"
                )
            if not {sha1, sha256} & set(own.thumbprints):
                raise self._refuse(
                    registration_id, f"the device certificate is not the client certificate of {own.label}"
                )
            return own, individual_attestation
        other = self.enrollments.individual_by_certificate((sha1, sha256))
        if other is not None:
            raise self._refuse(
                registration_id, f"the certificate belongs to {other.label}, not to this registration id"
            )
        match = match_group(leaf, presented, self.enrollments.groups(), self.enrollments.verified)
        if match.group is None:
            raise self._refuse(registration_id, match.problem or "no enrollment matches the certificate")
        attestation = {
            "x509": {
                "certificateInfo": certificate_info(leaf),
                "enrollmentGroupId": match.group.group_id,
                "signingCertificateInfo": certificate_info(match.signing_cert) if match.signing_cert else None,
            }
        }
        return match.group, attestation

    def _authenticate_sas(
        self, header: str, registration_id: str, route: Route, params: dict[str, str], body: dict[str, Any] | None
    ) -> tuple[Enrollment, dict[str, Any], TpmChallenge | None]:
        try:
            token = parse_sas(header)
            check_token(token, self.config.id_scope, registration_id)
        except SasError as exc:
            raise self._refuse(registration_id, str(exc)) from None
        own = self.enrollments.individual(registration_id)
        if own is not None:
            if own.attestation == "tpm":
                return own, {"tpm": {}}, self._authenticate_tpm_sas(token, own, registration_id, route, params, body)
            if own.attestation != "symmetric_key":
                raise self._refuse(registration_id, f"{own.label} uses X.509 attestation, not a symmetric key")
            if any(signature_matches(token, key) for key in own.keys):
                return own, {"symmetricKey": {"enrollmentGroupId": None}}, None
            raise self._refuse(registration_id, f"SAS signature does not verify with the key of {own.label}")
        for enrollment in self.enrollments.groups():
            if enrollment.attestation != "symmetric_key":
                continue
            for group_key in enrollment.keys:
                if signature_matches(token, derive_device_key(group_key, registration_id)):
                    return enrollment, {"symmetricKey": {"enrollmentGroupId": enrollment.group_id}}, None
        raise self._refuse(
            registration_id,
            "SAS signature does not verify with any symmetric-key enrollment (wrong key, or the device key was not "
            "derived from the group key with HMAC-SHA256 over the registration id)",
        )

    # --- TPM ----------------------------------------------------------------------------------------------------
    def _request_tpm_key(self, tpm: dict[str, Any], name: str) -> RsaPublic | None:
        value = tpm.get(name)
        if value is None:
            return None
        try:
            data = base64.b64decode(value, validate=True) if isinstance(value, str) else None
        except ValueError:
            data = None
        if not data:
            raise bad_request(f"tpm.{name} must be base64 of the key's TPM2B_PUBLIC.")
        try:
            return parse_rsa_public(data, f"tpm.{name}")
        except ValueError as exc:
            raise bad_request(f"{exc}.") from None

    def _check_tpm_keys(self, own: Enrollment, tpm: Any, registration_id: str) -> tuple[RsaPublic, RsaPublic | None]:
        """The request's EK (and SRK, if it sends one) against the enrollment's: the same public key and template."""
        if not isinstance(tpm, dict):
            raise bad_request("tpm must be an object: {endorsementKey, storageRootKey}.")
        endorsement_key = self._request_tpm_key(tpm, "endorsementKey")
        if endorsement_key is None:
            raise bad_request("tpm.endorsementKey is required (base64 of the EK's TPM2B_PUBLIC).")
        storage_root_key = self._request_tpm_key(tpm, "storageRootKey")
        enrolled = own.endorsement_key
        if enrolled is None or not endorsement_key.same_key(enrolled):
            raise self._refuse(
                registration_id,
                f"the endorsement key sent ({endorsement_key.describe()}) does not match the one of {own.label} "
                f"({enrolled.describe() if enrolled else 'none'})",
            )
        enrolled_srk = own.storage_root_key
        if enrolled_srk is not None and storage_root_key is not None and not storage_root_key.same_key(enrolled_srk):
            raise self._refuse(
                registration_id,
                f"the storage root key sent ({storage_root_key.describe()}) does not match the one of {own.label} "
                f"({enrolled_srk.describe()})",
            )
        return endorsement_key, storage_root_key or own.storage_root_key

    def _tpm_challenge(self, registration_id: str, tpm: Any) -> ApiError:
        """The 401 with a fresh authenticationKey for an enabled TPM enrollment whose EK (and SRK) match, else the
        refusal that says why."""
        own = self.enrollments.individual(registration_id)
        if own is None:
            raise self._refuse(
                registration_id,
                "no individual enrollment has this registration id (TPM attestation takes an individual enrollment "
                "with the device's endorsement key)",
            )
        if own.attestation != "tpm":
            raise self._refuse(
                registration_id, f"{own.label} uses {ATTESTATION_NAMES[own.attestation]} attestation, not TPM"
            )
        if not own.enabled:
            raise self._refuse(registration_id, f"{own.label} is disabled")
        endorsement_key, storage_root_key = self._check_tpm_keys(own, tpm, registration_id)
        if storage_root_key is None:
            raise bad_request(
                "tpm.storageRootKey is required: the authentication key is made for import under the device's SRK "
                "(and the enrollment gives none)."
            )
        lifetime = self.config.tpm_challenge_lifetime
        key = secrets.token_bytes(TPM_KEY_BYTES)
        blob = authentication_key_blob(endorsement_key, storage_root_key, key)
        challenge = TpmChallenge(registration_id, key, time.time() + lifetime, endorsement_key, storage_root_key)
        with self.lock:
            self.tpm_challenges[registration_id.lower()] = challenge
        LOG.info("TPM challenge sent to %s (valid %d s)", registration_id, lifetime)
        return TpmChallengeAnswer(registration_id, blob, lifetime)

    def _authenticate_tpm_sas(
        self,
        token: SasToken,
        own: Enrollment,
        registration_id: str,
        route: Route,
        params: dict[str, str],
        body: dict[str, Any] | None,
    ) -> TpmChallenge:
        """A SAS token of a TPM device: signed with the key of its latest, unexpired challenge; an operation's polls
        with the key that registered it (until the token's se, which check_token enforced)."""
        if route.endpoint == "register" and not own.enabled:
            raise self._refuse(registration_id, f"{own.label} is disabled")
        if body is not None and body.get("tpm") is not None:
            self._check_tpm_keys(own, body["tpm"], registration_id)  # Node sends them again; aziot-identityd does not
        if route.endpoint == "operation":
            with self.lock:
                operation = self.operations.get(params["operationId"])
            ours = operation is not None and operation.registration_id.lower() == registration_id.lower()
            if ours and operation.tpm is not None:
                if signature_matches(token, operation.tpm.key):
                    return operation.tpm
                raise self._refuse(
                    registration_id,
                    "SAS signature does not verify with the TPM authentication key this operation was registered with",
                )
        with self.lock:
            challenge = self.tpm_challenges.get(registration_id.lower())
        if challenge is None:
            raise self._refuse(
                registration_id,
                "no TPM challenge was issued for it: register without Authorization, with tpm {endorsementKey, "
                "storageRootKey}, then sign the SAS token with the authenticationKey answered",
            )
        if not signature_matches(token, challenge.key):
            raise self._refuse(
                registration_id,
                "SAS signature does not verify with the TPM authentication key of its latest challenge (signed with "
                "another key, or with the key of an older challenge)",
            )
        if challenge.expires_at <= time.time():
            raise self._refuse(
                registration_id,
                f"the TPM challenge key expired at {int(challenge.expires_at)} (unix time; challenges are valid "
                f"{self.config.tpm_challenge_lifetime} s): register without Authorization for a new challenge",
            )
        if route.endpoint == "register":
            with self.lock:
                replayed, challenge.used = challenge.used, True
            if replayed:
                raise self._refuse(
                    registration_id,
                    "a register request signed with the key of this TPM challenge was accepted already (a replayed "
                    "token): register without Authorization for a new challenge",
                )
        return challenge

    # --- assignment ----------------------------------------------------------------------------------------
    def _allocate(self, enrollment: Enrollment, registration_id: str, previous_hub: str | None) -> str:
        if previous_hub and not enrollment.update_hub_assignment and previous_hub in self.config.linked_hubs:
            return previous_hub  # reprovisionPolicy.updateHubAssignment false: the device stays where it is
        hubs = sorted(enrollment.iot_hubs or self.config.linked_hubs)
        if enrollment.allocation_policy == "static" or len(hubs) == 1:
            return hubs[0] if len(hubs) == 1 else enrollment.iot_hubs[0]
        # hashed (and geoLatency, which has no latency to measure here): stable per registration id
        digest = hashlib.sha256(registration_id.lower().encode("utf-8")).digest()
        return hubs[int.from_bytes(digest[:8], "big") % len(hubs)]

    def _complete(self, operation: Operation) -> dict[str, Any]:
        """Turn a due operation into its final registrationState; persist the record and the hub device."""
        registration_id = operation.registration_id
        enrollment = operation.enrollment
        now = iso_utc(utcnow())
        with self.registrations.transaction() as store:
            existing = store.get(registration_id)
            previous = existing["registrationState"] if existing else None
            state: dict[str, Any] = {
                "registrationId": previous.get("registrationId", registration_id) if previous else registration_id,
                "createdDateTimeUtc": previous.get("createdDateTimeUtc", now) if previous else now,
            }
            attestation = copy.deepcopy(operation.attestation)
            record: dict[str, Any] = {
                "attestation": attestation_name(attestation),
                "enrollment": enrollment.label,
                "enrollmentGroupId": enrollment.group_id,
                "registrationCount": existing.get("registrationCount", 0) if existing else 0,
            }
            if not enrollment.enabled:
                state.update({"status": "disabled", "errorMessage": f"{enrollment.label} is disabled"})
            else:
                assigned = previous if previous and previous.get("status") == "assigned" else None
                previous_hub = assigned.get("assignedHub") if assigned else None
                hub = self._allocate(enrollment, registration_id, previous_hub)
                device_id = enrollment.device_id or registration_id
                if assigned is None:
                    substatus = "initialAssignment"
                elif previous_hub == hub:
                    substatus = assigned.get("substatus") or "initialAssignment"
                else:
                    substatus = "deviceDataMigrated" if enrollment.migrate_device_data else "deviceDataReset"
                state.update({"assignedHub": hub, "deviceId": device_id, "status": "assigned", "substatus": substatus})
                record["registrationCount"] += 1
                device = self._place_device(
                    store, enrollment, operation, state, assigned, now, self._iot_edge(enrollment)
                )
                if operation.tpm is not None:
                    # the second authenticationKey: the device's IoT Hub key, for the same EK and SRK
                    hub_key = base64.b64decode(device["symmetricKey"]["primaryKey"])
                    blob = authentication_key_blob(
                        operation.tpm.endorsement_key, operation.tpm.storage_root_key, hub_key
                    )
                    attestation["tpm"] = {"authenticationKey": base64.b64encode(blob).decode("ascii")}
            state.update(attestation)
            state["lastUpdatedDateTimeUtc"] = now
            state["etag"] = new_etag()
            if operation.payload is not None:
                state["payload"] = operation.payload
            record["registrationState"] = state
            store.set_record(registration_id, record)
        LOG.info("registration %s -> %s %s", registration_id, state["status"], state.get("assignedHub", ""))
        return state

    def _iot_edge(self, enrollment: Enrollment) -> bool:
        """The enrollment's capabilities.iotEdge: what DPS gives the device identity it creates or updates."""
        if enrollment.group_id is not None:
            record = self.enrollments.get(GROUP, enrollment.group_id)
        else:
            record = self.enrollments.get(INDIVIDUAL, enrollment.registration_id or "")
        return bool(((record or {}).get("capabilities") or {}).get("iotEdge"))

    @staticmethod
    def _place_device(
        store: RegistrationStore,
        enrollment: Enrollment,
        operation: Operation,
        state: dict[str, Any],
        previous: dict[str, Any] | None,
        now: str,
        iot_edge: bool,
    ) -> dict[str, Any]:
        """Create or update the device in its IoT hub; the twin comes from initialTwin only when it is created. The
        hub's own fields (status, etags, twin version: state.with_hub_fields) survive a re-registration, as in Azure;
        the identity's etag changes when its authentication or capabilities do."""
        hub, device_id = state["assignedHub"], state["deviceId"]
        device = store.device(hub, device_id)
        old = None
        if previous and (previous.get("assignedHub"), previous.get("deviceId")) != (hub, device_id):
            old = store.device(previous["assignedHub"], previous["deviceId"])
            store.remove_device(previous["assignedHub"], previous["deviceId"])  # moved: gone from the old hub
        if device is None:
            if old is not None and enrollment.migrate_device_data:
                tags, desired = old.get("tags", {}), old.get("desired", {})
            else:
                tags = copy.deepcopy(enrollment.initial_twin.get("tags", {}))
                desired = copy.deepcopy(enrollment.initial_twin.get("properties", {}).get("desired", {}))
            device = {
                "deviceId": device_id,
                "assignedHub": hub,
                "createdDateTimeUtc": now,
                "registrationCount": (old or {}).get("registrationCount", 0),
                "tags": tags,
                "desired": desired,
            }
        device.update(
            {
                "registrationId": state["registrationId"],
                "attestation": attestation_name(operation.attestation),
                "enrollment": enrollment.label,
                "enrollmentGroupId": enrollment.group_id,
                "lastUpdatedDateTimeUtc": now,
                "registrationCount": device.get("registrationCount", 0) + 1,
                "substatus": state["substatus"],
            }
        )
        certificate = (operation.attestation.get("x509") or {}).get("certificateInfo")
        if certificate:
            device["sha1Thumbprint"] = certificate["sha1Thumbprint"]
            device["sha256Thumbprint"] = certificate["sha256Thumbprint"]
        if operation.tpm is not None and not (device.get("symmetricKey") or {}).get("primaryKey"):
            # a TPM device's hub identity is a SAS one; DPS hands its key to the TPM (kept on re-registration)
            device["symmetricKey"] = {
                name: base64.b64encode(secrets.token_bytes(TPM_KEY_BYTES)).decode("ascii")
                for name in ("primaryKey", "secondaryKey")
            }
        identity = {"capabilities": {"iotEdge": iot_edge}, "authenticationType": authentication_type(device)}
        if any(device.get(name) != value for name, value in identity.items()):
            device.update(identity)
            device["etag"] = hub_etag()
        store.set_device(device)
        return device

    def finalize_due(self) -> None:
        now = time.monotonic()
        with self.lock:
            due = [op for op in self.operations.values() if op.result is None and op.ready_at <= now]
        for operation in due:
            with self.registrations.lock:
                if operation.result is None:
                    operation.result = self._complete(operation)

    @staticmethod
    def _operation_body(operation: Operation) -> dict[str, Any]:
        if operation.result is None:
            return {"operationId": operation.operation_id, "status": "assigning"}
        return {
            "operationId": operation.operation_id,
            "status": operation.result["status"],
            "registrationState": operation.result,
        }

    # --- handlers ------------------------------------------------------------------------------------------
    def register(self, request: Request, params: dict[str, str], device: Attested) -> Response:
        self.finalize_due()
        operation = Operation(
            operation_id=f"4.{secrets.token_hex(8)}.{uuid.uuid4()}",
            registration_id=device.registration_id,
            enrollment=device.enrollment,
            attestation=device.attestation,
            payload=(device.body or {}).get("payload"),
            ready_at=time.monotonic() + self.config.assignment_delay,
            tpm=device.tpm,
        )
        with self.lock:
            self.operations[operation.operation_id] = operation
        api_version = request.query["api-version"][0]
        location = (
            f"/{params['idScope']}/registrations/{urllib.parse.quote(device.registration_id, safe='')}/operations/"
            f"{operation.operation_id}?api-version={api_version}"
        )
        return Response(
            202,
            {"operationId": operation.operation_id, "status": "assigning"},
            {"Retry-After": str(self.config.retry_after), "Location": location},
        )

    def operation(self, request: Request, params: dict[str, str], device: Attested) -> Response:
        self.finalize_due()
        operation_id = params["operationId"]
        with self.lock:
            operation = self.operations.get(operation_id)
        if operation is None or operation.registration_id.lower() != device.registration_id.lower():
            raise ApiError(
                404,
                ERROR_OPERATION_NOT_FOUND,
                f"Operation '{operation_id}' not found for registration '{device.registration_id}'.",
            )
        if operation.result is None:
            return Response(202, self._operation_body(operation), {"Retry-After": str(self.config.retry_after)})
        return Response(200, self._operation_body(operation))

    def status(self, request: Request, params: dict[str, str], device: Attested) -> Response:
        self.finalize_due()
        registration_id = device.registration_id
        record = self.registrations.get(registration_id)
        if record is not None:
            return Response(200, record["registrationState"])
        with self.lock:
            pending = any(
                op.registration_id.lower() == registration_id.lower() and op.result is None
                for op in self.operations.values()
            )
        if pending:
            return Response(200, {"registrationId": registration_id, "status": "assigning"})
        raise ApiError(
            404,
            ERROR_REGISTRATION_NOT_FOUND,
            f"Registration '{registration_id}' not found (it never registered, or its record was deleted).",
        )
