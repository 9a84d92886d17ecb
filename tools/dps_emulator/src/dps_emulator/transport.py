"""The HTTP layer: TLS with pyOpenSSL (the client's chain exactly as presented), reading requests, encoding answers.

It knows nothing about DPS: it hands `Request`s to a handler and writes back its `Response`s.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import threading
import urllib.parse
from typing import Any, Protocol

from OpenSSL import SSL

from .wire import ERROR_BAD_REQUEST, ERROR_INTERNAL, Drop, Request, Response, error

LOG = logging.getLogger("dps_emulator")

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024
IDLE_TIMEOUT = 10.0
REASONS = {
    200: "OK",
    202: "Accepted",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    500: "Internal Server Error",
}


class Handler(Protocol):
    def handle(self, request: Request) -> Response: ...

    def finalize_due(self) -> None: ...


def make_context(cert_file: str, key_file: str) -> SSL.Context:
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.use_certificate_chain_file(cert_file)
    context.use_privatekey_file(key_file)
    context.check_privatekey()
    # Ask for a client certificate but accept anything (or nothing): attestation is checked per request by the
    # device API, which needs the chain exactly as presented.
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


def read_request(reader: _Reader) -> tuple[str, str, dict[str, str], bytes] | Response | None:
    """One HTTP/1.1 request: (method, target, headers, body), an error Response, or None when the peer is gone."""
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
            try:
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
            except ValueError:
                return error(400, ERROR_BAD_REQUEST, "Malformed chunk size.")
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


def encode_response(response: Response, keep_alive: bool) -> bytes:
    headers: dict[str, str] = {}
    payload = b""
    if response.status != 204:
        payload = json.dumps(response.body).encode("utf-8")
        headers["Content-Type"] = "application/json; charset=utf-8"
        headers["Content-Length"] = str(len(payload))
    headers["Connection"] = "keep-alive" if keep_alive else "close"
    headers.update(response.headers)
    lines = [f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Unknown')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("iso-8859-1") + payload


class Server:
    """Accept loop; one thread per connection (a fleet of a few hundred clients is fine)."""

    def __init__(self, handler: Handler, context: SSL.Context, host: str, port: int) -> None:
        self.handler = handler
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
                self.handler.finalize_due()
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
                parsed = read_request(reader)
                if parsed is None:
                    break
                if isinstance(parsed, Response):
                    connection.sendall(encode_response(parsed, keep_alive=False))
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
                    response = self.handler.handle(request)
                except Drop:
                    LOG.info("%s %s %s -> dropped (fault)", peer, method, split.path)
                    with contextlib.suppress(OSError):
                        client.shutdown(socket.SHUT_RDWR)
                    return
                except Exception:
                    LOG.exception("%s %s %s failed", peer, method, split.path)
                    response = error(500, ERROR_INTERNAL, "Internal emulator error; see the emulator log.")
                keep_alive = headers.get("connection", "").lower() != "close"
                # Only the method, path and query are logged: never headers (SAS tokens) or bodies (keys).
                LOG.info("%s %s %s -> %s", peer, method, target, response.status)
                connection.sendall(encode_response(response, keep_alive))
                if not keep_alive:
                    break
            with contextlib.suppress(SSL.Error, OSError):
                connection.shutdown()
        except (SSL.Error, OSError) as exc:
            LOG.info("%s connection error: %s", peer, exc)
        finally:
            client.close()
