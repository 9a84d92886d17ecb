"""The IoT Hub service API of the linked hubs (api-version 2021-04-12): device identities, twins, configurations.

The same devices as DPS's "IoT Hub device list" (state.py): a device DPS assigned is in its hub with the twin copied
from initialTwin. Which hub a request is for comes from its SAS token's `sr`, which must name a linked hub; the
policies are the config's `iot_hub.shared_access_policies`. Field names follow the IoT Hub data-plane REST spec
(Device, Twin, Configuration, ConfigurationQueriesTestInput/Response, QuerySpecification); errors have IoT Hub's body
{"Message": "ErrorCode:<name>;...", "ExceptionMessage": ...} (wire.hub_error).
"""

from __future__ import annotations

import base64
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from . import hub_query
from .config import Config, Policy
from .enrollments import DEVICE_ID_RE
from .hub_store import HubStore, argument_invalid, query_errors, twin_document, x509_thumbprint
from .pki import iso_utc, utcnow
from .router import HUB_API_VERSIONS, Route
from .sas import SasError, parse_sas, service_resource_allows, signature_matches
from .service_api import ServiceApi
from .state import DEVICE_STATUSES, RegistrationStore, hub_etag
from .store import check_if_match
from .wire import HubError, Request, Response, json_body

LOG = logging.getLogger("dps_emulator")
READ, WRITE = "RegistryRead", "RegistryWrite"
MAX_TOP = 1000
AUTHENTICATION_TYPES = ("sas", "selfSigned", "certificateAuthority", "none")
NEVER = "0001-01-01T00:00:00Z"


@dataclass(frozen=True)
class HubPrincipal:
    hub: str  # the linked hub's name as the config spells it
    policy: Policy


def _unauthorized(message: str) -> HubError:
    LOG.info("IoT Hub API request refused: %s", message)
    return HubError(401, "IotHubUnauthorizedAccess", f"Unauthorized: {message}")


def device_not_found(hub: str, device_id: str) -> HubError:
    return HubError(404, "DeviceNotFound", f"Device '{device_id}' is not registered in IoT hub {hub}.")


def _top(request: Request) -> int:
    values = request.query.get("top", [])
    if not values:
        return MAX_TOP
    text = values[0].strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_TOP:
        raise argument_invalid(f"top must be an integer from 1 to {MAX_TOP}, got {values[0]!r}.")
    return int(text)


def _object(request: Request, what: str) -> dict[str, Any]:
    body = json_body(request)
    if not isinstance(body, dict):
        raise argument_invalid(f"{what}: the body must be a JSON object.")
    return body


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """IoT Hub's twin patch: nested objects merge, a null removes the key."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        elif isinstance(value, dict):
            target[key] = {}
            merge_patch(target[key], value)
        else:
            target[key] = value


def device_view(device: dict[str, Any]) -> dict[str, Any]:
    """The Device JSON (identity, status, etag)."""
    keys = device.get("symmetricKey") or {}
    return {
        "deviceId": device["deviceId"],
        "generationId": device["generationId"],
        "etag": device["etag"],
        "connectionState": "Disconnected",
        "status": device["status"],
        "statusReason": device["statusReason"],
        "connectionStateUpdatedTime": NEVER,
        "statusUpdatedTime": device["statusUpdatedTime"],
        "lastActivityTime": NEVER,
        "cloudToDeviceMessageCount": 0,
        "authentication": {
            "type": device["authenticationType"],
            "symmetricKey": {"primaryKey": keys.get("primaryKey"), "secondaryKey": keys.get("secondaryKey")},
            "x509Thumbprint": x509_thumbprint(device),
        },
        "capabilities": dict(device["capabilities"]),
    }


class HubApi:
    def __init__(self, config: Config, registrations: RegistrationStore, hubs: HubStore) -> None:
        self.config = config
        self.registrations = registrations
        self.hubs = hubs

    def routes(self) -> list[Route]:
        def hub(method: str, pattern: str, handler: Any, right: str) -> Route:
            return Route(method, pattern, "hub", handler, permission=right, api_versions=HUB_API_VERSIONS)

        return [
            hub("GET", "/devices", self.list_devices, READ),
            hub("POST", "/devices/query", self.query_devices, READ),
            hub("GET", "/devices/{id}", self.get_device, READ),
            hub("PUT", "/devices/{id}", self.put_device, WRITE),
            hub("DELETE", "/devices/{id}", self.delete_device, WRITE),
            hub("GET", "/twins/{id}", self.get_twin, READ),
            hub("PATCH", "/twins/{id}", self.patch_twin, WRITE),
            hub("PUT", "/twins/{id}", self.replace_twin, WRITE),
            hub("GET", "/configurations", self.list_configurations, READ),
            hub("POST", "/configurations/testQueries", self.test_queries, READ),
            hub("GET", "/configurations/{id}", self.get_configuration, READ),
            hub("PUT", "/configurations/{id}", self.put_configuration, WRITE),
            hub("DELETE", "/configurations/{id}", self.delete_configuration, WRITE),
        ]

    # --- authentication ------------------------------------------------------------------------------------
    def _policy(self, name: str) -> Policy | None:
        return next((policy for policy in self.config.iot_hub.policies if policy.name.lower() == name.lower()), None)

    def authenticate(self, request: Request, params: dict[str, str], route: Route) -> HubPrincipal:
        header = request.headers.get("authorization", "")
        if not header:
            raise _unauthorized("the request has no 'Authorization: SharedAccessSignature ...' header")
        try:
            token = parse_sas(header)
        except SasError as exc:
            raise _unauthorized(str(exc)) from None
        hub = next(
            (name for name in self.config.linked_hubs if service_resource_allows(token, [name.lower()], request.path)),
            None,
        )
        if hub is None:
            raise _unauthorized(
                f"the SAS sr {token.resource!r} names no IoT hub linked to this emulator for {request.path} "
                f"(linked: {', '.join(self.config.linked_hubs)})"
            )
        if not token.key_name:
            raise _unauthorized("the SAS token has no skn (the shared access policy name, e.g. iothubowner)")
        policy = self._policy(token.key_name)
        if policy is None:
            raise _unauthorized(f"IoT hub {hub} has no shared access policy named {token.key_name!r}")
        if token.expiry <= time.time():
            raise _unauthorized(f"the SAS token expired at {token.expiry} (unix time)")
        if not any(signature_matches(token, key) for key in policy.keys):
            raise _unauthorized(f"the SAS signature does not verify with the keys of policy '{policy.name}'")
        if route.permission not in policy.rights:
            raise _unauthorized(
                f"shared access policy '{policy.name}' lacks the {route.permission} right this request needs"
            )
        return HubPrincipal(hub, policy)

    # --- helpers -------------------------------------------------------------------------------------------
    def _device(self, principal: HubPrincipal, device_id: str) -> dict[str, Any]:
        device = self.registrations.device(principal.hub, device_id)
        if device is None:
            raise device_not_found(principal.hub, device_id)
        return device

    def _twin(self, hub: str, device: dict[str, Any]) -> dict[str, Any]:
        twin = twin_document(device)
        statuses = self.hubs.statuses(hub, twin)
        twin["configurations"] = {key: {"status": statuses[key]} for key in sorted(statuses)}
        return twin

    # --- devices -------------------------------------------------------------------------------------------
    def list_devices(self, request: Request, params: dict[str, str], principal: HubPrincipal) -> Response:
        devices = self.registrations.hub_devices(principal.hub)[: _top(request)]
        return Response(200, [device_view(device) for device in devices])

    def query_devices(self, request: Request, params: dict[str, str], principal: HubPrincipal) -> Response:
        body = _object(request, "device query")
        text = body.get("query")
        if not isinstance(text, str):
            raise argument_invalid('The body must be a QuerySpecification: {"query": "SELECT * FROM devices ..."}.')
        try:
            query = hub_query.parse_query(text)
        except hub_query.QuerySyntaxError as exc:
            raise argument_invalid(f"Query {text!r}: {exc}") from None
        twins = [twin for twin in self.hubs.twins(principal.hub) if query.matches(twin)]
        return ServiceApi._page(request, twins, "twin")  # DPS's paging: the same headers

    def get_device(self, request: Request, params: dict[str, str], principal: HubPrincipal) -> Response:
        return Response(200, device_view(self._device(principal, params["id"])))

    def put_device(self, request: Request, params: dict[str, str], principal: HubPrincipal) -> Response:
        device_id = params["id"]
        what = f"device '{device_id}'"
        if not DEVICE_ID_RE.match(device_id):
            raise argument_invalid(f"{what}: a device id is 1-128 letters, digits and -.+%_#*?!(),:=@$' characters.")
        body = _object(request, what)
        if body.get("deviceId") not in (None, device_id):
            raise argument_invalid(f"{what}: the body's deviceId {body['deviceId']!r} is not the id in the URL.")
        status = body.get("status")
        if status is not None and status not in DEVICE_STATUSES:
            raise argument_invalid(f"{what}: status must be enabled or disabled, got {status!r}.")
        reason = body.get("statusReason")
        if reason is not None and not isinstance(reason, str):
            raise argument_invalid(f"{what}: statusReason must be a string.")
        capabilities = body.get("capabilities") or {}
        if not isinstance(capabilities, dict) or not isinstance(capabilities.get("iotEdge", False), bool):
            raise argument_invalid(f'{what}: capabilities must be {{"iotEdge": true|false}}.')
        if_match = request.headers.get("if-match")
        now = iso_utc(utcnow())
        with self.registrations.transaction() as store:
            device = store.device(principal.hub, device_id)
            if device is None:
                if if_match is not None:
                    raise device_not_found(principal.hub, device_id)
                device = self._new_device(principal.hub, device_id, body, now)
            else:
                if if_match is None:
                    raise HubError(
                        409,
                        "DeviceAlreadyExists",
                        f"{what.capitalize()} already exists in {principal.hub}; to update it send If-Match with its "
                        "etag (or *).",
                    )
                check_if_match(if_match, device["etag"], what)
            if status is not None and status != device.get("status"):
                device["statusUpdatedTime"] = now
                device["status"] = status
            if "statusReason" in body:
                device["statusReason"] = reason
            if "iotEdge" in capabilities:
                device["capabilities"] = {"iotEdge": capabilities["iotEdge"]}
            device["etag"] = hub_etag()
            device["lastUpdatedDateTimeUtc"] = now
            store.set_device(device)
            saved = store.device(principal.hub, device_id)
        LOG.info("%s written through the IoT Hub API of %s (status %s)", what, principal.hub, saved["status"])
        return Response(200, device_view(saved))

    @staticmethod
    def _new_device(hub: str, device_id: str, body: dict[str, Any], now: str) -> dict[str, Any]:
        """A device created with PUT /devices/{id} (not through DPS)."""
        authentication = body.get("authentication") or {}
        kind = authentication.get("type", "sas") if isinstance(authentication, dict) else None
        if kind not in AUTHENTICATION_TYPES:
            raise argument_invalid(
                f"device '{device_id}': authentication.type must be one of {', '.join(AUTHENTICATION_TYPES)}."
            )
        device: dict[str, Any] = {
            "deviceId": device_id,
            "assignedHub": hub,
            "registrationId": None,
            "createdDateTimeUtc": now,
            "registrationCount": 0,
            "authenticationType": kind,
            "statusUpdatedTime": now,
        }
        if kind == "sas":
            given = authentication.get("symmetricKey") or {}
            device["symmetricKey"] = {
                name: given.get(name) or base64.b64encode(secrets.token_bytes(32)).decode("ascii")
                for name in ("primaryKey", "secondaryKey")
            }
        elif kind == "selfSigned":
            thumbprints = authentication.get("x509Thumbprint") or {}
            if not thumbprints.get("primaryThumbprint"):
                raise argument_invalid(
                    f"device '{device_id}': selfSigned authentication needs x509Thumbprint.primaryThumbprint."
                )
            device["primaryThumbprint"] = thumbprints["primaryThumbprint"]
            device["secondaryThumbprint"] = thumbprints.get("secondaryThumbprint")
        return device

    def delete_device(self, request: Request, params: dict[str, str], principal: HubPrincipal) -> Response:
        device_id = params["id"]
        with self.registrations.transaction() as store:
            device = store.device(principal.hub, device_id)
            if device is None:
                raise device_not_found(principal.hub, device_id)
            check_if_match(request.headers.get("if-match"), device["etag"], f"device '{device_id}'")
            store.remove_device(principal.hub, device_id)
        LOG.info("device '%s' deleted through the IoT Hub API of %s", device_id, principal.hub)
        return Response(204, None)

    # --- twins ---------------------------------------------------------------------------------------------
    def get_twin(self, request: Request, params: dict[str, str], principal: HubPrincipal) -> Response:
        return Response(200, self._twin(principal.hub, self._device(principal, params["id"])))

    def patch_twin(self, request: Request, params: dict[str, str], principal: HubPrincipal) -> Response:
        return self._write_twin(request, params, principal, replace=False)

    def replace_twin(self, request: Request, params: dict[str, str], principal: HubPrincipal) -> Response:
        return self._write_twin(request, params, principal, replace=True)

    def _write_twin(
        self, request: Request, params: dict[str, str], principal: HubPrincipal, *, replace: bool
    ) -> Response:
        """PATCH merges tags and desired properties (null removes); PUT replaces them. Reported properties are the
        device's: the service cannot write them."""
        device_id = params["id"]
        what = f"twin of device '{device_id}'"
        body = _object(request, what)
        tags = body.get("tags")
        properties = body.get("properties") or {}
        if tags is not None and not isinstance(tags, dict):
            raise argument_invalid(f"{what}: tags must be an object.")
        if not isinstance(properties, dict):
            raise argument_invalid(f"{what}: properties must be an object.")
        if properties.get("reported") is not None:
            raise argument_invalid(f"{what}: reported properties are written by the device, not the service.")
        desired = properties.get("desired")
        if desired is not None and not isinstance(desired, dict):
            raise argument_invalid(f"{what}: properties.desired must be an object.")
        desired = {key: value for key, value in (desired or {}).items() if not key.startswith("$")}
        with self.registrations.transaction() as store:
            device = store.device(principal.hub, device_id)
            if device is None:
                raise device_not_found(principal.hub, device_id)
            check_if_match(request.headers.get("if-match"), device["twinEtag"], what)
            new_tags = {} if replace else dict(device["tags"])
            new_desired = {} if replace else dict(device["desired"])
            merge_patch(new_tags, tags or {})
            merge_patch(new_desired, desired)
            if (new_tags, new_desired) != (device["tags"], device["desired"]):
                if new_desired != device["desired"]:
                    device["desiredVersion"] += 1
                device["tags"], device["desired"] = new_tags, new_desired
                device["twinEtag"] = hub_etag()
                device["twinVersion"] += 1
                store.set_device(device)
            saved = store.device(principal.hub, device_id)
        return Response(200, self._twin(principal.hub, saved))

    # --- configurations ------------------------------------------------------------------------------------
    def list_configurations(self, request: Request, params: dict[str, str], principal: HubPrincipal) -> Response:
        top = _top(request)
        self.hubs.count_operation(principal.hub)
        twins = self.hubs.twins(principal.hub)
        configurations = self.hubs.list(principal.hub)[:top]
        return Response(200, [self.hubs.with_metrics(principal.hub, item, twins) for item in configurations])

    def get_configuration(self, request: Request, params: dict[str, str], principal: HubPrincipal) -> Response:
        configuration = self.hubs.get(principal.hub, params["id"])
        return Response(200, self.hubs.with_metrics(principal.hub, configuration))

    def put_configuration(self, request: Request, params: dict[str, str], principal: HubPrincipal) -> Response:
        self.hubs.count_operation(principal.hub)
        body = json_body(request)
        configuration = self.hubs.put(principal.hub, params["id"], body, request.headers.get("if-match"))
        return Response(200, self.hubs.with_metrics(principal.hub, configuration))

    def delete_configuration(self, request: Request, params: dict[str, str], principal: HubPrincipal) -> Response:
        self.hubs.count_operation(principal.hub)
        self.hubs.delete(principal.hub, params["id"], request.headers.get("if-match"))
        return Response(204, None)

    def test_queries(self, request: Request, params: dict[str, str], principal: HubPrincipal) -> Response:
        """ConfigurationQueriesTestInput -> ConfigurationQueriesTestResponse (errors as text, empty when valid)."""
        body = _object(request, "testQueries")
        metrics = body.get("customMetricQueries") or {}
        if not isinstance(metrics, dict):
            raise argument_invalid("testQueries: customMetricQueries must map metric names to query strings.")
        target_error, metric_errors = query_errors(body.get("targetCondition"), metrics)
        return Response(200, {"targetConditionError": target_error, "customMetricQueryErrors": metric_errors})
