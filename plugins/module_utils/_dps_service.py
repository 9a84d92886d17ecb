# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Azure IoT Hub Device Provisioning Service (DPS) *service* API client: enrollments and registration records.

DESIGN.md section 4b. Runs on the controller with the Python standard library and ansible.module_utils only.
Every request goes through `_http.RetryLoop` (the same bounded retry loop as the device client); the transport is
`_http.urls_transport` or, in unit tests, a fake.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import typing as t
import urllib.parse
from dataclasses import dataclass, field

from ansible_collections.iotfleet.aziot.plugins.module_utils._dps import (
    DpsError,
    check_connection_options,
    decode_key,
    fail_with_counts,
    split_provisioning_host,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._http import (
    Response,
    RetryingClient,
    Transport,
    urls_transport,
)

SERVICE_API_VERSION = "2021-10-01"
SERVICE_USER_AGENT = "iotfleet.aziot-dps_service/0.1.0"
# Lifetime of the SAS token made for each request: short, so a leaked header is of little use, yet long enough
# for a controller clock a few minutes behind DPS's.
SERVICE_SAS_TTL = 300
MASK = "********"
# How many times a write refused with HTTP 412 (the record changed since it was read) is read again and retried.
MAX_PRECONDITION_RETRIES = 3

ENROLLMENT_GROUPS = "enrollmentGroups"
ENROLLMENTS = "enrollments"
REGISTRATIONS = "registrations"

# The shared access policy permission each kind of request needs (DPS > Shared access policies).
PERMISSION_ENROLLMENT_READ = "EnrollmentRead"
PERMISSION_ENROLLMENT_WRITE = "EnrollmentWrite"
PERMISSION_REGISTRATION_READ = "RegistrationStatusRead"
PERMISSION_REGISTRATION_WRITE = "RegistrationStatusWrite"

_CONNECTION_STRING_FIELDS = ("HostName", "SharedAccessKeyName", "SharedAccessKey")
_CONNECTION_STRING_FORMAT = "HostName=...;SharedAccessKeyName=...;SharedAccessKey=..."

# The query is the one the Java SDK's QuerySpecificationBuilder("*", FromType...) makes.
_QUERIES = {ENROLLMENT_GROUPS: "select * from enrollmentGroups", ENROLLMENTS: "select * from enrollments"}

_NOUNS = {
    ENROLLMENT_GROUPS: "enrollment group",
    ENROLLMENTS: "individual enrollment",
    REGISTRATIONS: "registration record",
}


# --- credentials and SAS tokens -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceCredentials:
    """Where and as whom to call the service API. `host_name` is the HostName as the user wrote it (it is signed)."""

    host_name: str
    base_url: str
    policy_name: str
    policy_key: str = field(repr=False)
    # How the user gave the key, for error messages: "SharedAccessKey" (connection string) or "policy_key".
    key_option: str = "SharedAccessKey"


def _host_and_url(host_name: str, option: str) -> tuple[str, str]:
    value = host_name.strip()
    if value.lower().startswith("https://"):
        value = value[len("https://") :]
    value = value.rstrip("/")
    try:
        host, port = split_provisioning_host(value)
    except ValueError:
        raise ValueError(f"{option} {host_name!r} must be a host name or host:port") from None
    if host.lower().endswith(".azure-devices.net"):
        raise ValueError(
            f"{option} {host!r} is an IoT Hub, not a DPS: give the DPS service host "
            "(<name>.azure-devices-provisioning.net) and one of its shared access policies"
        )
    return value, (f"https://{host}" if port == 443 else f"https://{host}:{port}")


def parse_connection_string(connection_string: str) -> ServiceCredentials:
    """Parse a DPS service connection string; raise ValueError with a one-line reason that never holds the key."""
    fields: dict[str, str] = {}
    for part in connection_string.strip().split(";"):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ValueError(
                f"connection_string is malformed (a part has no name=value); expected {_CONNECTION_STRING_FORMAT}"
            )
        canonical = next((known for known in _CONNECTION_STRING_FIELDS if known.lower() == name.strip().lower()), None)
        if canonical is None:
            if name.strip().lower() in ("deviceid", "moduleid"):
                raise ValueError(
                    "connection_string is a device connection string; give the connection string of a DPS shared "
                    "access policy (DPS > Shared access policies)"
                )
            raise ValueError(
                f"connection_string has an unexpected field {name.strip()!r}; expected {_CONNECTION_STRING_FORMAT}"
            )
        if canonical in fields:
            raise ValueError(f"connection_string has {canonical} twice")
        fields[canonical] = value.strip()
    missing = [name for name in _CONNECTION_STRING_FIELDS if not fields.get(name)]
    if missing:
        raise ValueError(
            f"connection_string has no {' and no '.join(missing)}; expected {_CONNECTION_STRING_FORMAT} "
            "(DPS > Shared access policies > the policy > Primary connection string)"
        )
    host_name, base_url = _host_and_url(fields["HostName"], "connection_string HostName")
    decode_key(fields["SharedAccessKey"], "SharedAccessKey in connection_string")
    return ServiceCredentials(host_name, base_url, fields["SharedAccessKeyName"], fields["SharedAccessKey"])


def credentials_from_params(params: t.Mapping[str, t.Any]) -> ServiceCredentials:
    """The credentials from the options of dps_service_auth_argument_spec(); ValueError (one line) when unusable."""
    if params.get("connection_string"):
        return parse_connection_string(params["connection_string"])
    host_name, base_url = _host_and_url(params["service_host"], "service_host")
    if not params["policy_name"].strip():
        raise ValueError("policy_name must not be empty")
    decode_key(params["policy_key"], "policy_key")
    return ServiceCredentials(host_name, base_url, params["policy_name"].strip(), params["policy_key"], "policy_key")


def service_sas_token(host_name: str, policy_name: str, policy_key: str, expiry: int) -> str:
    """The Authorization header for the DPS service API (a shared access policy's SAS token).

    sr is the url-encoded lower-case host name, the signature is base64(HMAC-SHA256(base64-decoded key,
    sr + "\\n" + se)) url-encoded, skn the policy name. This is what the Azure SDKs send:
    - azure-iot-sdk-python, azure-iot-common/azure/iot/common/sastoken.py SasToken._build_token (used by
      azure-iot-provisioning-servicesdk auth.py ConnectionStringAuthentication with the connection string's
      HostName, SharedAccessKey and SharedAccessKeyName): ``self._uri = urllib.parse.quote_plus(uri)``,
      ``message = self._uri + "\\n" + str(self.expiry_time)``, HMAC-SHA256 with the base64-decoded key, the
      signature url-quoted, ``"SharedAccessSignature sr={}&sig={}&se={}&skn={}"``;
    - azure-iot-sdk-node, common/core/src/shared_access_signature.ts SharedAccessSignature.create (called by
      provisioning/service/src/provisioningserviceclient.ts fromConnectionString with cn.HostName,
      cn.SharedAccessKeyName, cn.SharedAccessKey): stringToSign = resourceUri + '\\n' + expiry, hmacHash with the
      base64-decoded key, sig and skn encodeURIComponentStrict-ed.
    Lower-casing the host follows the IoT Hub / DPS security docs (host names are case-insensitive). A host:port
    (an emulator) is signed as written, ':' url-encoded like the Python SDK does.
    """
    resource = urllib.parse.quote(host_name.lower(), safe="")
    message = f"{resource}\n{int(expiry)}".encode("utf-8")
    digest = hmac.new(decode_key(policy_key, "the policy key"), message, hashlib.sha256).digest()
    signature = urllib.parse.quote(base64.b64encode(digest).decode("ascii"), safe="")
    return (
        f"SharedAccessSignature sr={resource}&sig={signature}&se={int(expiry)}"
        f"&skn={urllib.parse.quote(policy_name, safe='')}"
    )


# --- shared module options ----------------------------------------------------------------------------------------


def dps_service_auth_argument_spec() -> dict[str, dict[str, t.Any]]:
    """Auth options of the service API modules; documented once in the doc fragment iotfleet.aziot.dps.service_auth.

    Use with SERVICE_AUTH_MUTUALLY_EXCLUSIVE, SERVICE_AUTH_REQUIRED_TOGETHER and SERVICE_AUTH_REQUIRED_ONE_OF.
    """
    return dict(
        connection_string=dict(type="str", no_log=True),
        service_host=dict(type="str"),
        policy_name=dict(type="str"),
        policy_key=dict(type="str", no_log=True),
    )


SERVICE_AUTH_MUTUALLY_EXCLUSIVE = [
    ("connection_string", "service_host"),
    ("connection_string", "policy_name"),
    ("connection_string", "policy_key"),
]
SERVICE_AUTH_REQUIRED_TOGETHER = [("service_host", "policy_name", "policy_key")]
SERVICE_AUTH_REQUIRED_ONE_OF = [("connection_string", "service_host")]


# --- errors -------------------------------------------------------------------------------------------------------


class ServiceError(DpsError):
    """A service API request DPS refused, with what was being done and which policy permission it needs."""

    def __init__(
        self, message: str, action: str = "", permission: str = "", authenticated: bool = False, **fields: t.Any
    ) -> None:
        """`fields` are DpsError's (status, error_code, tracking_id, detail)."""
        super().__init__(message, **fields)
        self.action = action
        self.permission = permission
        # Whether an earlier request of this run was accepted with the same key (so a 401 is about permissions).
        self.authenticated = authenticated


class PreconditionFailed(ServiceError):
    """HTTP 412 (the etag is stale: the record changed since it was read), or 409 on create (it exists now)."""


class ConcurrentChange(DpsError):
    """The record changed in DPS between this task's read and its write every time (MAX_PRECONDITION_RETRIES)."""

    def __init__(self, subject: str, what: str, doing: str) -> None:
        super().__init__(
            f"{subject}: {what} changed in DPS while this task was {doing} it, {MAX_PRECONDITION_RETRIES + 1} times "
            "in a row (HTTP 412); this task changed nothing, run it again",
            status=412,
        )


def explain_service_error(
    error: DpsError,
    subject: str,
    credentials: ServiceCredentials,
    iot_hubs: list[str] | None = None,
) -> str:
    """One line telling the user what DPS refused and what to change."""
    if error.timed_out or error.status is None or isinstance(error, ConcurrentChange):
        return error.message
    code = f" ({error.error_code})" if error.error_code is not None else ""
    answer = f"HTTP {error.status}{code}: {error.detail}"
    action = getattr(error, "action", "") or "answer"
    permission = getattr(error, "permission", "") or PERMISSION_ENROLLMENT_READ
    policy = credentials.policy_name
    if error.status == 401 and not getattr(error, "authenticated", False):
        return (
            f"{subject}: the DPS refused the shared access signature: check {credentials.key_option} of policy "
            f"{policy} and the controller clock, and that the policy has {permission} ({answer})"
        )
    if error.status in (401, 403):
        return (
            f"{subject}: policy {policy} may not {action}: give it the {permission} permission "
            f"(DPS > Shared access policies) or use a policy that has it ({answer})"
        )
    if error.status == 400 and iot_hubs and "hub" in str(error.detail).lower():
        return (
            f"{subject}: DPS does not accept iot_hubs {', '.join(iot_hubs)}: every hub must be linked to this DPS "
            f"(portal: Linked IoT hubs; az iot dps linked-hub list) ({answer})"
        )
    if error.status == 400 and (error.error_code == 400004 or "api-version" in str(error.detail).lower()):
        return (
            f"{subject}: DPS does not support api-version {SERVICE_API_VERSION} for {action} ({answer}); "
            "check service_host / HostName points at a DPS"
        )
    return f"{subject}: DPS refused to {action} ({answer})"


# --- secrets in what the modules return ---------------------------------------------------------------------------


def mask_webhook_url(url: t.Any) -> t.Any:
    """A custom allocation webhook URL with its query (an Azure Functions key, typically) masked."""
    if not isinstance(url, str) or "?" not in url:
        return url
    return url.split("?", 1)[0] + "?" + MASK


def mask_record(record: t.Any) -> t.Any:
    """A copy of an enrollment, enrollment group or registration record with every secret replaced by MASK:
    symmetric keys, a TPM authentication key, the query of a custom allocation webhook URL."""
    if not isinstance(record, dict):
        return record
    masked = copy.deepcopy(record)
    attestation = masked.get("attestation")
    if isinstance(attestation, dict):
        symmetric_key = attestation.get("symmetricKey")
        if isinstance(symmetric_key, dict):
            for name in ("primaryKey", "secondaryKey"):
                if symmetric_key.get(name):
                    symmetric_key[name] = MASK
    tpm = masked.get("tpm")
    if isinstance(tpm, dict) and tpm.get("authenticationKey"):
        tpm["authenticationKey"] = MASK
    custom = masked.get("customAllocationDefinition")
    if isinstance(custom, dict) and "webhookUrl" in custom:
        custom["webhookUrl"] = mask_webhook_url(custom["webhookUrl"])
    if isinstance(masked.get("registrationState"), dict):
        masked["registrationState"] = mask_record(masked["registrationState"])
    return masked


# --- the client ---------------------------------------------------------------------------------------------------


class DpsServiceClient(RetryingClient):
    """DPS service API: enrollments, enrollment groups, registration records; one overall deadline per run."""

    service = "DPS"
    error_type = DpsError

    def __init__(
        self,
        credentials: ServiceCredentials,
        transport: Transport,
        subject: str,
        sas_ttl: int = SERVICE_SAS_TTL,
        **retry_options: t.Any,
    ) -> None:
        """`retry_options` are RetryLoop's: timeout, request_timeout, log, log_name, clock, wall_clock, sleep."""
        self.credentials = credentials
        self.sas_ttl = sas_ttl
        self.authenticated = False
        super().__init__(transport, subject, **{"log_name": "dps_enrollment", **retry_options})

    def url(self, path: str) -> str:
        return f"{self.credentials.base_url}{path}?api-version={SERVICE_API_VERSION}"

    @staticmethod
    def path(collection: str, record_id: str, suffix: str = "") -> str:
        return f"/{collection}/{urllib.parse.quote(record_id, safe='')}{suffix}"

    def request(
        self,
        method: str,
        path: str,
        action: str,
        permission: str,
        body: t.Any = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Send one request (retried by the shared RetryLoop); a fresh SAS token is made for every attempt."""
        data = json.dumps(body).encode("utf-8") if body is not None else None
        extra = dict(headers or {})
        credentials = self.credentials

        def make_headers() -> dict[str, str]:
            expiry = int(self.wall_clock()) + int(self.sas_ttl)
            made = {
                "Accept": "application/json",
                "User-Agent": SERVICE_USER_AGENT,
                "Authorization": service_sas_token(
                    credentials.host_name, credentials.policy_name, credentials.policy_key, expiry
                ),
            }
            if data is not None:
                made["Content-Type"] = "application/json; charset=utf-8"
            made.update(extra)
            return made

        response = self.retry.send(method, self.url(path), data, make_headers, action)
        if response.status not in (401, 403):
            self.authenticated = True
        return response

    def error(self, response: Response, action: str, permission: str, kind: type = ServiceError) -> ServiceError:
        """ServiceError (or `kind`) for an answer that refused `action`, with the permission it needs."""
        return self.refused(
            response, action, kind, action=action, permission=permission, authenticated=self.authenticated
        )

    def _read_permission(self, collection: str) -> str:
        return PERMISSION_REGISTRATION_READ if collection == REGISTRATIONS else PERMISSION_ENROLLMENT_READ

    def _write_permission(self, collection: str) -> str:
        return PERMISSION_REGISTRATION_WRITE if collection == REGISTRATIONS else PERMISSION_ENROLLMENT_WRITE

    def get(self, collection: str, record_id: str) -> dict | None:
        """GET one record; None when DPS has none (404)."""
        action = f"read {_NOUNS[collection]} {record_id}"
        permission = self._read_permission(collection)
        response = self.request("GET", self.path(collection, record_id), action, permission)
        if response.status == 404:
            return None
        if response.status != 200 or not isinstance(response.json, dict):
            raise self.error(response, action, permission)
        return response.json

    def attestation_mechanism(self, collection: str, record_id: str) -> dict:
        """The attestation of an enrollment with its symmetric keys (a plain GET does not return them)."""
        action = f"read the attestation of {_NOUNS[collection]} {record_id}"
        response = self.request(
            "POST", self.path(collection, record_id, "/attestationmechanism"), action, PERMISSION_ENROLLMENT_READ
        )
        if response.status != 200 or not isinstance(response.json, dict):
            raise self.error(response, action, PERMISSION_ENROLLMENT_READ)
        return response.json

    def put(self, collection: str, record_id: str, body: dict, etag: str | None) -> dict | None:
        """Create (etag None) or update (If-Match etag) a record; the record DPS answers with, if it sent one.

        Raises PreconditionFailed on 412 (stale etag) and on 409 for a create (the record appeared meanwhile).
        """
        verb = "update" if etag else "create"
        action = f"{verb} {_NOUNS[collection]} {record_id}"
        headers = {"If-Match": etag} if etag else {}
        response = self.request(
            "PUT", self.path(collection, record_id), action, PERMISSION_ENROLLMENT_WRITE, body=body, headers=headers
        )
        if response.status == 412 or (response.status == 409 and not etag):
            raise self.error(response, action, PERMISSION_ENROLLMENT_WRITE, PreconditionFailed)
        if response.status not in (200, 201):
            raise self.error(response, action, PERMISSION_ENROLLMENT_WRITE)
        return response.json if isinstance(response.json, dict) else None

    def delete(self, collection: str, record_id: str, etag: str | None) -> bool:
        """DELETE a record (If-Match etag); False when it was already gone (404). PreconditionFailed on 412."""
        action = f"delete {_NOUNS[collection]} {record_id}"
        permission = self._write_permission(collection)
        headers = {"If-Match": etag} if etag else {}
        response = self.request("DELETE", self.path(collection, record_id), action, permission, headers=headers)
        if response.status == 404:
            return False
        if response.status == 412:
            raise self.error(response, action, permission, PreconditionFailed)
        if response.status not in (200, 204):
            raise self.error(response, action, permission)
        return True

    def changed_meanwhile(self, error: PreconditionFailed, attempt: int, doing: str) -> None:
        """Log that a write was refused because the record changed since it was read; it is read again."""
        self.retry.log(
            f"{self.retry.log_name} {self.retry.subject}: HTTP {error.status} on {doing}, the record changed "
            f"meanwhile; reading it again ({attempt + 1}/{MAX_PRECONDITION_RETRIES})"
        )

    def delete_current(self, collection: str, record_id: str, dry_run: bool) -> tuple[bool, dict | None]:
        """Read a record and delete it with If-Match on the etag just read (with `dry_run`, only read it).

        Returns (deleted, the record as read). A record that does not exist, or that someone else deleted between
        the read and the delete, is not deleted by this call. A record that changed in between (HTTP 412) is read
        again, at most MAX_PRECONDITION_RETRIES times, then ConcurrentChange.
        """
        for attempt in range(MAX_PRECONDITION_RETRIES + 1):
            record = self.get(collection, record_id)
            if record is None or dry_run:
                return record is not None, record
            try:
                return self.delete(collection, record_id, record.get("etag") or "*"), record
            except PreconditionFailed as error:
                self.changed_meanwhile(error, attempt, "delete")
        raise ConcurrentChange(self.retry.subject, "the record", "deleting")

    def _query(self, path: str, action: str, permission: str, page_size: int, body: dict | None) -> list[dict]:
        """POST a query and follow x-ms-continuation until the last page."""
        records: list[dict] = []
        continuation: str | None = None
        seen: set[str] = set()
        while True:
            headers = {"x-ms-max-item-count": str(page_size)}
            if continuation:
                headers["x-ms-continuation"] = continuation
            response = self.request("POST", path, action, permission, body=body, headers=headers)
            if response.status != 200 or not isinstance(response.json, list):
                raise self.error(response, action, permission)
            records.extend(item for item in response.json if isinstance(item, dict))
            continuation = response.headers.get("x-ms-continuation") or None
            if not continuation:
                return records
            if continuation in seen:
                raise ServiceError(
                    f"{self.retry.subject}: {action}: DPS sent the same continuation token twice; stopped after "
                    f"{len(records)} records",
                    action=action,
                    permission=permission,
                )
            seen.add(continuation)

    def query_enrollments(self, collection: str, page_size: int = 100) -> list[dict]:
        """Every enrollment group (collection ENROLLMENT_GROUPS) or individual enrollment (ENROLLMENTS).

        The query is the one the Java SDK's QuerySpecificationBuilder("*", FromType.ENROLLMENTS) makes
        (azure-iot-sdk-java, provisioning-service-client, configs/QuerySpecificationBuilder.java)."""
        return self._query(
            f"/{collection}/query",
            f"query {_NOUNS[collection]}s",
            PERMISSION_ENROLLMENT_READ,
            page_size,
            {"query": _QUERIES[collection]},
        )

    def query_registrations(self, enrollment_group_id: str, page_size: int = 100) -> list[dict]:
        """The registration records of the devices that registered through an enrollment group."""
        return self._query(
            self.path(REGISTRATIONS, enrollment_group_id, "/query"),
            f"query the registration records of enrollment group {enrollment_group_id}",
            PERMISSION_REGISTRATION_READ,
            page_size,
            None,  # service.json declares no body for this query
        )


# --- one module run -----------------------------------------------------------------------------------------------


def service_client(module: t.Any, subject: str, log_name: str) -> DpsServiceClient:
    """The client of one service API module run, from the options of dps_connection_argument_spec() and
    dps_service_auth_argument_spec(). Fails the module (one line) on an unusable option before any request."""
    params = module.params
    check_connection_options(module, subject)
    try:
        credentials = credentials_from_params(params)
    except ValueError as error:
        module.fail_json(msg=f"{subject}: {error}")
    module.no_log_values.add(credentials.policy_key)
    transport = urls_transport(
        ca_path=params["ca_path"], validate_certs=params["validate_certs"], user_agent=SERVICE_USER_AGENT
    )
    return DpsServiceClient(
        credentials,
        transport,
        subject,
        timeout=params["timeout"],
        request_timeout=params["request_timeout"],
        log=module.log,
        log_name=log_name,
    )


def fail_service_error(module: t.Any, client: DpsServiceClient, error: DpsError, iot_hubs: list | None = None) -> None:
    """Fail the module with what DPS refused, the fix, and the request counts."""
    message = explain_service_error(error, client.retry.subject, client.credentials, iot_hubs)
    fail_with_counts(module, client, message, error)
