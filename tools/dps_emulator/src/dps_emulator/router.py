"""Routing: (method, path pattern) -> auth kind, fault endpoint, permission and handler, for every API surface.

The order of checks is the one a DPS front end shows: unknown path (404), wrong method (405), api-version (400),
injected faults, the operations quota (DPS routes; operations.py counts them), then authentication by the route's
kind, then the handler. IoT Hub routes (auth kind "hub") have
their own api-versions and answer every error in IoT Hub's shape (wire.hub_error) instead of DPS's.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import SUPPORTED_API_VERSIONS
from .faults import FaultInjector
from .operations import operation_of
from .wire import (
    ERROR_API_VERSION,
    ERROR_METHOD,
    ERROR_NOT_FOUND,
    ApiError,
    Request,
    Response,
    error,
    hub_error,
    hub_response,
)

AUTH_KINDS = ("device", "service", "hub", "none")
# What IoT Hub's service API accepts here: the Node SDK and the collection send 2021-04-12.
HUB_API_VERSIONS = ("2020-05-31-preview", "2020-09-30", "2021-04-12")
Handler = Callable[[Request, dict[str, str], Any], Response]
Authenticator = Callable[[Request, dict[str, str], "Route"], Any]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str  # "/enrollments/{id}": literal segments (matched case-insensitively, as DPS does) and {parameters}
    auth: str  # "device" (attestation), "service" (DPS SAS policy), "hub" (IoT Hub SAS policy), "none" (admin)
    handler: Handler
    endpoint: str | None = None  # fault endpoint name; None: faults never apply
    permission: str | None = None  # service routes: the policy right the request needs
    api_version: bool = True
    target: str | None = None  # the parameter a fault's registration_id filter compares with
    api_versions: tuple[str, ...] = SUPPORTED_API_VERSIONS
    segments: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.auth not in AUTH_KINDS:
            raise ValueError(f"route {self.method} {self.pattern}: unknown auth kind {self.auth!r}")
        segments = (part for part in self.pattern.strip("/").split("/") if part)
        # literal segments are kept lower-cased: DPS serves /enrollmentgroups/... as /enrollmentGroups/... (the Node
        # service client sends it so), so literals compare case-insensitively; parameters keep their spelling
        object.__setattr__(self, "segments", tuple(part if part.startswith("{") else part.lower() for part in segments))

    def match(self, segments: list[str]) -> dict[str, str] | None:
        if len(segments) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for template, segment in zip(self.segments, segments, strict=True):
            if template.startswith("{") and template.endswith("}"):
                if not segment:
                    return None
                params[template[1:-1]] = segment
            elif template != segment.lower():
                return None
        return params


class Router:
    def __init__(self, routes: list[Route], faults: FaultInjector, authenticators: dict[str, Authenticator]) -> None:
        self.routes = routes
        self.faults = faults
        self.authenticators = authenticators

    def dispatch(self, request: Request) -> Response:
        segments = [urllib.parse.unquote(part) for part in request.path.strip("/").split("/") if part]
        matches = [(route, params) for route in self.routes if (params := route.match(segments)) is not None]
        if not matches:
            return error(404, ERROR_NOT_FOUND, f"No DPS resource at {request.path}.")
        chosen = [(route, params) for route, params in matches if route.method == request.method]
        if not chosen:
            allowed = ", ".join(sorted({route.method for route, _ in matches}))
            if all(route.auth == "hub" for route, _ in matches):
                return hub_error(
                    405,
                    "MethodNotAllowed",
                    f"{request.method} is not allowed on {request.path}; use {allowed}.",
                    {"Allow": allowed},
                )
            return error(
                405,
                ERROR_METHOD,
                f"{request.method} is not allowed on {request.path}; use {allowed}.",
                {"Allow": allowed},
            )
        route, params = chosen[0]
        operation = operation_of(route)
        admission = None
        try:
            if route.api_version:
                api_versions = request.query.get("api-version", [])
                if not api_versions or api_versions[0] not in route.api_versions:
                    given = api_versions[0] if api_versions else "(none)"
                    message = (
                        f"The api-version query parameter {given!r} is not supported; use one of "
                        f"{', '.join(route.api_versions)}."
                    )
                    if route.auth == "hub":
                        return hub_error(400, "InvalidProtocolVersion", message)
                    return error(400, ERROR_API_VERSION, message)
            if route.endpoint is not None:
                fault = self.faults.apply(route.endpoint, params.get(route.target) if route.target else None)
                if fault is not None:
                    return fault
            if operation is not None:
                # a DPS operation from here on, whatever the answer (a lookup's 404 is billed as well)
                admission, throttled = self.faults.admit_operation(*operation)
                if throttled is not None:
                    return throttled
            principal = self.authenticators[route.auth](request, params, route)
            response = route.handler(request, params, principal)
        except ApiError as exc:
            response = hub_response(exc) if route.auth == "hub" else exc.response()
        if admission is not None and response.status == 429:
            self.faults.operations.refund(admission)  # throttled after all (registrations per minute): not billed
        return response
