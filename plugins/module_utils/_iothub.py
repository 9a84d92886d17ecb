# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Azure IoT Hub *service* API client: configurations (automatic device configurations and IoT Edge deployments),
device identities, twins and the device query (DESIGN.md section 10).

Runs on the controller with the Python standard library and ansible.module_utils only, beside the DPS service
client (`_dps_service.py`), whose SAS token, 412 rule and failure path it shares. Every request goes through
`_http.RetryLoop` (429 with Retry-After, 5xx and connection errors retried within one overall deadline); the
transport is `_http.urls_transport` or, in unit tests, a fake.
"""

from __future__ import annotations

import copy
import json
import re
import typing as t
import urllib.parse
from dataclasses import dataclass, field

from ansible_collections.iotfleet.aziot.plugins.module_utils._dps import (
    check_connection_options,
    decode_key,
    fail_with_counts,
    split_provisioning_host,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._dps_service import (
    MASK,
    MAX_PRECONDITION_RETRIES,
    SERVICE_SAS_TTL,
    service_sas_token,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._http import (
    ApiError,
    Response,
    RetryingClient,
    Transport,
    urls_transport,
)

HUB_API_VERSION = "2021-04-12"
HUB_USER_AGENT = "iotfleet.aziot-iothub/0.1.0"
# IoT Hub answers at most this many configurations per list (GET /configurations?top=N).
MAX_CONFIGURATIONS_TOP = 1000
# What a device query page may hold (x-ms-max-item-count); IoT Hub's own maximum is 1000.
DEFAULT_QUERY_PAGE_SIZE = 100

# The shared access policy rights each kind of request needs (IoT Hub > Security settings > Shared access policies).
RIGHT_REGISTRY_READ = "RegistryRead"
RIGHT_REGISTRY_WRITE = "RegistryWrite"

_CONNECTION_STRING_FIELDS = ("HostName", "SharedAccessKeyName", "SharedAccessKey")
_CONNECTION_STRING_FORMAT = "HostName=<hub>.azure-devices.net;SharedAccessKeyName=...;SharedAccessKey=..."
# Fields that only a device (or module) connection string has.
_DEVICE_FIELDS = ("deviceid", "moduleid", "gatewayhostname", "x509")
# "ErrorCode:DeviceNotFound;Device foo not found" (what IoT Hub sends and the Node SDK's translateError parses)
_ERROR_CODE_MESSAGE = re.compile(r"^\s*ErrorCode\s*:\s*([A-Za-z0-9_]+)\s*;?\s*(.*)$", re.DOTALL)
_LIMIT_ERRORS = ("IotHubQuotaExceeded", "ConfigurationCountLimitExceeded")
_TRACKING_ID = re.compile(r"Tracking ID\s*:\s*([^\s-]+)", re.IGNORECASE)


class IotHubError(ApiError):
    """A failure of the IoT Hub client: HTTP status, IoT Hub's error code name (`error_name`, e.g. DeviceNotFound),
    the numeric code when IoT Hub sent one, what was being done and which policy right it needs."""

    def __init__(
        self,
        message: str,
        action: str = "",
        right: str = "",
        error_name: str | None = None,
        authenticated: bool = False,
        **fields: t.Any,
    ) -> None:
        """`fields` are ApiError's (status, error_code, tracking_id, timed_out, detail)."""
        super().__init__(message, **fields)
        self.action = action
        self.right = right
        self.error_name = error_name
        # Whether an earlier request of this run was accepted with the same key (so a 401 is about rights).
        self.authenticated = authenticated


class PreconditionFailed(IotHubError):
    """HTTP 412 (the etag is stale: it changed since it was read), or 409 on create (it exists now)."""


class ConcurrentChange(IotHubError):
    """The record changed in IoT Hub between this task's read and its write every time (MAX_PRECONDITION_RETRIES)."""

    def __init__(self, subject: str, what: str, doing: str) -> None:
        super().__init__(
            f"{subject}: {what} changed in IoT Hub while this task was {doing} it, {MAX_PRECONDITION_RETRIES + 1} "
            "times in a row (HTTP 412); it changed meanwhile, run the task again",
            status=412,
            error_name="PreconditionFailed",
        )


# --- credentials --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubCredentials:
    """Where and as whom to call the hub. `host_name` is the connection string's HostName (what is signed);
    `base_url` where requests go (service_url when given)."""

    host_name: str
    base_url: str
    policy_name: str
    policy_key: str = field(repr=False)


def _base_url(service_url: str) -> str:
    parsed = urllib.parse.urlsplit(service_url.strip())
    if parsed.scheme.lower() != "https" or not parsed.netloc or parsed.query or parsed.fragment:
        raise ValueError(
            f"service_url {service_url!r} must be an https:// URL such as https://127.0.0.1:8443 (the emulator) "
            "or a private endpoint"
        )
    return f"https://{parsed.netloc}{parsed.path.rstrip('/')}"


def parse_connection_string(connection_string: str, service_url: str | None = None) -> HubCredentials:
    """Parse an IoT Hub shared access policy connection string; ValueError with a one-line reason (never the key).

    A DPS connection string and a device connection string are refused, naming what to give instead."""
    fields: dict[str, str] = {}
    for part in connection_string.strip().split(";"):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(
                f"connection_string is malformed (a part has no name=value); expected {_CONNECTION_STRING_FORMAT}"
            )
        if name.lower() in _DEVICE_FIELDS:
            raise ValueError(
                "connection_string is a device connection string; give the connection string of an IoT Hub shared "
                "access policy with RegistryRead and RegistryWrite, such as iothubowner (IoT Hub > Shared access "
                "policies)"
            )
        canonical = next((known for known in _CONNECTION_STRING_FIELDS if known.lower() == name.lower()), None)
        if canonical is None:
            raise ValueError(
                f"connection_string has an unexpected field {name!r}; expected {_CONNECTION_STRING_FORMAT}"
            )
        if canonical in fields:
            raise ValueError(f"connection_string has {canonical} twice")
        fields[canonical] = value.strip()
    missing = [name for name in _CONNECTION_STRING_FIELDS if not fields.get(name)]
    if missing:
        raise ValueError(
            f"connection_string has no {' and no '.join(missing)}; expected {_CONNECTION_STRING_FORMAT} "
            "(IoT Hub > Shared access policies > the policy > Primary connection string)"
        )
    host_name = fields["HostName"]
    if host_name.lower().rstrip("/").endswith(".azure-devices-provisioning.net"):
        raise ValueError(
            f"connection_string HostName {host_name!r} is a DPS, not an IoT Hub: give the connection string of a "
            "shared access policy of the IoT Hub (<hub>.azure-devices.net, IoT Hub > Shared access policies)"
        )
    try:
        host, port = split_provisioning_host(host_name)
    except ValueError:
        raise ValueError(
            f"connection_string HostName {host_name!r} must be a host name (<hub>.azure-devices.net)"
        ) from None
    decode_key(fields["SharedAccessKey"], "SharedAccessKey in connection_string")
    hub_url = f"https://{host}" if port == 443 else f"https://{host}:{port}"
    base_url = _base_url(service_url) if service_url else hub_url
    return HubCredentials(host_name, base_url, fields["SharedAccessKeyName"], fields["SharedAccessKey"])


def hub_sas_token(credentials: HubCredentials, expiry: int) -> str:
    """The Authorization header for the IoT Hub service API: sr = the url-encoded lower-case HostName, skn = the
    policy. The algorithm is the DPS service API's (`_dps_service.service_sas_token`, which names its sources)."""
    return service_sas_token(credentials.host_name, credentials.policy_name, credentials.policy_key, expiry)


# --- error answers ------------------------------------------------------------------------------------------------


def hub_error_fields(response: Response) -> tuple[str | None, int | None, str, str | None]:
    """(error name, numeric code, message, tracking id) of an IoT Hub error answer.

    IoT Hub answers `{"Message": "ErrorCode:<Name>;<text>", "ExceptionMessage": "Tracking ID:<id>-G:..-TimeStamp:.."}`,
    some operations `{"Message": "{\\"errorCode\\":404001,\\"trackingId\\":..,\\"message\\":..}"}`, and sends the
    name in the `iothub-errorcode` header too. The message falls back to the raw body."""
    body = response.json if isinstance(response.json, dict) else {}
    name = response.headers.get("iothub-errorcode") or None
    number: int | None = None
    tracking_id: str | None = None
    message = body.get("Message") or body.get("message") or ""
    if isinstance(message, str) and message.strip().startswith("{"):
        try:
            inner = json.loads(message)
        except ValueError:
            inner = None
        if isinstance(inner, dict):
            message = str(inner.get("message") or inner.get("Message") or "")
            tracking_id = inner.get("trackingId")
            code = inner.get("errorCode")
            if isinstance(code, int) or (isinstance(code, str) and code.isdigit()):
                number = int(code)
            elif isinstance(code, str) and code:
                name = name or code
    if isinstance(message, str):
        matched = _ERROR_CODE_MESSAGE.match(message)
        if matched:
            name = matched.group(1)
            message = matched.group(2).strip()
    else:
        message = json.dumps(message)
    if not tracking_id:
        exception = body.get("ExceptionMessage")
        found = _TRACKING_ID.search(exception) if isinstance(exception, str) else None
        tracking_id = found.group(1) if found else None
    if not message:
        message = response.raw.decode("utf-8", "replace").strip() or "no error body"
    return name, number, " ".join(message.split()), tracking_id


def explain_error(error: ApiError, subject: str, credentials: HubCredentials) -> str:
    """One line telling the user what IoT Hub refused, which policy right it needs and what to change."""
    if error.timed_out or error.status is None or isinstance(error, ConcurrentChange):
        return error.message
    name = getattr(error, "error_name", None)
    code = f" ({name})" if name else (f" ({error.error_code})" if error.error_code is not None else "")
    answer = f"HTTP {error.status}{code}: {error.detail}"
    action = getattr(error, "action", "") or "answer"
    right = getattr(error, "right", "") or RIGHT_REGISTRY_READ
    policy = credentials.policy_name
    hub = credentials.host_name
    if error.status == 401 and not getattr(error, "authenticated", False):
        return (
            f"{subject}: IoT Hub {hub} refused the shared access signature of policy {policy}: check SharedAccessKey "
            f"in connection_string and the controller clock, and that the policy has {right} ({answer})"
        )
    # A hub at its configuration limit: IoT Hub documents 413101 ConfigurationCountLimitExceeded (HTTP 413); the
    # emulator answers 403 IotHubQuotaExceeded (403002, IoT Hub's daily quota).
    at_limit = name in _LIMIT_ERRORS or error.error_code in (403002, 413101) or error.status == 413
    if error.status == 401 or (error.status == 403 and not at_limit):
        other = "" if policy.lower() == "iothubowner" else ", such as iothubowner"
        return (
            f"{subject}: policy {policy} may not {action}: give it the {right} right (IoT Hub > Shared access "
            f"policies) or use a policy that has it{other} ({answer})"
        )
    if at_limit:
        if "configuration" in action:
            return (
                f"{subject}: IoT Hub {hub} is at its limit of configurations (100 device configurations and 100 "
                "deployments per hub): delete ones it no longer needs (iothub_configuration state=absent) and run "
                f"again ({answer})"
            )
        return f"{subject}: IoT Hub {hub} refused to {action}: a quota of the hub is exhausted ({answer})"
    if error.status == 404 and name == "DeviceNotFound":
        return f"{subject}: IoT Hub {hub} has no such device: register it through DPS first (provision.yml) ({answer})"
    if error.status == 400 and "api-version" in str(error.detail).lower():
        return (
            f"{subject}: {hub} does not take api-version {HUB_API_VERSION} for {action} ({answer}); check that "
            "connection_string's HostName (or service_url) is an IoT Hub"
        )
    return f"{subject}: IoT Hub refused to {action} ({answer})"


# --- secrets in what the modules return ---------------------------------------------------------------------------


def mask_device(device: t.Any) -> t.Any:
    """A copy of a device identity with its symmetric keys replaced by MASK (GET /devices/{id} answers them)."""
    if not isinstance(device, dict):
        return device
    masked = copy.deepcopy(device)
    authentication = masked.get("authentication")
    keys = authentication.get("symmetricKey") if isinstance(authentication, dict) else None
    if isinstance(keys, dict):
        for name in ("primaryKey", "secondaryKey"):
            if keys.get(name):
                keys[name] = MASK
    return masked


def if_match(etag: str) -> str:
    """The If-Match header value of an etag: quoted as IoT Hub's answers carry it unquoted ('*' = any)."""
    etag = etag.strip()
    return etag if etag.startswith('"') or etag.startswith('W/"') else f'"{etag}"'


# --- the client ---------------------------------------------------------------------------------------------------


class IotHubClient(RetryingClient):
    """IoT Hub service API: configurations, devices, twins, device queries; one overall deadline per module run."""

    service = "IoT Hub"
    error_type = IotHubError

    def __init__(
        self,
        credentials: HubCredentials,
        transport: Transport,
        subject: str,
        sas_ttl: int = SERVICE_SAS_TTL,
        **retry_options: t.Any,
    ) -> None:
        """`retry_options` are RetryLoop's: timeout, request_timeout, log, log_name, clock, wall_clock, sleep."""
        self.credentials = credentials
        self.sas_ttl = sas_ttl
        self.authenticated = False
        super().__init__(transport, subject, **{"log_name": "iothub", **retry_options})

    # --- requests ---------------------------------------------------------------------------------------------
    def url(self, path: str, query: dict[str, t.Any] | None = None) -> str:
        parameters = {**(query or {}), "api-version": HUB_API_VERSION}
        return f"{self.credentials.base_url}{path}?{urllib.parse.urlencode(parameters)}"

    @staticmethod
    def path(collection: str, record_id: str, suffix: str = "") -> str:
        return f"/{collection}/{urllib.parse.quote(record_id, safe='')}{suffix}"

    def request(
        self,
        method: str,
        path: str,
        action: str,
        right: str,
        body: t.Any = None,
        headers: dict[str, str] | None = None,
        query: dict[str, t.Any] | None = None,
    ) -> Response:
        """Send one request (retried by the shared RetryLoop); a fresh SAS token is made for every attempt.
        `action` and `right` name what is done and the policy right it needs, for the error message."""
        data = json.dumps(body).encode("utf-8") if body is not None else None
        extra = dict(headers or {})

        def make_headers() -> dict[str, str]:
            made = {
                "Accept": "application/json",
                "User-Agent": HUB_USER_AGENT,
                "Authorization": hub_sas_token(self.credentials, int(self.wall_clock()) + int(self.sas_ttl)),
            }
            if data is not None:
                made["Content-Type"] = "application/json; charset=utf-8"
            made.update(extra)
            return made

        response = self.retry.send(method, self.url(path, query), data, make_headers, action)
        if response.status not in (401, 403):
            self.authenticated = True
        return response

    def error(self, response: Response, action: str, right: str, kind: type = IotHubError) -> IotHubError:
        """IotHubError (or `kind`) for an answer that refused `action`:
        '<subject>: <action> failed: HTTP <status> (<ErrorName>): <message>'."""
        name, number, message, tracking_id = hub_error_fields(response)
        code = f" ({name})" if name else (f" ({number})" if number is not None else "")
        return kind(
            f"{self.retry.subject}: {action} failed: HTTP {response.status}{code}: {message}",
            action=action,
            right=right,
            error_name=name,
            authenticated=self.authenticated,
            status=response.status,
            error_code=number,
            tracking_id=tracking_id,
            detail=message,
        )

    def changed_meanwhile(self, error: IotHubError, attempt: int, doing: str) -> None:
        """Log that a write was refused because the record changed since it was read; it is read again."""
        self.retry.log(
            f"{self.retry.log_name} {self.retry.subject}: HTTP {error.status} on {doing}, the record changed "
            f"meanwhile; reading it again ({attempt + 1}/{MAX_PRECONDITION_RETRIES})"
        )

    def _get(self, collection: str, record_id: str, noun: str) -> dict | None:
        action = f"read {noun} {record_id}"
        response = self.request("GET", self.path(collection, record_id), action, RIGHT_REGISTRY_READ)
        if response.status == 404:
            return None
        if response.status != 200 or not isinstance(response.json, dict):
            raise self.error(response, action, RIGHT_REGISTRY_READ)
        return response.json

    def _write(
        self, method: str, collection: str, record_id: str, noun: str, body: dict, etag: str | None, verb: str = ""
    ) -> dict:
        """PUT/PATCH with If-Match `etag` (None: create, no If-Match). PreconditionFailed on 412, and on 409 for a
        create (it appeared meanwhile). The record IoT Hub answers with."""
        verb = verb or ("update" if etag else "create")
        action = f"{verb} {noun} {record_id}"
        headers = {"If-Match": if_match(etag)} if etag else {}
        response = self.request(
            method, self.path(collection, record_id), action, RIGHT_REGISTRY_WRITE, body=body, headers=headers
        )
        if response.status == 412 or (response.status == 409 and not etag):
            raise self.error(response, action, RIGHT_REGISTRY_WRITE, PreconditionFailed)
        if response.status not in (200, 201) or not isinstance(response.json, dict):
            raise self.error(response, action, RIGHT_REGISTRY_WRITE)
        return response.json

    def _delete(self, collection: str, record_id: str, noun: str, etag: str | None) -> bool:
        """DELETE with If-Match `etag` (None: '*'); False when it was already gone (404). PreconditionFailed on 412."""
        action = f"delete {noun} {record_id}"
        headers = {"If-Match": if_match(etag or "*")}
        response = self.request(
            "DELETE", self.path(collection, record_id), action, RIGHT_REGISTRY_WRITE, headers=headers
        )
        if response.status == 404:
            return False
        if response.status == 412:
            raise self.error(response, action, RIGHT_REGISTRY_WRITE, PreconditionFailed)
        if response.status not in (200, 204):
            raise self.error(response, action, RIGHT_REGISTRY_WRITE)
        return True

    # --- configurations ---------------------------------------------------------------------------------------
    def get_configuration(self, configuration_id: str) -> dict | None:
        """GET /configurations/{id}; None when the hub has none (404)."""
        return self._get("configurations", configuration_id, "configuration")

    def list_configurations(self, top: int = MAX_CONFIGURATIONS_TOP) -> list[dict]:
        """GET /configurations?top=N: at most `top` configurations (IoT Hub answers at most 1000)."""
        action = "list configurations"
        response = self.request("GET", "/configurations", action, RIGHT_REGISTRY_READ, query={"top": int(top)})
        if response.status != 200 or not isinstance(response.json, list):
            raise self.error(response, action, RIGHT_REGISTRY_READ)
        return [item for item in response.json if isinstance(item, dict)]

    def put_configuration(self, configuration_id: str, body: dict, etag: str | None) -> dict:
        """Create (etag None) or update (If-Match etag) a configuration; the configuration the hub answers with."""
        return self._write("PUT", "configurations", configuration_id, "configuration", body, etag)

    def delete_configuration(self, configuration_id: str, etag: str | None) -> bool:
        """Delete a configuration (If-Match etag, None = any); False when it did not exist."""
        return self._delete("configurations", configuration_id, "configuration", etag)

    def test_queries(self, target_condition: str, metric_queries: dict[str, str] | None = None) -> dict:
        """POST /configurations/testQueries: {"targetConditionError": str, "customMetricQueryErrors": {name: str}}
        (empty strings / no entries when the condition and queries are valid)."""
        action = "test the target condition and metric queries"
        body = {"targetCondition": target_condition, "customMetricQueries": dict(metric_queries or {})}
        response = self.request("POST", "/configurations/testQueries", action, RIGHT_REGISTRY_READ, body=body)
        if response.status != 200 or not isinstance(response.json, dict):
            raise self.error(response, action, RIGHT_REGISTRY_READ)
        answer = response.json
        return {
            "targetConditionError": answer.get("targetConditionError") or "",
            "customMetricQueryErrors": {
                name: text for name, text in (answer.get("customMetricQueryErrors") or {}).items() if text
            },
        }

    # --- devices and twins ------------------------------------------------------------------------------------
    def query_devices(self, query: str, page_size: int = DEFAULT_QUERY_PAGE_SIZE) -> list[dict]:
        """POST /devices/query {"query": query}, following x-ms-continuation to the last page: the twins found."""
        action = "query devices"
        records: list[dict] = []
        continuation: str | None = None
        seen: set[str] = set()
        while True:
            headers = {"x-ms-max-item-count": str(page_size)}
            if continuation:
                headers["x-ms-continuation"] = continuation
            response = self.request(
                "POST", "/devices/query", action, RIGHT_REGISTRY_READ, body={"query": query}, headers=headers
            )
            if response.status != 200 or not isinstance(response.json, list):
                raise self.error(response, action, RIGHT_REGISTRY_READ)
            records.extend(item for item in response.json if isinstance(item, dict))
            continuation = response.headers.get("x-ms-continuation") or None
            if not continuation:
                return records
            if continuation in seen:
                raise IotHubError(
                    f"{self.retry.subject}: {action}: IoT Hub sent the same continuation token twice; stopped after "
                    f"{len(records)} devices",
                    action=action,
                    right=RIGHT_REGISTRY_READ,
                )
            seen.add(continuation)

    def get_device(self, device_id: str) -> dict | None:
        """GET /devices/{id} (the identity: status, statusReason, etag, authentication with keys); None on 404."""
        return self._get("devices", device_id, "device")

    def put_device(self, device_id: str, body: dict, etag: str | None) -> dict:
        """Create (etag None) or update (If-Match etag) a device identity; the device the hub answers with."""
        return self._write("PUT", "devices", device_id, "device", body, etag)

    def get_twin(self, device_id: str) -> dict | None:
        """GET /twins/{id}; None when the hub has no such device (404)."""
        return self._get("twins", device_id, "the twin of device")

    def patch_twin(self, device_id: str, patch: dict, etag: str | None) -> dict:
        """PATCH /twins/{id} (tags, properties.desired; a key set to null is removed) with If-Match etag (None:
        '*'); the twin the hub answers with. PreconditionFailed on 412."""
        return self._write("PATCH", "twins", device_id, "the twin of device", patch, etag or "*", verb="update")


# --- one module run -----------------------------------------------------------------------------------------------


def iothub_connection_argument_spec() -> dict[str, dict[str, t.Any]]:
    """Options of every iothub_* module; documented once in the doc fragment iotfleet.aziot.iothub."""
    return dict(
        connection_string=dict(type="str", required=True, no_log=True),
        service_url=dict(type="str"),
        ca_path=dict(type="path"),
        validate_certs=dict(type="bool", default=True),
        timeout=dict(type="int", default=120),
        request_timeout=dict(type="int", default=30),
    )


def iothub_client(module: t.Any, subject: str, log_name: str) -> IotHubClient:
    """The client of one iothub_* module run, from the options of iothub_connection_argument_spec(). Fails the
    module (one line) on an unusable option before any request."""
    params = module.params
    check_connection_options(module, subject, "IoT Hub")
    try:
        credentials = parse_connection_string(params["connection_string"], params["service_url"])
    except ValueError as error:
        module.fail_json(msg=f"{subject}: {error}")
    module.no_log_values.add(credentials.policy_key)
    transport = urls_transport(
        ca_path=params["ca_path"], validate_certs=params["validate_certs"], user_agent=HUB_USER_AGENT
    )
    return IotHubClient(
        credentials,
        transport,
        subject,
        timeout=params["timeout"],
        request_timeout=params["request_timeout"],
        log=module.log,
        log_name=log_name,
    )


def fail_iothub_error(module: t.Any, client: IotHubClient, error: ApiError, subject: str | None = None) -> None:
    """Fail the module with what IoT Hub refused, the fix, the request counts and IoT Hub's error name."""
    message = explain_error(error, subject or client.retry.subject, client.credentials)
    fail_with_counts(module, client, message, error, error_name=getattr(error, "error_name", None))
