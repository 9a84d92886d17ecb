"""The IoT Hub modules' test harness: `dps_fakes.ModuleHarness` (its FakeTransport, FakeClock and `reply`) made to
patch the IoT Hub client (plugins/module_utils/_iothub.py) too, plus the hub's connection options.

- `HubHarness(monkeypatch)`: runs an iothub_* module with a scripted transport; `hub_args(**args)` are the
  connection options of hub HUB (policy HUB_OWNER, every right).
- `HubHarness(monkeypatch, emulator)`: the module's real transport (TLS, ca_path = the emulator's CA) answered by the
  emulator's IoT Hub API, at `service_url` = the emulator's https://127.0.0.1:PORT, signing for the hub name.
- `emulator_hub_client(emulator)`: an owner client of the emulator's hub for a test's own setup and checks.
- `hub_error(status, name, text)`: an IoT Hub error answer as the hub sends it.
- `emulator_hub_config(pki)`: the emulator of the hub modules' unit tests: hub HUB, policy HUB_OWNER with every
  right and one policy per right (`registryread` ...).
"""

from __future__ import annotations

import base64
import time

from ansible_collections.iotfleet.aziot.plugins.module_utils import _http, _iothub
from tests.support.dps_fakes import EMULATED_GROUP_KEY, EMULATED_ID_SCOPE, WALL_CLOCK, FakeClock, ModuleHarness, reply
from tests.support.emulator import fleet_config

HUB = "hub-unit-iothub.azure-devices.net"
HUB_OWNER = "iothubowner"
HUB_RIGHTS = ["RegistryRead", "RegistryWrite", "ServiceConnect", "DeviceConnect"]
# The client as the collection defines it (HubHarness replaces it in _iothub during a run).
HUB_CLIENT = _iothub.IotHubClient


def hub_policy_key(policy: str) -> str:
    return base64.b64encode(f"unit-iothub-policy-{policy}".ljust(32, "-").encode()).decode()


def hub_connection_string(policy: str = HUB_OWNER, hub: str = HUB, key: str | None = None) -> str:
    return f"HostName={hub};SharedAccessKeyName={policy};SharedAccessKey={key or hub_policy_key(policy)}"


def hub_error(status: int, name: str, text: str = "", **headers):
    """An IoT Hub error answer: {"Message": "ErrorCode:<name>;<text>", "ExceptionMessage": "Tracking ID:..."}."""
    body = {
        "Message": f"ErrorCode:{name};{text or name}",
        "ExceptionMessage": "Tracking ID:0f1e2d3c4b5a49788796a5b4c3d2e1f0-G:0-TimeStamp:12/07/2026 15:00:00",
    }
    return reply(status, body, **headers)


def emulator_hub_config(pki, **iot_hub) -> dict:
    """`fleet_config` with hub HUB and its IoT Hub policies: `iothubowner` has every right, `<right>` (lower-case)
    only that one; `iot_hub` adds keys of the emulator's iot_hub section (configuration_limit ...)."""
    policies = [{"name": HUB_OWNER, "primary_key": hub_policy_key(HUB_OWNER), "rights": HUB_RIGHTS}]
    policies += [
        {"name": right.lower(), "primary_key": hub_policy_key(right.lower()), "rights": [right]} for right in HUB_RIGHTS
    ]
    return fleet_config(
        EMULATED_ID_SCOPE,
        HUB,
        pki.root_path,
        EMULATED_GROUP_KEY,
        prefix="unit",
        defaults={"assignment_delay": 0, "retry_after": 2},
        iot_hub={"shared_access_policies": policies, **iot_hub},
    )


class HubHarness(ModuleHarness):
    """ModuleHarness for the iothub_* modules: their client (`_iothub.iothub_client`) gets the harness's transport
    and fake clock (the real wall clock against an emulator, which checks SAS expiries)."""

    def __init__(self, monkeypatch, emulator=None) -> None:
        super().__init__(monkeypatch, emulator)
        wall_clock = time.time if emulator else (lambda: WALL_CLOCK)

        def client(*args, **kwargs):
            return HUB_CLIENT(*args, clock=self.clock, wall_clock=wall_clock, sleep=self.clock.sleep, **kwargs)

        monkeypatch.setattr(_iothub, "urls_transport", self._module_fakes["urls_transport"])
        monkeypatch.setattr(_iothub, "IotHubClient", client)

    @property
    def service_url(self) -> str:
        return f"https://{self.emulator.host}:{self.emulator.port}"

    def hub_args(self, policy: str = HUB_OWNER, **args) -> dict:
        """An iothub_* module's connection options (for the emulator when there is one), plus `args`."""
        connection = dict(connection_string=hub_connection_string(policy))
        if self.emulator:
            connection.update(service_url=self.service_url, ca_path=self.emulator.ca_cert)
        return {**connection, **args}

    def hub_client(self, policy: str = HUB_OWNER) -> _iothub.IotHubClient:
        """A client of the emulator's hub, for a test's own reads and writes (not recorded)."""
        return emulator_hub_client(self.emulator, policy)


def emulator_hub_client(emulator, policy: str = HUB_OWNER) -> _iothub.IotHubClient:
    """A client of `emulator`'s hub HUB as `policy`, for a test's own reads and writes (a fixture's devices ...)."""
    service_url = f"https://{emulator.host}:{emulator.port}"
    credentials = _iothub.parse_connection_string(hub_connection_string(policy), service_url)
    transport = _http.urls_transport("iotfleet.aziot-tests", ca_path=emulator.ca_cert)
    return HUB_CLIENT(credentials, transport, "test setup", sleep=FakeClock().sleep)
