"""The emulator: one enrollment store, one registration store (DPS records and the hubs' devices) and the hubs'
configurations, shared by the device, service, IoT Hub and admin APIs."""

from __future__ import annotations

from pathlib import Path

from .admin_api import AdminApi
from .config import Config
from .device_api import DeviceApi
from .faults import FaultInjector
from .hub_api import HubApi
from .hub_store import HubStore
from .router import Router
from .service_api import ServiceApi
from .state import RegistrationStore
from .store import EnrollmentStore
from .wire import Request, Response


class Emulator:
    """What the HTTP layer (`transport.Server`) hands requests to."""

    def __init__(self, config: Config, state_dir: Path) -> None:
        self.config = config
        self.registrations = RegistrationStore(state_dir)
        self.enrollments = EnrollmentStore(state_dir, config)
        self.faults = FaultInjector(config.faults, config.rate_limit_per_minute, config.operations_per_minute)
        self.device_api = DeviceApi(config, self.enrollments, self.registrations, self.faults)
        self.service_api = ServiceApi(config, self.enrollments, self.registrations)
        self.hubs = HubStore(state_dir, config, self.registrations)
        self.hub_api = HubApi(config, self.registrations, self.hubs)
        self.admin_api = AdminApi(config, self.registrations, self.faults, self.device_api, self.hubs)
        # service routes first: "/registrations/{id}/query" would otherwise also fit the device status route
        # of an id scope named "registrations"; the hub routes' paths (/devices, /twins, /configurations) have a
        # segment count no device route has
        routes = [
            *self.service_api.routes(),
            *self.device_api.routes(),
            *self.hub_api.routes(),
            *self.admin_api.routes(),
        ]
        self.router = Router(
            routes,
            self.faults,
            {
                "device": self.device_api.authenticate,
                "service": self.service_api.authenticate,
                "hub": self.hub_api.authenticate,
                "none": lambda _request, _params, _route: None,
            },
        )

    def handle(self, request: Request) -> Response:
        return self.router.dispatch(request)

    def finalize_due(self) -> None:
        self.device_api.finalize_due()
