# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""JSON-over-HTTP for the collection's Azure clients: the transport, the answer, and the one bounded retry loop.

Nothing here knows DPS: the DPS device client (`_dps.py`) and service client (`_dps_service.py`) are built on it,
and an IoT Hub client can be. Runs on the device with only the Python standard library and ansible.module_utils.
The transport is injectable so that unit tests need no network.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import math
import ssl
import time
import typing as t
import urllib.error

from ansible.module_utils.urls import Request

RETRY_AFTER_MIN = 1.0
RETRY_AFTER_MAX = 30.0


class ApiError(Exception):
    """Every failure of a service client: HTTP status, the service's errorCode, message and trackingId when known.

    Each service has its own subclass (`_dps.DpsError`), which its RetryLoop raises.
    """

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


def error_fields(response: Response) -> tuple[int | None, str, str | None]:
    """(errorCode, message, trackingId) of an Azure error answer; the message falls back to the raw body."""
    body = response.json if isinstance(response.json, dict) else {}
    error_code = body.get("errorCode")
    try:
        error_code = int(error_code) if error_code is not None else None
    except (TypeError, ValueError):
        error_code = None
    message = body.get("message") or body.get("Message") or response.raw.decode("utf-8", "replace").strip()
    return error_code, message or "no error body", body.get("trackingId")


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
    """The one bounded retry loop of every service client (DPS device API, DPS service API).

    One overall deadline covers every request a module run sends, the waits between retries and any polling.
    HTTP 429, 5xx and connection errors are retried, waiting Retry-After (clamped to [1, 30] s) or 1, 2, 4 ... s;
    a retry that would end after the deadline is not attempted. Any other answer goes back to the caller, which
    decides what it means. A server certificate that does not verify is never retried. Failures are raised as
    `error_type`, naming `service`.
    """

    def __init__(
        self,
        transport: Transport,
        subject: str,
        timeout: float = 120,
        request_timeout: float = 30,
        log: t.Callable[[str], None] | None = None,
        log_name: str = "http",
        clock: t.Callable[[], float] = time.monotonic,
        wall_clock: t.Callable[[], float] = time.time,
        sleep: t.Callable[[float], None] = time.sleep,
        service: str = "the server",
        error_type: type[ApiError] = ApiError,
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
        self.service = service
        self.error_type = error_type
        self.deadline = clock() + timeout
        self.attempts = 0
        self.retries = 0
        self.last_status: str | None = None

    def timeout_error(self, what: str) -> ApiError:
        return self.error_type(
            f"{self.subject}: {self.service} did not finish within timeout={_seconds(self.timeout)}s ({what}; "
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
                raise self.error_type(
                    f"{self.subject}: the {self.service} server certificate did not verify ({error}); "
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
    """What every service client has: one RetryLoop for the module run (one deadline), and its request counts.

    A subclass names its service and error type in `service` and `error_type`.
    """

    service = "the server"
    error_type: type[ApiError] = ApiError

    def __init__(self, *retry_args: t.Any, **retry_options: t.Any) -> None:
        """The arguments are RetryLoop's (but `service` and `error_type`, which are the class's)."""
        self.retry = RetryLoop(*retry_args, service=self.service, error_type=self.error_type, **retry_options)
        self.wall_clock = self.retry.wall_clock

    @property
    def attempts(self) -> int:
        return self.retry.attempts

    @property
    def retries(self) -> int:
        return self.retry.retries

    def refused(self, response: Response, what: str, kind: type | None = None, **extra: t.Any) -> ApiError:
        """The error for an answer that refused `what` was asked: '<subject>: <what> failed: HTTP <status>
        (<errorCode>): <message>', with the service's fields; `kind` and `extra` for a client's own error type."""
        error_code, message, tracking_id = error_fields(response)
        code = f" ({error_code})" if error_code is not None else ""
        return (kind or self.error_type)(
            f"{self.retry.subject}: {what} failed: HTTP {response.status}{code}: {message}",
            status=response.status,
            error_code=error_code,
            tracking_id=tracking_id,
            detail=message,
            **extra,
        )


# --- transport ----------------------------------------------------------------------------------------------------


def urls_transport(
    user_agent: str,
    client_cert: str | None = None,
    client_key: str | None = None,
    ca_path: str | None = None,
    validate_certs: bool = True,
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
