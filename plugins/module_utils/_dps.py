# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Azure IoT Hub Device Provisioning Service (DPS) device REST client, and what every DPS client shares.

Runs on the device with only the Python standard library and ansible.module_utils (DESIGN.md section 4):
request building, SAS tokens, operation polling, and the bounded retry loop (`RetryLoop`) that the service API
client (`_dps_service.py`) uses too. The transport is injectable so that unit tests need no network.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import email.utils
import hashlib
import hmac
import http.client
import json
import math
import re
import ssl
import time
import typing as t
import urllib.error
import urllib.parse

from ansible.module_utils.urls import Request

USER_AGENT = "iotfleet.aziot-dps_register/0.1.0"
DEFAULT_PROVISIONING_HOST = "global.azure-devices-provisioning.net"
API_VERSIONS = ("2019-03-31", "2021-06-01", "2021-10-01")
DEFAULT_API_VERSION = "2021-06-01"
FINAL_STATUSES = ("assigned", "failed", "disabled")
RETRY_AFTER_MIN = 1.0
RETRY_AFTER_MAX = 30.0
# Poll interval when DPS sends no Retry-After (the SDKs use 2 s).
DEFAULT_POLL_INTERVAL = 2.0
_PEM_CERT_RE = re.compile(r"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.DOTALL)
_OID_COMMON_NAME = b"\x55\x04\x03"  # 2.5.4.3
# Short names of the usual subject attributes, as .NET (and so DPS's subjectName) prints them.
_DN_NAMES = {
    b"\x55\x04\x03": "CN",
    b"\x55\x04\x05": "SERIALNUMBER",
    b"\x55\x04\x06": "C",
    b"\x55\x04\x07": "L",
    b"\x55\x04\x08": "S",
    b"\x55\x04\x0a": "O",
    b"\x55\x04\x0b": "OU",
    b"\x09\x92\x26\x89\x93\xf2\x2c\x64\x01\x19": "DC",
    b"\x2a\x86\x48\x86\xf7\x0d\x01\x09\x01": "E",
}


class DpsError(Exception):
    """Every failure of the DPS client: HTTP status, DPS errorCode, message and trackingId when known."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        error_code: int | None = None,
        tracking_id: str | None = None,
        timed_out: bool = False,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.detail = detail if detail is not None else message
        self.message = message
        self.status = status
        self.error_code = error_code
        self.tracking_id = tracking_id
        self.timed_out = timed_out

    def __str__(self) -> str:
        return self.message


class TransportError(Exception):
    """A request that got no HTTP answer (connection refused/reset, timeout). Retryable."""


class CertificateVerifyError(Exception):
    """The server's TLS certificate did not verify. Not retryable."""


class Response:
    """An HTTP answer: status, lower-cased headers and the decoded JSON body (None when not JSON)."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = {key.lower(): value for key, value in headers.items()}
        self.raw = body
        self.json: t.Any = None
        if body:
            try:
                self.json = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                self.json = None


Transport = t.Callable[[str, str, t.Optional[bytes], dict, float], Response]


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


def pem_certificates(pem_text: str) -> list[bytes]:
    """The DER bytes of every certificate in a PEM text, in file order."""
    certificates = []
    for match in _PEM_CERT_RE.finditer(pem_text):
        try:
            certificates.append(base64.b64decode("".join(match.group(1).split()), validate=True))
        except (binascii.Error, ValueError):
            raise ValueError("a certificate block is not valid base64") from None
    return certificates


def thumbprints(der: bytes) -> dict[str, str]:
    """SHA-1 and SHA-256 thumbprints (upper-case hex, as DPS reports them) of a DER certificate."""
    return {
        "sha1": hashlib.sha1(der).hexdigest().upper(),  # noqa: S324 - DPS identifies certificates by SHA-1 too
        "sha256": hashlib.sha256(der).hexdigest().upper(),
    }


def _der_read(data: bytes, offset: int) -> tuple[int, int, int]:
    """Read one DER TLV at offset: return (tag, content start, content end)."""
    tag = data[offset]
    length = data[offset + 1]
    start = offset + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    end = start + length
    if end > len(data):
        raise ValueError("truncated DER")
    return tag, start, end


def _der_children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    children = []
    offset = start
    while offset < end:
        child = _der_read(data, offset)
        children.append(child)
        offset = child[2]
    return children


def _tbs_fields(der: bytes) -> list:
    """The fields of a DER certificate's tbsCertificate after the optional [0] version:
    serialNumber, signature, issuer, validity, subject, ... (raises IndexError/ValueError when malformed)."""
    _tag, start, end = _der_read(der, 0)  # Certificate
    _tag, start, end = _der_children(der, start, end)[0]  # tbsCertificate
    fields = _der_children(der, start, end)
    return fields[1:] if fields[0][0] == 0xA0 else fields


def certificate_common_name(der: bytes) -> str | None:
    """The subject CN of a DER certificate, or None when it has none or cannot be parsed."""
    try:
        # serialNumber, signature, issuer, validity, subject
        _tag, start, end = _tbs_fields(der)[4]
        for _set_tag, set_start, set_end in _der_children(der, start, end):
            for _seq_tag, seq_start, seq_end in _der_children(der, set_start, set_end):
                oid, value = _der_children(der, seq_start, seq_end)[:2]
                if der[oid[1] : oid[2]] == _OID_COMMON_NAME:
                    encoding = "utf-16-be" if value[0] == 0x1E else "utf-8"
                    return der[value[1] : value[2]].decode(encoding)
    except (IndexError, ValueError, UnicodeDecodeError):
        return None
    return None


def _oid_text(encoded: bytes) -> str:
    """Dotted text of a DER-encoded OBJECT IDENTIFIER body."""
    first = encoded[0]
    parts = [str(min(first // 40, 2)), str(first - 40 * min(first // 40, 2))]
    value = 0
    for byte in encoded[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(str(value))
            value = 0
    return "OID." + ".".join(parts)


def certificate_subject(der: bytes) -> str | None:
    """The subject DN of a DER certificate as 'CN=..., O=...' (last RDN first, like DPS), or None when unparseable."""
    try:
        _tag, start, end = _tbs_fields(der)[4]
        names = []
        for _set_tag, set_start, set_end in _der_children(der, start, end):
            for _seq_tag, seq_start, seq_end in _der_children(der, set_start, set_end):
                oid, value = _der_children(der, seq_start, seq_end)[:2]
                encoded_oid = der[oid[1] : oid[2]]
                encoding = "utf-16-be" if value[0] == 0x1E else "utf-8"
                text = der[value[1] : value[2]].decode(encoding)
                names.append(f"{_DN_NAMES.get(encoded_oid) or _oid_text(encoded_oid)}={text}")
    except (IndexError, ValueError, UnicodeDecodeError):
        return None
    return ", ".join(reversed(names))


def _der_time(der: bytes, tag: int, start: int, end: int) -> float:
    text = der[start:end].decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ (RFC 5280: 50-99 -> 19xx)
        year = int(text[:2])
        text = ("19" if year >= 50 else "20") + text
    elif tag != 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise ValueError("not a time")
    if len(text) != 15 or not text.endswith("Z"):
        raise ValueError("unsupported time format")
    return float(calendar.timegm(time.strptime(text[:14], "%Y%m%d%H%M%S")))


def certificate_validity(der: bytes) -> tuple[float, float] | None:
    """(notBefore, notAfter) of a DER certificate as Unix times, or None when it cannot be parsed."""
    try:
        _tag, start, end = _tbs_fields(der)[3]  # serialNumber, signature, issuer, validity
        times = _der_children(der, start, end)
        return _der_time(der, *times[0]), _der_time(der, *times[1])
    except (IndexError, ValueError, UnicodeDecodeError, OverflowError):
        return None


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


# --- retries ------------------------------------------------------------------------------------------------------


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), clamped to [1, 30]; None when absent/bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return min(max(seconds, RETRY_AFTER_MIN), RETRY_AFTER_MAX)


def backoff_delay(attempt: int, retry_after: float | None) -> float:
    """Delay before retry number `attempt` (1-based): Retry-After if given, else 1, 2, 4 ... capped at 30 s."""
    if retry_after is not None:
        return retry_after
    return min(RETRY_AFTER_MAX, float(2 ** (attempt - 1)))


def _seconds(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


class RetryLoop:
    """The one bounded retry loop of every DPS client (device API and service API).

    One overall deadline covers every request a module run sends, the waits between retries and any polling.
    HTTP 429, 5xx and connection errors are retried, waiting Retry-After (clamped to [1, 30] s) or 1, 2, 4 ... s;
    a retry that would end after the deadline is not attempted. Any other answer goes back to the caller, which
    decides what it means. A server certificate that does not verify is never retried.
    """

    def __init__(
        self,
        transport: Transport,
        subject: str,
        timeout: float = 120,
        request_timeout: float = 30,
        log: t.Callable[[str], None] | None = None,
        log_name: str = "dps_register",
        clock: t.Callable[[], float] = time.monotonic,
        wall_clock: t.Callable[[], float] = time.time,
        sleep: t.Callable[[float], None] = time.sleep,
    ) -> None:
        self.transport = transport
        self.subject = subject
        self.timeout = timeout
        self.request_timeout = request_timeout
        self.log = log or (lambda message: None)
        self.log_name = log_name
        self.clock = clock
        self.wall_clock = wall_clock
        self.sleep = sleep
        self.deadline = clock() + timeout
        self.attempts = 0
        self.retries = 0
        self.last_status: str | None = None

    def timeout_error(self, what: str) -> DpsError:
        return DpsError(
            f"{self.subject}: DPS did not finish within timeout={_seconds(self.timeout)}s ({what}; "
            f"{self.attempts} requests, {self.retries} retries); run again later or raise timeout",
            timed_out=True,
        )

    def wait(self, delay: float, what: str) -> None:
        """Sleep `delay` seconds, or raise the timeout error (naming `what`) when that would pass the deadline."""
        if self.clock() + delay >= self.deadline:
            raise self.timeout_error(what)
        self.sleep(delay)

    def send(
        self,
        method: str,
        url: str,
        data: bytes | None,
        headers: t.Callable[[], dict[str, str]],
        action: str,
    ) -> Response:
        """Send one request, retrying 429/5xx/connection errors with backoff inside the overall deadline.

        `headers` is called for every attempt, so that a SAS token is made fresh for each one.
        """
        failures = 0
        while True:
            remaining = self.deadline - self.clock()
            if remaining <= 0:
                raise self.timeout_error(f"time ran out before {action}; last status: {self.last_status}")
            self.attempts += 1
            retry_after = None
            try:
                response = self.transport(method, url, data, headers(), min(self.request_timeout, remaining))
            except CertificateVerifyError as error:
                raise DpsError(
                    f"{self.subject}: the DPS server certificate did not verify ({error}); "
                    "set ca_path to the CA that signed it"
                ) from None
            except TransportError as error:
                reason = f"connection error ({error})"
            else:
                if response.status != 429 and response.status < 500:
                    return response
                reason = f"HTTP {response.status}"
                retry_after = parse_retry_after(response.headers.get("retry-after"), self.wall_clock())
            self.last_status = reason
            failures += 1
            delay = backoff_delay(failures, retry_after)
            if self.clock() + delay >= self.deadline:
                raise self.timeout_error(f"{action} kept failing, last with {reason}")
            self.retries += 1
            self.log(f"{self.log_name} {self.subject}: {action} got {reason}; retry {failures} in {delay:.1f}s")
            self.sleep(delay)


class RetryingClient:
    """What every DPS client has: one RetryLoop for the module run (one deadline), and its request counts."""

    def __init__(self, *retry_args: t.Any, **retry_options: t.Any) -> None:
        """The arguments are RetryLoop's."""
        self.retry = RetryLoop(*retry_args, **retry_options)
        self.wall_clock = self.retry.wall_clock

    @property
    def attempts(self) -> int:
        return self.retry.attempts

    @property
    def retries(self) -> int:
        return self.retry.retries

    def refused(self, response: Response, what: str, kind: type = DpsError, **extra: t.Any) -> DpsError:
        """The error for an answer that refused `what` was asked: '<subject>: <what> failed: HTTP <status>
        (<errorCode>): <message>', with DPS's fields; `kind` and `extra` for a client's own error type."""
        error_code, message, tracking_id = error_fields(response)
        code = f" ({error_code})" if error_code is not None else ""
        return kind(
            f"{self.retry.subject}: {what} failed: HTTP {response.status}{code}: {message}",
            status=response.status,
            error_code=error_code,
            tracking_id=tracking_id,
            detail=message,
            **extra,
        )


def error_fields(response: Response) -> tuple[int | None, str, str | None]:
    """(errorCode, message, trackingId) of a DPS error answer; the message falls back to the raw body."""
    body = response.json if isinstance(response.json, dict) else {}
    error_code = body.get("errorCode")
    try:
        error_code = int(error_code) if error_code is not None else None
    except (TypeError, ValueError):
        error_code = None
    message = body.get("message") or body.get("Message") or response.raw.decode("utf-8", "replace").strip()
    return error_code, message or "no error body", body.get("trackingId")


# --- transport ----------------------------------------------------------------------------------------------------


def urls_transport(
    client_cert: str | None = None,
    client_key: str | None = None,
    ca_path: str | None = None,
    validate_certs: bool = True,
    user_agent: str = USER_AGENT,
) -> Transport:
    """A transport built on ansible.module_utils.urls.Request (TLS client certificate, CA path, timeouts)."""
    request = Request(
        validate_certs=validate_certs,
        client_cert=client_cert,
        client_key=client_key,
        ca_path=ca_path,
        http_agent=user_agent,
        follow_redirects="none",
        use_proxy=True,
    )

    def send(method: str, url: str, data: bytes | None, headers: dict, timeout: float) -> Response:
        try:
            response = request.open(method, url, data=data, headers=headers, timeout=timeout)
            return Response(response.status, dict(response.headers.items()), response.read())
        except urllib.error.HTTPError as error:
            body = b""
            try:
                body = error.read()
            except (OSError, http.client.HTTPException):
                body = b""
            return Response(error.code, dict(error.headers.items()) if error.headers else {}, body)
        except urllib.error.URLError as error:
            reason = error.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise CertificateVerifyError(str(reason.verify_message or reason)) from None
            raise TransportError(str(reason)) from None
        except ssl.SSLCertVerificationError as error:
            raise CertificateVerifyError(str(error.verify_message or error)) from None
        except (OSError, http.client.HTTPException) as error:
            # connection reset/refused, RemoteDisconnected, read timeouts, TLS alerts
            raise TransportError(f"{type(error).__name__}: {error}") from None

    return send


# --- the client ---------------------------------------------------------------------------------------------------


class DpsClient(RetryingClient):
    """DPS device API for one registration: status lookup, register, poll; bounded by one overall deadline."""

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


def check_connection_options(module: t.Any, subject: str) -> None:
    """Fail the module (one line) when the shared connection options are unusable; warn when the DPS server
    certificate will not be verified."""
    for option in ("timeout", "request_timeout"):
        if module.params[option] <= 0:
            module.fail_json(msg=f"{subject}: {option} must be a positive number of seconds")
    if not module.params["validate_certs"]:
        module.warn("validate_certs=false: the DPS server certificate is not verified; use only for tests")


def fail_with_counts(module: t.Any, client: t.Any, message: str, error: DpsError | None = None, **extra: t.Any) -> None:
    """Fail the module with the request counts of `client`, what DPS said in `error` (HTTP status, errorCode,
    trackingId) and the fields of `extra` that are set. Every DPS module fails through here."""
    if error is not None:
        extra.update(http_status=error.status, error_code=error.error_code, tracking_id=error.tracking_id)
    fields = {key: value for key, value in extra.items() if value is not None}
    module.fail_json(msg=message, attempts=client.attempts, retries=client.retries, **fields)
