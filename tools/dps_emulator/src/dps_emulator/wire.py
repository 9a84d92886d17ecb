"""Wire types shared by every API surface: requests, responses, DPS- and IoT Hub-shaped error bodies."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from .pki import iso_utc, utcnow

# errorCode values. 400004 and 401002 are seen from real DPS (device API); 404201 (no such individual enrollment)
# and 404204 (no such enrollment group) are what Microsoft's C# service SDK end-to-end tests assert; the others
# follow DPS's <HTTP status><3 digits> pattern and are the emulator's own choice (see docs/dps_emulator.md).
ERROR_BAD_REQUEST = 400001
ERROR_API_VERSION = 400004
ERROR_UNAUTHORIZED = 401002
ERROR_NOT_FOUND = 404001
ERROR_ENROLLMENT_NOT_FOUND = 404201
ERROR_REGISTRATION_NOT_FOUND = 404201  # seen from DPS for a missing registration record; meaning unconfirmed
ERROR_OPERATION_NOT_FOUND = 404202
ERROR_ENROLLMENT_GROUP_NOT_FOUND = 404204
ERROR_METHOD = 405001
ERROR_CONFLICT = 409001
ERROR_PRECONDITION_FAILED = 412001
ERROR_THROTTLED = 429001
ERROR_INTERNAL = 500001

# IoT Hub's error names (the "ErrorCode:<name>" of its error bodies) by HTTP status, for errors raised by code shared
# with DPS (json_body's 400, check_if_match's 412) when they answer a hub route.
HUB_ERROR_NAMES = {
    400: "ArgumentInvalid",
    401: "IotHubUnauthorizedAccess",
    403: "IotHubQuotaExceeded",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    412: "PreconditionFailed",
    429: "ThrottlingException",
    500: "ServerError",
}


class Drop(Exception):
    """Close the connection without answering (fault injection)."""


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    leaf: x509.Certificate | None
    presented: list[x509.Certificate]
    peer: str


@dataclass
class Response:
    status: int
    body: Any  # JSON-serialisable; None with 204 means no body at all
    headers: dict[str, str] = field(default_factory=dict)


def error_body(code: int, message: str, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """ProvisioningServiceErrorDetails: {errorCode, trackingId, message, info, timestampUtc}."""
    return {
        "errorCode": code,
        "trackingId": str(uuid.uuid4()),
        "message": message,
        "info": info or None,
        "timestampUtc": iso_utc(utcnow()),
    }


def error(status: int, code: int, message: str, headers: dict[str, str] | None = None, **info: Any) -> Response:
    return Response(status, error_body(code, message, info), headers or {})


class ApiError(Exception):
    """Raised anywhere below a handler; the router turns it into a DPS error response."""

    def __init__(self, status: int, code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def response(self) -> Response:
        return error(self.status, self.code, self.message, self.headers)


def hub_error(status: int, name: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """IoT Hub's error body, {"Message": "ErrorCode:<name>;<text>", "ExceptionMessage": "Tracking ID:..."}, which the
    Node SDK's translateError reads the code from; the name is also in the iothub-errorcode header, as IoT Hub sends."""
    now = utcnow()
    body = {
        "Message": f"ErrorCode:{name};{message}",
        "ExceptionMessage": f"Tracking ID:{uuid.uuid4().hex}-G:0-TimeStamp:{now:%m/%d/%Y %H:%M:%S}",
    }
    return Response(status, body, {"iothub-errorcode": name, **(headers or {})})


class HubError(ApiError):
    """An error of the IoT Hub service API, named as IoT Hub names it (DeviceNotFound, ThrottlingException ...)."""

    def __init__(self, status: int, name: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, 0, message, headers)
        self.name = name

    def response(self) -> Response:
        return hub_error(self.status, self.name, self.message, self.headers)


def hub_response(exc: ApiError) -> Response:
    """Any ApiError answered in IoT Hub's shape (a DPS-coded one gets the hub name of its HTTP status)."""
    if isinstance(exc, HubError):
        return exc.response()
    return hub_error(exc.status, HUB_ERROR_NAMES.get(exc.status, "ServerError"), exc.message, exc.headers)


def bad_request(message: str) -> ApiError:
    return ApiError(400, ERROR_BAD_REQUEST, message)


def json_body(request: Request, *, required: bool = True) -> Any:
    """The request body as JSON (an empty body is {} unless `required`)."""
    if not request.body.strip():
        if required:
            raise bad_request("The request needs a JSON body.")
        return {}
    try:
        return json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise bad_request("The request body is not valid JSON.") from None
