"""The DPS service API (api-version 2021-10-01): enrollments as code, registration records, SAS policy auth.

Routes, fields, headers and answer shapes follow Azure/azure-rest-api-specs
specification/deviceprovisioningservices/data-plane/.../stable/2021-10-01/service.json.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import re
import time
from typing import Any

from .config import REGISTRATION_ID_RE, Config, Policy
from .enrollments import (
    ENROLLMENT_ID_RE,
    GROUP,
    ID_FIELD,
    INDIVIDUAL,
    ITEM_TYPE,
    attestation_view,
    public_view,
    written_view,
)
from .router import Route
from .sas import SasError, parse_sas, service_resource_allows, signature_matches
from .state import RegistrationStore
from .store import EnrollmentStore, check_if_match
from .wire import (
    ERROR_REGISTRATION_NOT_FOUND,
    ERROR_UNAUTHORIZED,
    ApiError,
    Request,
    Response,
    bad_request,
    json_body,
)

LOG = logging.getLogger("dps_emulator")
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
REGISTRATION_STATE_FIELDS = (
    "registrationId",
    "createdDateTimeUtc",
    "assignedHub",
    "deviceId",
    "status",
    "substatus",
    "errorCode",
    "errorMessage",
    "lastUpdatedDateTimeUtc",
    "etag",
    "payload",
)
QUERY_RE = re.compile(r"^\s*select\s+\*(\s+from\s+[A-Za-z]+)?\s*$", re.IGNORECASE)


def registration_view(record: dict[str, Any]) -> dict[str, Any]:
    """DeviceRegistrationState as the service API answers it (no attestation details)."""
    state = record["registrationState"]
    return {name: state[name] for name in REGISTRATION_STATE_FIELDS if state.get(name) is not None}


def _valid_id(kind: str, identifier: str) -> str:
    pattern = REGISTRATION_ID_RE if kind == "registrations" else ENROLLMENT_ID_RE
    if not pattern.match(identifier):
        name = ID_FIELD.get(kind, "registrationId")
        raise bad_request(f"{name} {identifier!r} is invalid: use 1-128 letters, digits and '-._:'.")
    return identifier


def _unauthorized(message: str) -> ApiError:
    LOG.info("service API request refused: %s", message)
    return ApiError(401, ERROR_UNAUTHORIZED, f"Unauthorized: {message}")


class ServiceApi:
    def __init__(self, config: Config, enrollments: EnrollmentStore, registrations: RegistrationStore) -> None:
        self.config = config
        self.enrollments = enrollments
        self.registrations = registrations

    def routes(self) -> list[Route]:
        routes: list[Route] = []
        for kind in (GROUP, INDIVIDUAL):
            bind = functools.partial
            routes += [
                Route("POST", f"/{kind}/query", "service", bind(self.query, kind), kind, "EnrollmentRead"),
                Route("POST", f"/{kind}", "service", bind(self.bulk, kind), kind, "EnrollmentWrite"),
                Route("GET", f"/{kind}/{{id}}", "service", bind(self.get, kind), kind, "EnrollmentRead", target="id"),
                Route("PUT", f"/{kind}/{{id}}", "service", bind(self.put, kind), kind, "EnrollmentWrite", target="id"),
                Route(
                    "DELETE",
                    f"/{kind}/{{id}}",
                    "service",
                    bind(self.delete, kind),
                    kind,
                    "EnrollmentWrite",
                    target="id",
                ),
                Route(
                    "POST",
                    f"/{kind}/{{id}}/attestationmechanism",
                    "service",
                    bind(self.attestation_mechanism, kind),
                    kind,
                    "EnrollmentRead",
                    target="id",
                ),
            ]
        routes += [
            Route(
                "POST",
                "/registrations/{id}/query",
                "service",
                self.query_registrations,
                "registrations",
                "RegistrationStatusRead",
                target="id",
            ),
            Route(
                "GET",
                "/registrations/{id}",
                "service",
                self.get_registration,
                "registrations",
                "RegistrationStatusRead",
                target="id",
            ),
            Route(
                "DELETE",
                "/registrations/{id}",
                "service",
                self.delete_registration,
                "registrations",
                "RegistrationStatusWrite",
                target="id",
            ),
        ]
        return routes

    # --- authentication ------------------------------------------------------------------------------------
    def accepted_hosts(self, request: Request) -> list[str]:
        """The `sr` host names this request may be signed for: the configured service_host, and the Host the
        client connected to (lower-cased, with and without its port)."""
        hosts = [self.config.service_host] if self.config.service_host else []
        host = request.headers.get("host", "").strip().lower()
        if host:
            hosts.append(host)
            without_port = re.sub(r":[0-9]+$", "", host)
            hosts.append(without_port)
        return list(dict.fromkeys(hosts))

    def _policy(self, name: str) -> Policy | None:
        for policy in self.config.policies:
            if policy.name.lower() == name.lower():
                return policy
        return None

    def authenticate(self, request: Request, params: dict[str, str], route: Route) -> Policy:
        header = request.headers.get("authorization", "")
        if not header:
            raise _unauthorized("the request has no 'Authorization: SharedAccessSignature ...' header")
        try:
            token = parse_sas(header)
        except SasError as exc:
            raise _unauthorized(str(exc)) from None
        if not token.key_name:
            raise _unauthorized("the SAS token has no skn (the shared access policy name)")
        policy = self._policy(token.key_name)
        if policy is None:
            raise _unauthorized(f"no shared access policy named {token.key_name!r}")
        if token.expiry <= time.time():
            raise _unauthorized(f"the SAS token expired at {token.expiry} (unix time)")
        hosts = self.accepted_hosts(request)
        if not service_resource_allows(token, hosts, request.path):
            raise _unauthorized(
                f"the SAS sr {token.resource!r} does not name this service for {request.path} "
                f"(accepted hosts: {', '.join(hosts) or 'none'})"
            )
        if not any(signature_matches(token, key) for key in policy.keys):
            raise _unauthorized(f"the SAS signature does not verify with the keys of policy '{policy.name}'")
        if route.permission not in policy.rights:
            raise _unauthorized(
                f"shared access policy '{policy.name}' lacks the {route.permission} right this request needs"
            )
        return policy

    # --- helpers -------------------------------------------------------------------------------------------
    @staticmethod
    def _page(request: Request, items: list[dict[str, Any]], item_type: str) -> Response:
        size_text = request.headers.get("x-ms-max-item-count")
        size = DEFAULT_PAGE_SIZE
        if size_text is not None:
            if not size_text.strip().isdigit() or not 1 <= int(size_text) <= MAX_PAGE_SIZE:
                raise bad_request(f"x-ms-max-item-count must be an integer from 1 to {MAX_PAGE_SIZE}.")
            size = int(size_text)
        offset = 0
        token = request.headers.get("x-ms-continuation")
        if token:
            try:
                offset = int(json.loads(base64.urlsafe_b64decode(token.encode("ascii")))["offset"])
            except (binascii.Error, ValueError, KeyError, TypeError, UnicodeEncodeError):
                raise bad_request("x-ms-continuation is not a continuation token this service issued.") from None
            if offset < 0:
                raise bad_request("x-ms-continuation is not a continuation token this service issued.")
        headers = {"x-ms-item-type": item_type, "x-ms-max-item-count": str(size)}
        if offset + size < len(items):
            next_token = json.dumps({"offset": offset + size}).encode("ascii")
            headers["x-ms-continuation"] = base64.urlsafe_b64encode(next_token).decode("ascii")
        return Response(200, items[offset : offset + size], headers)

    @staticmethod
    def _check_query(request: Request) -> None:
        body = json_body(request)
        query = body.get("query") if isinstance(body, dict) else None
        if not isinstance(query, str):
            raise bad_request('The body must be a QuerySpecification: {"query": "SELECT *"}.')
        if not QUERY_RE.match(query):
            raise bad_request(f"Query {query!r} is not supported by the emulator; only 'SELECT *' queries are.")

    # --- enrollments and enrollment groups -----------------------------------------------------------------
    def get(self, kind: str, request: Request, params: dict[str, str], _policy: Policy) -> Response:
        record = self.enrollments.require(kind, _valid_id(kind, params["id"]))
        view = public_view(record)
        if kind == INDIVIDUAL:
            registration = self.registrations.get(params["id"])
            if registration is not None:
                view["registrationState"] = registration_view(registration)
        return Response(200, view)

    def put(self, kind: str, request: Request, params: dict[str, str], _policy: Policy) -> Response:
        body = json_body(request)
        record = self.enrollments.put(kind, params["id"], body, request.headers.get("if-match"))
        return Response(200, written_view(record))

    def delete(self, kind: str, request: Request, params: dict[str, str], _policy: Policy) -> Response:
        self.enrollments.delete(kind, _valid_id(kind, params["id"]), request.headers.get("if-match"))
        return Response(204, None)

    def attestation_mechanism(self, kind: str, request: Request, params: dict[str, str], _policy: Policy) -> Response:
        return Response(200, attestation_view(self.enrollments.require(kind, _valid_id(kind, params["id"]))))

    def query(self, kind: str, request: Request, params: dict[str, str], _policy: Policy) -> Response:
        self._check_query(request)
        # like DPS, query results carry no registrationState (only a GET of one enrollment does)
        items = [public_view(record) for record in self.enrollments.list(kind)]
        return self._page(request, items, ITEM_TYPE[kind])

    def bulk(self, kind: str, request: Request, params: dict[str, str], _policy: Policy) -> Response:
        return Response(200, self.enrollments.bulk(kind, json_body(request)))

    # --- registration records ------------------------------------------------------------------------------
    def get_registration(self, request: Request, params: dict[str, str], _policy: Policy) -> Response:
        record = self.registrations.get(_valid_id("registrations", params["id"]))
        if record is None:
            raise ApiError(404, ERROR_REGISTRATION_NOT_FOUND, f"Registration '{params['id']}' not found.")
        return Response(200, registration_view(record))

    def delete_registration(self, request: Request, params: dict[str, str], _policy: Policy) -> Response:
        """Deletes DPS's record only: the device stays in its IoT hub (that is IoT Hub's, not DPS's)."""
        registration_id = _valid_id("registrations", params["id"])
        with self.registrations.transaction() as store:
            record = store.get(registration_id)
            if record is None:
                raise ApiError(404, ERROR_REGISTRATION_NOT_FOUND, f"Registration '{registration_id}' not found.")
            check_if_match(
                request.headers.get("if-match"),
                record["registrationState"].get("etag"),
                f"registration '{registration_id}'",
            )
            store.remove_record(registration_id)
        LOG.info("registration record %s deleted through the service API", registration_id)
        return Response(204, None)

    def query_registrations(self, request: Request, params: dict[str, str], _policy: Policy) -> Response:
        group_id = _valid_id(GROUP, params["id"])
        items = [registration_view(record) for record in self.registrations.by_group(group_id)]
        return self._page(request, items, "deviceRegistration")
