"""The HTTPS server: mutual TLS with pyOpenSSL, DPS device API routes, admin routes, faults."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import math
import secrets
import socket
import struct
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from OpenSSL import SSL

from . import SUPPORTED_API_VERSIONS
from .config import REGISTRATION_ID_RE, Config, ConfigError, Enrollment, Fault, parse_fault
from .pki import certificate_info, common_name, iso_utc, match_group, thumbprints, utcnow, validity_problem
from .sas import SasError, check_token, derive_device_key, parse_sas, signature_matches
from .state import RegistrationStore, device_list

LOG = logging.getLogger("dps_emulator")

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024
IDLE_TIMEOUT = 10.0
REASONS = {
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
}

# errorCode values. 400004 and 401002 are seen from real DPS; the others follow DPS's <status><3 digits> pattern
# and are the emulator's own choice (see docs/dps_emulator.md).
ERROR_BAD_REQUEST = 400001
ERROR_API_VERSION = 400004
ERROR_UNAUTHORIZED = 401002
ERROR_NOT_FOUND = 404001
ERROR_REGISTRATION_NOT_FOUND = 404201
ERROR_OPERATION_NOT_FOUND = 404202
ERROR_METHOD = 405001
ERROR_THROTTLED = 429001
ERROR_INTERNAL = 500001


class Drop(Exception):
    """Close the connection without answering (fault injection)."""


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    leaf: x509.Certificate | None
    presented: list[x509.Certificate]
    peer: str


@dataclass
class Operation:
    operation_id: str
    registration_id: str
    enrollment: Enrollment
    attestation: dict[str, Any]
    payload: Any
    ready_at: float
    result: dict[str, Any] | None = None


def error(status: int, code: int, message: str, headers: dict[str, str] | None = None, **info: Any) -> Response:
    body = {
        "errorCode": code,
        "trackingId": str(uuid.uuid4()),
        "message": message,
        "info": info or None,
        "timestampUtc": iso_utc(utcnow()),
    }
    return Response(status, body, headers or {})


class Emulator:
    """All DPS behaviour; the network layer (`serve`) feeds it `Request`s."""

    def __init__(self, config: Config, state_dir: Path) -> None:
        self.config = config
        self.store = RegistrationStore(state_dir)
        self.lock = threading.Lock()
        self.operations: dict[str, Operation] = {}
        self.faults: list[Fault] = list(config.faults)
        self.register_times: collections.deque[float] = collections.deque()

    # --- faults and quota ----------------------------------------------------------------------------------
    def _apply_faults(self, endpoint: str, registration_id: str) -> Response | None:
        delay = 0.0
        action: Fault | None = None
        with self.lock:
            for fault in self.faults:
                if fault.endpoint not in (None, endpoint):
                    continue
                if fault.registration_id not in (None, registration_id):
                    continue
                if fault.type != "slow" and action is not None:
                    continue
                if fault.count is not None:
                    fault.count -= 1
                if fault.type == "slow":
                    delay += fault.seconds
                else:
                    action = fault
            self.faults = [fault for fault in self.faults if fault.count is None or fault.count > 0]
        if delay:
            time.sleep(delay)
        if action is None:
            return None
        if action.type == "drop":
            raise Drop
        if action.type == "throttle":
            return error(
                429,
                ERROR_THROTTLED,
                "Operations are being throttled by the service (injected fault).",
                {"Retry-After": str(action.retry_after)},
            )
        return error(action.status, ERROR_INTERNAL, "Internal server error (injected fault).")

    def _rate_limited(self) -> Response | None:
        limit = self.config.rate_limit_per_minute
        if not limit:
            return None
        now = time.monotonic()
        with self.lock:
            while self.register_times and now - self.register_times[0] >= 60:
                self.register_times.popleft()
            if len(self.register_times) >= limit:
                wait = max(1, math.ceil(60 - (now - self.register_times[0])))
                return error(
                    429,
                    ERROR_THROTTLED,
                    f"Registration quota exceeded ({limit} per minute); retry after {wait} s.",
                    {"Retry-After": str(wait)},
                )
            self.register_times.append(now)
        return None

    # --- attestation ---------------------------------------------------------------------------------------
    def _authenticate(self, request: Request, registration_id: str) -> tuple[Enrollment, dict[str, Any]] | Response:
        """Return (enrollment, attestation facts) or a 401 response."""
        authorization = request.headers.get("authorization", "")
        if authorization:
            return self._authenticate_sas(authorization, registration_id)
        if request.leaf is not None:
            return self._authenticate_x509(request.leaf, request.presented, registration_id)
        return error(
            401,
            ERROR_UNAUTHORIZED,
            f"Registration '{registration_id}': no client certificate and no SharedAccessSignature "
            "Authorization header; the request is not authenticated.",
        )

    def _refuse(self, registration_id: str, reason: str) -> Response:
        LOG.info("refused %s: %s", registration_id, reason)
        return error(401, ERROR_UNAUTHORIZED, f"Registration '{registration_id}' refused: {reason}")

    def _authenticate_x509(
        self, leaf: x509.Certificate, presented: list[x509.Certificate], registration_id: str
    ) -> tuple[Enrollment, dict[str, Any]] | Response:
        cn = common_name(leaf)
        if cn != registration_id:
            return self._refuse(
                registration_id,
                f"certificate CN {cn!r} does not match the registration id; the CN must equal the registration id",
            )
        problem = validity_problem(leaf, "device certificate")
        if problem:
            return self._refuse(registration_id, problem)
        sha1, sha256 = thumbprints(leaf)
        for enrollment in self.config.individuals:
            if enrollment.attestation == "x509" and {sha1, sha256} & set(enrollment.thumbprints):
                if enrollment.registration_id != registration_id:
                    return self._refuse(
                        registration_id,
                        f"the certificate belongs to {enrollment.label}, not to this registration id",
                    )
                attestation = {
                    "x509": {
                        "certificateInfo": certificate_info(leaf),
                        "enrollmentGroupId": None,
                        "signingCertificateInfo": None,
                    }
                }
                return enrollment, attestation
        match = match_group(leaf, presented, self.config.groups)
        if match.group is None:
            return self._refuse(registration_id, match.problem or "no enrollment matches the certificate")
        attestation = {
            "x509": {
                "certificateInfo": certificate_info(leaf),
                "enrollmentGroupId": match.group.group_id,
                "signingCertificateInfo": certificate_info(match.signing_cert) if match.signing_cert else None,
            }
        }
        return match.group, attestation

    def _authenticate_sas(self, header: str, registration_id: str) -> tuple[Enrollment, dict[str, Any]] | Response:
        try:
            token = parse_sas(header)
            check_token(token, self.config.id_scope, registration_id)
        except SasError as exc:
            return self._refuse(registration_id, str(exc))
        for enrollment in self.config.individuals:
            if enrollment.attestation == "symmetric_key" and enrollment.registration_id == registration_id:
                if any(signature_matches(token, key) for key in enrollment.keys):
                    return enrollment, {"symmetricKey": {"enrollmentGroupId": None}}
                return self._refuse(
                    registration_id, f"SAS signature does not verify with the key of {enrollment.label}"
                )
        for enrollment in self.config.groups:
            if enrollment.attestation != "symmetric_key":
                continue
            for group_key in enrollment.keys:
                if signature_matches(token, derive_device_key(group_key, registration_id)):
                    return enrollment, {"symmetricKey": {"enrollmentGroupId": enrollment.group_id}}
        return self._refuse(
            registration_id,
            "SAS signature does not verify with any symmetric-key enrollment (wrong key, or the device key was not "
            "derived from the group key with HMAC-SHA256 over the registration id)",
        )

    # --- assignment ----------------------------------------------------------------------------------------
    def _allocate(self, enrollment: Enrollment, registration_id: str) -> str:
        if enrollment.iot_hub:
            return enrollment.iot_hub
        hubs = sorted(self.config.linked_hubs)
        digest = hashlib.sha256(registration_id.encode("utf-8")).digest()
        return hubs[int.from_bytes(digest[:8], "big") % len(hubs)]

    def _complete(self, operation: Operation) -> dict[str, Any]:
        """Turn a due operation into its final registrationState (and persist it)."""
        registration_id = operation.registration_id
        enrollment = operation.enrollment
        now = iso_utc(utcnow())
        existing = self.store.get(registration_id)
        previous = existing["registrationState"] if existing else None
        state: dict[str, Any] = {
            "registrationId": registration_id,
            "createdDateTimeUtc": previous.get("createdDateTimeUtc", now) if previous else now,
        }
        record: dict[str, Any] = {
            "attestation": "x509" if "x509" in operation.attestation else "symmetricKey",
            "enrollment": enrollment.label,
            "enrollmentGroupId": enrollment.group_id,
            "registrationCount": existing.get("registrationCount", 0) if existing else 0,
        }
        if not enrollment.enabled:
            state.update({"status": "disabled", "errorMessage": f"{enrollment.label} is disabled"})
        else:
            hub = self._allocate(enrollment, registration_id)
            device_id = enrollment.device_id or registration_id
            if previous and previous.get("status") == "assigned" and previous.get("assignedHub") == hub:
                substatus = previous.get("substatus") or "initialAssignment"
            else:
                substatus = "initialAssignment"
            state.update({"assignedHub": hub, "deviceId": device_id, "status": "assigned", "substatus": substatus})
            record["registrationCount"] += 1
        state.update(operation.attestation)
        state["lastUpdatedDateTimeUtc"] = now
        state["etag"] = '"' + secrets.token_hex(8) + '"'
        if operation.payload is not None:
            state["payload"] = operation.payload
        record["registrationState"] = state
        self.store.put(registration_id, record)
        LOG.info("registration %s -> %s %s", registration_id, state["status"], state.get("assignedHub", ""))
        return state

    def finalize_due(self) -> None:
        now = time.monotonic()
        with self.lock:
            due = [op for op in self.operations.values() if op.result is None and op.ready_at <= now]
        for operation in due:
            with self.store.lock:
                if operation.result is None:
                    operation.result = self._complete(operation)

    def _operation_body(self, operation: Operation) -> dict[str, Any]:
        if operation.result is None:
            return {"operationId": operation.operation_id, "status": "assigning"}
        return {
            "operationId": operation.operation_id,
            "status": operation.result["status"],
            "registrationState": operation.result,
        }

    # --- routes --------------------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        if request.path.startswith("/_emulator/") or request.path == "/_emulator":
            return self._admin(request)
        segments = [urllib.parse.unquote(part) for part in request.path.strip("/").split("/")]
        endpoint = None
        if len(segments) == 4 and segments[1] == "registrations" and segments[3] == "register":
            endpoint, allowed = "register", "PUT"
        elif len(segments) == 5 and segments[1] == "registrations" and segments[3] == "operations":
            endpoint, allowed = "operation", "GET"
        elif len(segments) == 3 and segments[1] == "registrations":
            endpoint, allowed = "status", "POST"
        if endpoint is None:
            return error(404, ERROR_NOT_FOUND, f"No DPS resource at {request.path}.")
        if request.method != allowed:
            return error(405, ERROR_METHOD, f"{request.method} is not allowed on {request.path}; use {allowed}.")
        api_versions = request.query.get("api-version", [])
        if not api_versions or api_versions[0] not in SUPPORTED_API_VERSIONS:
            given = api_versions[0] if api_versions else "(none)"
            return error(
                400,
                ERROR_API_VERSION,
                f"The api-version query parameter {given!r} is not supported; use one of "
                f"{', '.join(SUPPORTED_API_VERSIONS)}.",
            )
        id_scope, registration_id = segments[0], segments[2]
        fault = self._apply_faults(endpoint, registration_id)
        if fault is not None:
            return fault
        if id_scope != self.config.id_scope:
            return error(401, ERROR_UNAUTHORIZED, f"ID scope '{id_scope}' is not known to this provisioning service.")
        if not REGISTRATION_ID_RE.match(registration_id):
            return error(
                400,
                ERROR_BAD_REQUEST,
                f"Registration id {registration_id!r} is invalid: use 1-128 letters, digits and '-._:', ending with "
                "a letter, digit or '-'.",
            )
        body: Any = None
        if endpoint in ("register", "status"):
            try:
                body = json.loads(request.body.decode("utf-8")) if request.body.strip() else {}
            except (UnicodeDecodeError, ValueError):
                return error(400, ERROR_BAD_REQUEST, "The request body is not valid JSON.")
            if not isinstance(body, dict):
                return error(400, ERROR_BAD_REQUEST, "The request body must be a JSON object.")
            body_id = body.get("registrationId")
            if body_id is not None and body_id != registration_id:
                return error(
                    400,
                    ERROR_BAD_REQUEST,
                    f"registrationId {body_id!r} in the body does not match {registration_id!r} in the URL.",
                )
        if endpoint == "register":
            limited = self._rate_limited()
            if limited is not None:
                return limited
        authenticated = self._authenticate(request, registration_id)
        if isinstance(authenticated, Response):
            return authenticated
        enrollment, attestation = authenticated
        self.finalize_due()
        if endpoint == "register":
            return self._register(id_scope, registration_id, enrollment, attestation, body, api_versions[0])
        if endpoint == "operation":
            return self._operation(registration_id, segments[4])
        return self._status(registration_id)

    def _register(
        self,
        id_scope: str,
        registration_id: str,
        enrollment: Enrollment,
        attestation: dict[str, Any],
        body: dict[str, Any],
        api_version: str,
    ) -> Response:
        operation = Operation(
            operation_id=f"4.{secrets.token_hex(8)}.{uuid.uuid4()}",
            registration_id=registration_id,
            enrollment=enrollment,
            attestation=attestation,
            payload=body.get("payload"),
            ready_at=time.monotonic() + self.config.assignment_delay,
        )
        with self.lock:
            self.operations[operation.operation_id] = operation
        location = (
            f"/{id_scope}/registrations/{urllib.parse.quote(registration_id, safe='')}/operations/"
            f"{operation.operation_id}?api-version={api_version}"
        )
        return Response(
            202,
            {"operationId": operation.operation_id, "status": "assigning"},
            {"Retry-After": str(self.config.retry_after), "Location": location},
        )

    def _operation(self, registration_id: str, operation_id: str) -> Response:
        with self.lock:
            operation = self.operations.get(operation_id)
        if operation is None or operation.registration_id != registration_id:
            return error(
                404,
                ERROR_OPERATION_NOT_FOUND,
                f"Operation '{operation_id}' not found for registration '{registration_id}'.",
            )
        if operation.result is None:
            return Response(202, self._operation_body(operation), {"Retry-After": str(self.config.retry_after)})
        return Response(200, self._operation_body(operation))

    def _status(self, registration_id: str) -> Response:
        record = self.store.get(registration_id)
        if record is not None:
            return Response(200, record["registrationState"])
        with self.lock:
            pending = any(
                op.registration_id == registration_id and op.result is None for op in self.operations.values()
            )
        if pending:
            return Response(200, {"registrationId": registration_id, "status": "assigning"})
        return error(
            404, ERROR_REGISTRATION_NOT_FOUND, f"Registration '{registration_id}' not found (it never registered)."
        )

    def _admin(self, request: Request) -> Response:
        self.finalize_due()
        route = (request.method, request.path.rstrip("/"))
        if route == ("GET", "/_emulator/devices"):
            return Response(200, device_list(self.store.snapshot()))
        if route == ("GET", "/_emulator/registrations"):
            return Response(200, self.store.snapshot())
        if route == ("DELETE", "/_emulator/registrations"):
            self.store.clear()
            return Response(200, {})
        if route == ("GET", "/_emulator/faults"):
            return Response(200, self._fault_list())
        if route == ("DELETE", "/_emulator/faults"):
            with self.lock:
                self.faults = []
            return Response(200, [])
        if route == ("POST", "/_emulator/faults"):
            try:
                body = json.loads(request.body.decode("utf-8") or "null")
            except (UnicodeDecodeError, ValueError):
                return error(400, ERROR_BAD_REQUEST, "The request body is not valid JSON.")
            entries = body.get("faults") if isinstance(body, dict) and "faults" in body else body
            if isinstance(entries, dict):
                entries = [entries]
            if not isinstance(entries, list):
                return error(400, ERROR_BAD_REQUEST, 'POST a fault object, a list of them, or {"faults": [...]}.')
            try:
                faults = [parse_fault(entry, f"faults[{index}]") for index, entry in enumerate(entries)]
            except ConfigError as exc:
                return error(400, ERROR_BAD_REQUEST, str(exc))
            with self.lock:
                self.faults.extend(faults)
            return Response(200, self._fault_list())
        if route == ("GET", "/_emulator/health"):
            return Response(200, {"status": "ok", "idScope": self.config.id_scope})
        return error(404, ERROR_NOT_FOUND, f"No emulator admin resource {request.method} {request.path}.")

    def _fault_list(self) -> list[dict[str, Any]]:
        with self.lock:
            return [fault.to_dict() for fault in self.faults]


# --- network layer -------------------------------------------------------------------------------------------
def make_context(cert_file: str, key_file: str) -> SSL.Context:
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.use_certificate_chain_file(cert_file)
    context.use_privatekey_file(key_file)
    context.check_privatekey()
    # Ask for a client certificate but accept anything (or nothing): attestation is checked in `Emulator`,
    # which needs the chain exactly as presented.
    context.set_verify(SSL.VERIFY_PEER, lambda *_args: True)
    context.set_session_id(b"dps-emulator")
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    context.set_options(SSL.OP_NO_TICKET)
    return context


class _Reader:
    def __init__(self, connection: SSL.Connection) -> None:
        self.connection = connection
        self.buffer = b""

    def _fill(self) -> bool:
        try:
            data = self.connection.recv(65536)
        except SSL.ZeroReturnError:
            return False
        except (SSL.SysCallError, SSL.WantReadError):
            return False
        if not data:
            return False
        self.buffer += data
        return True

    def read_until(self, marker: bytes, limit: int) -> bytes | None:
        while marker not in self.buffer:
            if len(self.buffer) > limit or not self._fill():
                return None
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def read_exact(self, size: int) -> bytes | None:
        while len(self.buffer) < size:
            if not self._fill():
                return None
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


def _read_request(reader: _Reader) -> tuple[str, str, dict[str, str], bytes] | Response | None:
    head = reader.read_until(b"\r\n\r\n", MAX_HEADER_BYTES)
    if head is None:
        return None
    lines = head.decode("iso-8859-1").split("\r\n")
    try:
        method, target, _version = lines[0].split(" ", 2)
    except ValueError:
        return error(400, ERROR_BAD_REQUEST, "Malformed HTTP request line.")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    # Content-Encoding: utf-8 (sent by some DPS clients) names a charset, not a compression: ignored on purpose.
    if headers.get("expect", "").lower() == "100-continue":
        reader.connection.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size_line = reader.read_until(b"\r\n", 1024)
            if size_line is None:
                return None
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                reader.read_until(b"\r\n", MAX_HEADER_BYTES)
                break
            chunk = reader.read_exact(size + 2)
            if chunk is None:
                return None
            body += chunk[:-2]
            if len(body) > MAX_BODY_BYTES:
                return error(413, ERROR_BAD_REQUEST, "Request body too large.")
        return method, target, headers, body
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit():
        return error(400, ERROR_BAD_REQUEST, "Invalid Content-Length.")
    length = int(length_text)
    if length > MAX_BODY_BYTES:
        return error(413, ERROR_BAD_REQUEST, "Request body too large.")
    body = reader.read_exact(length) if length else b""
    if body is None:
        return None
    return method, target, headers, body


def _encode_response(response: Response, keep_alive: bool) -> bytes:
    payload = json.dumps(response.body).encode("utf-8")
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "Content-Length": str(len(payload)),
        "Connection": "keep-alive" if keep_alive else "close",
        **response.headers,
    }
    lines = [f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Unknown')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("iso-8859-1") + payload


class Server:
    """Accept loop; one thread per connection (a fleet of a few hundred clients is fine)."""

    def __init__(self, emulator: Emulator, context: SSL.Context, host: str, port: int) -> None:
        self.emulator = emulator
        self.context = context
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.socket.listen(512)
        self.socket.settimeout(0.5)
        self.port = self.socket.getsockname()[1]
        self.stopping = threading.Event()

    def serve_forever(self) -> None:
        sweeper = threading.Thread(target=self._sweep, name="sweeper", daemon=True)
        sweeper.start()
        while not self.stopping.is_set():
            try:
                client, address = self.socket.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.stopping.is_set():
                    break
                raise
            client.settimeout(None)
            threading.Thread(target=self._connection, args=(client, address), daemon=True).start()
        self.socket.close()

    def stop(self) -> None:
        self.stopping.set()

    def _sweep(self) -> None:
        while not self.stopping.wait(0.2):
            try:
                self.emulator.finalize_due()
            except Exception:  # keep sweeping; the failure is logged
                LOG.exception("finalizing operations failed")

    def _connection(self, client: socket.socket, address: Any) -> None:
        peer = f"{address[0]}:{address[1]}"
        timeout = struct.pack("ll", int(IDLE_TIMEOUT), 0)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeout)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeout)
        connection = SSL.Connection(self.context, client)
        connection.set_accept_state()
        try:
            connection.do_handshake()
        except (SSL.Error, OSError) as exc:
            LOG.info("%s TLS handshake failed: %s", peer, exc)
            client.close()
            return
        leaf = connection.get_peer_certificate(as_cryptography=True)
        presented = list(connection.get_peer_cert_chain(as_cryptography=True) or [])
        reader = _Reader(connection)
        try:
            for _ in range(1000):
                parsed = _read_request(reader)
                if parsed is None:
                    break
                if isinstance(parsed, Response):
                    connection.sendall(_encode_response(parsed, keep_alive=False))
                    break
                method, target, headers, body = parsed
                split = urllib.parse.urlsplit(target)
                request = Request(
                    method=method,
                    path=split.path,
                    query=urllib.parse.parse_qs(split.query),
                    headers=headers,
                    body=body,
                    leaf=leaf,
                    presented=presented,
                    peer=peer,
                )
                try:
                    response = self.emulator.handle(request)
                except Drop:
                    LOG.info("%s %s %s -> dropped (fault)", peer, method, split.path)
                    with contextlib.suppress(OSError):
                        client.shutdown(socket.SHUT_RDWR)
                    return
                except Exception:
                    LOG.exception("%s %s %s failed", peer, method, split.path)
                    response = error(500, ERROR_INTERNAL, "Internal emulator error; see the emulator log.")
                keep_alive = headers.get("connection", "").lower() != "close"
                LOG.info("%s %s %s -> %s", peer, method, target, response.status)
                connection.sendall(_encode_response(response, keep_alive))
                if not keep_alive:
                    break
            with contextlib.suppress(SSL.Error, OSError):
                connection.shutdown()
        except (SSL.Error, OSError) as exc:
            LOG.info("%s connection error: %s", peer, exc)
        finally:
            client.close()
