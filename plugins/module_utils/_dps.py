# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Azure IoT Hub Device Provisioning Service (DPS) device REST client, and what every DPS client shares.

Runs on the device with only the Python standard library and ansible.module_utils (DESIGN.md section 4): SAS
tokens, request building, operation polling, DPS's errors explained in one line, and the options every DPS module
takes. Requests go through `_http.RetryLoop`, the bounded retry loop the service API client (`_dps_service.py`)
uses too; certificate facts come from `_x509_der.py`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import typing as t
import urllib.parse

from ansible_collections.iotfleet.aziot.plugins.module_utils._http import (
    ApiError,
    Response,
    RetryingClient,
    Transport,
    parse_retry_after,
)

USER_AGENT = "iotfleet.aziot-dps_register/0.1.0"
DEFAULT_PROVISIONING_HOST = "global.azure-devices-provisioning.net"
API_VERSIONS = ("2019-03-31", "2021-06-01", "2021-10-01")
DEFAULT_API_VERSION = "2021-06-01"
FINAL_STATUSES = ("assigned", "failed", "disabled")
# Poll interval when DPS sends no Retry-After (the SDKs use 2 s).
DEFAULT_POLL_INTERVAL = 2.0


class DpsError(ApiError):
    """Every failure of a DPS client: HTTP status, DPS errorCode, message and trackingId when known."""


# --- host and key material ------------------------------------------------------------------------------------


def split_provisioning_host(provisioning_host: str) -> tuple[str, int]:
    """Split 'host' or 'host:port' (an 'https://' prefix is tolerated) into (host, port)."""
    value = provisioning_host.strip()
    if value.lower().startswith("https://"):
        value = value[len("https://") :]
    value = value.rstrip("/")
    if not value or "/" in value or "://" in value:
        raise ValueError(f"provisioning_host {provisioning_host!r} must be a host name or host:port")
    host, sep, port_text = value.rpartition(":")
    if sep and not host.endswith("]") and ":" in host:
        # bare IPv6 address without brackets and without a port
        return value, 443
    if not sep:
        return value, 443
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"provisioning_host {provisioning_host!r} has an invalid port {port_text!r}")
    return host, int(port_text)


def decode_key(key: str, option: str) -> bytes:
    """Base64-decode a DPS key; raise ValueError naming the option when it is not base64."""
    try:
        decoded = base64.b64decode(key.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{option} is not valid base64 (copy the key exactly as DPS shows it)") from None
    if not decoded:
        raise ValueError(f"{option} is empty")
    return decoded


def derive_device_key(group_key: str, registration_id: str) -> str:
    """Device key of a symmetric-key enrollment group: base64(HMAC-SHA256(b64decode(group key), registration id))."""
    digest = hmac.new(decode_key(group_key, "group_key"), registration_id.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def sas_token(id_scope: str, registration_id: str, device_key: str, expiry: int) -> str:
    """The DPS device SAS token (Authorization header value).

    Signs the url-encoded resource, as the Azure IoT Python SDK does
    (azure-iot-sdk-python, azure-iot-device/azure/iot/device/common/auth/sastoken.py, RenewableSasToken._build_token:
    ``url_encoded_uri = urllib.parse.quote(self._uri, safe="")``, ``message = url_encoded_uri + "\\n" + expiry``,
    signature quoted with ``safe=""``, key name ``registration`` for DPS).
    """
    resource = urllib.parse.quote(f"{id_scope}/registrations/{registration_id}", safe="")
    message = f"{resource}\n{int(expiry)}".encode("utf-8")
    signature = base64.b64encode(hmac.new(decode_key(device_key, "symmetric key"), message, hashlib.sha256).digest())
    encoded_signature = urllib.parse.quote(signature.decode("ascii"), safe="")
    return f"SharedAccessSignature sr={resource}&sig={encoded_signature}&se={int(expiry)}&skn=registration"


def is_already_assigned(state: dict | None, attestation: str, leaf_thumbprints: dict[str, str] | None) -> bool:
    """Whether a status-lookup result shows this device assigned with the attestation we would register with."""
    if not isinstance(state, dict) or state.get("status") != "assigned":
        return False
    if attestation == "x509":
        certificate_info = (state.get("x509") or {}).get("certificateInfo") or {}
        if not leaf_thumbprints:
            return False
        for algorithm, field in (("sha1", "sha1Thumbprint"), ("sha256", "sha256Thumbprint")):
            reported = certificate_info.get(field)
            if reported and reported.replace(":", "").upper() == leaf_thumbprints[algorithm]:
                return True
        return False
    return isinstance(state.get("symmetricKey"), dict)


# --- what the controller learned in bulk, and the device's provisioning marker -------------------------------------

# The provisioning marker's format version (the file dps_register writes on the device after a registration).
MARKER_VERSION = 1


def marker_content(registration_id: str, attestation: str, leaf_sha256: str | None, state: dict) -> dict[str, t.Any]:
    """The provisioning marker for a device DPS shows assigned: what it registered with, where DPS put it, and DPS's
    answer (its DeviceRegistrationResult, which holds no secret), so that a run that sends nothing can return it."""
    return {
        "version": MARKER_VERSION,
        "registration_id": registration_id,
        "attestation": attestation,
        "sha256_thumbprint": leaf_sha256,
        "assigned_hub": state.get("assignedHub"),
        "device_id": state.get("deviceId"),
        "registration_state": state,
    }


def parse_marker(text: str | None, registration_id: str) -> dict | None:
    """The marker in `text`, or None when there is none, it does not parse, or it is another device's."""
    if not text:
        return None
    try:
        marker = json.loads(text)
    except ValueError:
        return None
    if not isinstance(marker, dict) or marker.get("version") != MARKER_VERSION:
        return None
    if str(marker.get("registration_id") or "").lower() != registration_id.lower():
        return None
    return marker


def registration_reasons(
    known: dict,
    marker: dict | None,
    attestation: str,
    leaf_sha256: str | None,
) -> list[str]:
    """Why the device must register, from what DPS knows of it (`known`: the registration_state option, learned in
    bulk by the controller) and its provisioning marker. [] when neither shows a reason; without a marker the
    caller still has to look the registration up (nothing else tells which certificate DPS assigned it with)."""
    status = known.get("status")
    if not status:
        return ["DPS has no registration record for it"]
    if status != "assigned":
        return [f"DPS shows its registration {status}"]
    hub = known.get("assigned_hub") or ""
    allowed = [name.lower() for name in known.get("enrollment_iot_hubs") or []]
    reasons = []
    if allowed and hub.lower() not in allowed:
        reasons.append(f"DPS assigned it to {hub or 'no hub'}, which its enrollment no longer lists")
    if marker is None:
        return reasons
    if marker.get("attestation") != attestation:
        reasons.append(f"it registered with {marker.get('attestation')} attestation and now uses {attestation}")
    elif attestation == "x509" and (marker.get("sha256_thumbprint") or "") != (leaf_sha256 or ""):
        reasons.append("its certificate changed since it registered (renewed or replaced)")
    if (marker.get("assigned_hub") or "").lower() != hub.lower() or (marker.get("device_id") or "") != (
        known.get("device_id") or ""
    ):
        reasons.append(
            f"DPS shows it as {known.get('device_id')} on {hub}, not {marker.get('device_id')} on "
            f"{marker.get('assigned_hub')} where it registered (reassigned)"
        )
    return reasons


# --- the client ---------------------------------------------------------------------------------------------------


class DpsClient(RetryingClient):
    """DPS device API for one registration: status lookup, register, poll; bounded by one overall deadline."""

    service = "DPS"
    error_type = DpsError

    def __init__(
        self,
        id_scope: str,
        registration_id: str,
        transport: Transport,
        provisioning_host: str = DEFAULT_PROVISIONING_HOST,
        api_version: str = DEFAULT_API_VERSION,
        device_key: str | None = None,
        sas_ttl: int = 3600,
        **retry_options: t.Any,
    ) -> None:
        """`retry_options` are RetryLoop's: timeout, request_timeout, log, clock, wall_clock, sleep."""
        host, port = split_provisioning_host(provisioning_host)
        self.base_url = f"https://{host}" if port == 443 else f"https://{host}:{port}"
        self.id_scope = id_scope
        self.registration_id = registration_id
        self.api_version = api_version
        self.device_key = device_key
        self.sas_ttl = sas_ttl
        super().__init__(transport, registration_id, log_name="dps_register", **retry_options)

    @property
    def deadline(self) -> float:
        return self.retry.deadline

    @property
    def last_status(self) -> str | None:
        return self.retry.last_status

    @last_status.setter
    def last_status(self, value: str | None) -> None:
        self.retry.last_status = value

    def _url(self, suffix: str) -> str:
        scope = urllib.parse.quote(self.id_scope, safe="")
        registration = urllib.parse.quote(self.registration_id, safe=":")
        version = urllib.parse.quote(self.api_version, safe="")
        return f"{self.base_url}/{scope}/registrations/{registration}{suffix}?api-version={version}"

    def _headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        if self.device_key is not None:
            expiry = int(self.wall_clock()) + int(self.sas_ttl)
            headers["Authorization"] = sas_token(self.id_scope, self.registration_id, self.device_key, expiry)
        return headers

    def request(self, method: str, suffix: str, body: dict | None = None) -> Response:
        """Send one request through the shared retry loop (429/5xx/connection errors retried within the deadline)."""
        data = json.dumps(body).encode("utf-8") if body is not None else None
        action = {"": "status lookup", "/register": "register"}.get(suffix, "operation status")
        return self.retry.send(method, self._url(suffix), data, self._headers, action)

    def status_lookup(self) -> dict | None:
        """The device's registration state (DeviceRegistrationResult), or None when DPS has no registration."""
        response = self.request("POST", "", {"registrationId": self.registration_id})
        if response.status == 404:
            return None
        if response.status != 200 or not isinstance(response.json, dict):
            raise self.refused(response, "status lookup")
        return response.json

    def register(self, payload: dict | None = None) -> dict:
        """PUT register, then poll the operation until assigned/failed/disabled. Returns the operation status."""
        body: dict[str, t.Any] = {"registrationId": self.registration_id}
        if payload is not None:
            body["payload"] = payload
        response = self.request("PUT", "/register", body)
        if response.status not in (200, 202) or not isinstance(response.json, dict):
            raise self.refused(response, "register")
        operation = response.json
        while True:
            status = operation.get("status")
            state = operation.get("registrationState")
            if status is None and isinstance(state, dict):
                status = state.get("status")
            self.last_status = status
            if status in FINAL_STATUSES:
                return operation
            operation_id = operation.get("operationId")
            if not operation_id:
                raise DpsError(
                    f"{self.registration_id}: DPS answered register with status {status!r} and no operationId",
                    status=response.status,
                )
            delay = parse_retry_after(response.headers.get("retry-after"), self.wall_clock())
            delay = DEFAULT_POLL_INTERVAL if delay is None else delay
            self.retry.wait(delay, f"operation {operation_id} still {status}")
            response = self.request("GET", f"/operations/{urllib.parse.quote(operation_id, safe='')}")
            if response.status not in (200, 202) or not isinstance(response.json, dict):
                raise self.refused(response, "operation status")
            previous_id = operation_id
            operation = response.json
            operation.setdefault("operationId", previous_id)


# --- error explanations -------------------------------------------------------------------------------------------


def explain_error(
    error: DpsError,
    registration_id: str,
    attestation: str,
    chain_length: int | None = None,
) -> str:
    """One line telling the user what DPS refused and how to fix it."""
    if error.timed_out or error.status is None:
        return error.message
    code = f" ({error.error_code})" if error.error_code is not None else ""
    detail = error.detail
    lowered = detail.lower()
    if "disabled" in lowered:
        return (
            f"{registration_id}: enrollment is disabled in DPS{code}: {detail}; enable the enrollment "
            "(or the device's registration)"
        )
    if error.status == 401:
        if attestation == "x509":
            if chain_length == 1:
                return (
                    f"{registration_id}: DPS refused the certificate{code}: the chain you sent stops at the device "
                    "certificate; send the full chain (device + intermediate) in client_cert"
                )
            return (
                f"{registration_id}: DPS refused the certificate{code}: {detail}; check that an enrollment exists "
                "for this device or for a verified CA in client_cert's chain"
            )
        return (
            f"{registration_id}: DPS refused the SAS token{code}: {detail}; check symmetric_key/group_key against "
            "the enrollment, and the device clock"
        )
    if error.status == 404:
        return (
            f"{registration_id}: DPS found no enrollment{code}: {detail}; check id_scope and that an enrollment "
            "exists for this device"
        )
    if error.error_code == 400004 or "api-version" in lowered or "api version" in lowered:
        return f"{registration_id}: DPS rejected api_version{code}: {detail}; use one of {', '.join(API_VERSIONS)}"
    return error.message


# --- shared module options ----------------------------------------------------------------------------------------


def dps_connection_argument_spec() -> dict[str, dict[str, t.Any]]:
    """Options of every module that talks to DPS; documented once in the doc fragment iotfleet.aziot.dps."""
    return dict(
        ca_path=dict(type="path"),
        validate_certs=dict(type="bool", default=True),
        timeout=dict(type="int", default=120),
        request_timeout=dict(type="int", default=30),
    )


def check_connection_options(module: t.Any, subject: str, service: str = "DPS") -> None:
    """Fail the module (one line) when the shared connection options are unusable; warn when the `service`'s
    server certificate will not be verified. The IoT Hub modules (`_iothub.py`) use it too."""
    for option in ("timeout", "request_timeout"):
        if module.params[option] <= 0:
            module.fail_json(msg=f"{subject}: {option} must be a positive number of seconds")
    if not module.params["validate_certs"]:
        module.warn(f"validate_certs=false: the {service} server certificate is not verified; use only for tests")


def fail_with_counts(module: t.Any, client: t.Any, message: str, error: DpsError | None = None, **extra: t.Any) -> None:
    """Fail the module with the request counts of `client`, what DPS said in `error` (HTTP status, errorCode,
    trackingId) and the fields of `extra` that are set. Every DPS module fails through here."""
    if error is not None:
        extra.update(http_status=error.status, error_code=error.error_code, tracking_id=error.tracking_id)
    fields = {key: value for key, value in extra.items() if value is not None}
    module.fail_json(msg=message, requests=client.attempts, retried_requests=client.retries, **fields)
