"""The emulator's own admin routes (/_emulator/...): health, the IoT Hub device list, registrations, faults, the DPS
operations counted, and which configurations each device of a hub gets.

No authentication and no api-version: a test tool's back door, listening where the emulator listens.
"""

from __future__ import annotations

from typing import Any

from .config import Config, ConfigError, parse_fault
from .device_api import DeviceApi
from .faults import FaultInjector
from .hub_store import HubStore
from .router import Route
from .state import RegistrationStore, device_list
from .wire import ERROR_NOT_FOUND, ApiError, Request, Response, bad_request, json_body


class AdminApi:
    def __init__(
        self,
        config: Config,
        registrations: RegistrationStore,
        faults: FaultInjector,
        device_api: DeviceApi,
        hubs: HubStore,
    ) -> None:
        self.config = config
        self.registrations = registrations
        self.faults = faults
        self.device_api = device_api
        self.hubs = hubs

    def routes(self) -> list[Route]:
        def admin(method: str, path: str, handler: Any) -> Route:
            return Route(method, f"/_emulator/{path}", "none", handler, api_version=False)

        return [
            admin("GET", "health", self.health),
            admin("GET", "devices", self.devices),
            admin("GET", "registrations", self.registrations_listing),
            admin("DELETE", "registrations", self.forget_registrations),
            admin("GET", "faults", self.fault_listing),
            admin("POST", "faults", self.add_faults),
            admin("DELETE", "faults", self.clear_faults),
            admin("GET", "hubs/{hub}/configurations-applied", self.configurations_applied),
            admin("GET", "operations", self.operations),
            admin("DELETE", "operations", self.reset_operations),
        ]

    def health(self, request: Request, params: dict[str, str], _principal: None) -> Response:
        return Response(200, {"status": "ok", "idScope": self.config.id_scope})

    def devices(self, request: Request, params: dict[str, str], _principal: None) -> Response:
        self.device_api.finalize_due()
        return Response(200, device_list(self.registrations.device_snapshot()))

    def registrations_listing(self, request: Request, params: dict[str, str], _principal: None) -> Response:
        self.device_api.finalize_due()
        return Response(200, self.registrations.snapshot())

    def forget_registrations(self, request: Request, params: dict[str, str], _principal: None) -> Response:
        """Forget every registration record and every hub device (a clean slate for the next test)."""
        self.registrations.clear()
        return Response(200, {})

    def fault_listing(self, request: Request, params: dict[str, str], _principal: None) -> Response:
        return Response(200, self.faults.listing())

    def add_faults(self, request: Request, params: dict[str, str], _principal: None) -> Response:
        body = json_body(request)
        entries = body.get("faults") if isinstance(body, dict) and "faults" in body else body
        if isinstance(entries, dict):
            entries = [entries]
        if not isinstance(entries, list):
            raise bad_request('POST a fault object, a list of them, or {"faults": [...]}.')
        try:
            faults = [parse_fault(entry, f"faults[{index}]") for index, entry in enumerate(entries)]
        except ConfigError as exc:
            raise bad_request(str(exc)) from None
        self.faults.add(faults)
        return Response(200, self.faults.listing())

    def clear_faults(self, request: Request, params: dict[str, str], _principal: None) -> Response:
        self.faults.clear()
        return Response(200, [])

    def operations(self, request: Request, params: dict[str, str], _principal: None) -> Response:
        """The DPS operations counted since start-up or the last reset (operations.py says what counts)."""
        return Response(200, self.faults.operations.snapshot(self.faults.operations_per_minute))

    def reset_operations(self, request: Request, params: dict[str, str], _principal: None) -> Response:
        self.faults.operations.reset()
        return Response(200, self.faults.operations.snapshot(self.faults.operations_per_minute))

    def configurations_applied(self, request: Request, params: dict[str, str], _principal: None) -> Response:
        """{deviceId: [ids of the configurations applied to it]} for every device of a linked hub, evaluated now."""
        hub = next((name for name in self.config.linked_hubs if name.lower() == params["hub"].lower()), None)
        if hub is None:
            raise ApiError(
                404,
                ERROR_NOT_FOUND,
                f"{params['hub']} is not a linked hub; use one of {', '.join(self.config.linked_hubs)}.",
            )
        self.device_api.finalize_due()
        return Response(200, self.hubs.applied(hub))
