"""Fakes for the collection's DPS clients (plugins/module_utils/_dps.py, _dps_service.py, both on _http.py): no network,
no waiting.

- `reply(status, body, retry_after=1)`: a transport answer (`Response`), headers from keywords (`_` -> `-`).
- `FakeTransport(*script)`: answers requests from a script (answers, exceptions to raise) and records each request.
- `FakeClock()`: a monotonic clock whose `sleep` only moves it on (and records the sleeps).
- `ModuleHarness`: runs a DPS module with a scripted transport and a fake clock (`run_module` underneath); given an
  emulator, the module's transport is the real one (`_http.urls_transport`, over TLS) answered by that DPS emulator
  instead of a script, still recorded, still on the fake clock (so no Retry-After is waited for).
- `emulator_config(pki)`: the emulator the DPS modules' unit tests run against (`EMULATED_*` below, every policy).
- `individual_enrollment(harness, pki, registration_id, status, iot_hubs)`: an individual X.509 enrollment for a device
  of `pki` (its own certificate, as revoke.yml / replace.yml make them), put through the service API; the device.

Scripted replies are for what the emulator cannot produce (a reset mid-body, a failed assignment, a 403 ...): the
rest runs against the emulator, so that the modules and the emulator cannot drift apart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from types import ModuleType

from ansible_collections.iotfleet.aziot.plugins.module_utils import _dps, _dps_service, _http
from ansible_collections.iotfleet.aziot.plugins.module_utils._http import Response
from tests.support.emulator import fleet_config
from tests.support.modules import ModuleRun, run_module

WALL_CLOCK = 1700000000.0
# The clients as the collection defines them (ModuleHarness replaces them in the modules' namespaces during a run).
SERVICE_CLIENT = _dps_service.DpsServiceClient
DEVICE_CLIENT = _dps.DpsClient

# The emulator of the DPS modules' unit tests: groups unit-x509 (on the Pki's verified root) and unit-sym, one hub,
# an owner policy and one policy per single right; answers at once (assignment_delay 0), Retry-After 2.
EMULATED_ID_SCOPE = "0ne00UNITMD"
EMULATED_HUB = "hub-unit-modules.azure-devices.net"
EMULATED_GROUP_KEY = base64.b64encode(b"unit-modules-group-key-012345678").decode()
OWNER_POLICY = "provisioningserviceowner"
RIGHTS = ["ServiceConfig", "EnrollmentRead", "EnrollmentWrite", "RegistrationStatusRead", "RegistrationStatusWrite"]


def policy_key(policy: str) -> str:
    return base64.b64encode(f"unit-modules-policy-{policy}".ljust(32, "-").encode()).decode()


def group_device_key(registration_id: str) -> str:
    """The device key of a unit-sym device, from the Azure docs (not the collection's derive_device_key)."""
    digest = hmac.new(base64.b64decode(EMULATED_GROUP_KEY), registration_id.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def emulator_config(pki) -> dict:
    """`fleet_config` for the DPS modules' unit tests: policy `provisioningserviceowner` has every right, policy
    `<right>` (e.g. `enrollmentread`) only that one."""
    policies = [{"name": OWNER_POLICY, "primary_key": policy_key(OWNER_POLICY), "rights": RIGHTS}]
    policies += [
        {"name": right.lower(), "primary_key": policy_key(right.lower()), "rights": [right]} for right in RIGHTS
    ]
    return fleet_config(
        EMULATED_ID_SCOPE,
        EMULATED_HUB,
        pki.root_path,
        EMULATED_GROUP_KEY,
        prefix="unit",
        shared_access_policies=policies,
        defaults={"assignment_delay": 0, "retry_after": 2},
    )


def individual_enrollment(harness, pki, registration_id: str, status: str, iot_hubs: list[str] | None = None):
    made = pki.device(registration_id)
    enrollment = {
        "registrationId": registration_id,
        "attestation": {
            "type": "x509",
            "x509": {"clientCertificates": {"primary": {"certificate": made.issued.pem_text}}},
        },
        "provisioningStatus": status,
    }
    if iot_hubs is not None:
        enrollment["iotHubs"] = iot_hubs
    harness.service_client().put(_dps_service.ENROLLMENTS, registration_id, enrollment, None)
    return made


def reply(status: int, body=None, **headers) -> Response:
    raw = json.dumps(body).encode() if body is not None else b""
    return Response(status, {key.replace("_", "-"): str(value) for key, value in headers.items()}, raw)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeTransport:
    """Answers requests from a script: each item is a Response or an exception instance to raise. With `send` (a
    real transport), forwards every request to it instead, first calling `before(call)` if set (another writer's
    move between two of the module's requests)."""

    def __init__(self, *script, send: Callable | None = None) -> None:
        self.script = list(script)
        self.send = send
        self.before: Callable[[dict], None] | None = None
        self.calls: list[dict] = []
        self.options: dict = {}  # what the module asked urls_transport() for

    def __call__(self, method, url, data, headers, timeout):
        self.calls.append(
            dict(
                method=method, url=url, body=json.loads(data) if data else None, headers=dict(headers), timeout=timeout
            )
        )
        if self.send is not None:
            if self.before is not None:
                self.before(self.calls[-1])
            return self.send(method, url, data, headers, timeout)
        if not self.script:
            raise AssertionError(f"unexpected request {method} {url}")
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def methods(self) -> list[str]:
        """'METHOD path' of every request, without the host and the query."""
        return [f"{call['method']} {call['url'].split('?')[0].split('/', 3)[3]}" for call in self.calls]


class ModuleHarness:
    """Runs a DPS module's main() against a FakeTransport and a FakeClock; module.log lines land in `logs`.

    With `emulator` (a running DPS emulator, `dps_emulator.testing.Emulator`) the transport forwards to the real
    `urls_transport` the module asked for (its TLS options: point ca_path at `emulator.ca_cert`), and the wall clock
    is the real one (the emulator checks SAS expiries); `run` then takes no script."""

    def __init__(self, monkeypatch, emulator=None) -> None:
        self.monkeypatch = monkeypatch
        self.emulator = emulator
        self.transport = FakeTransport()
        self.clock = FakeClock(100.0)
        self.logs: list[str] = []
        self.last: ModuleRun | None = None
        wall_clock = time.time if emulator else lambda: WALL_CLOCK

        def fake_urls_transport(**options):
            self.transport.options = options
            if emulator:
                self.transport.send = _http.urls_transport(**options)
            return self.transport

        def with_fake_clock(client_class):
            def make(*args, **kwargs):
                return client_class(*args, clock=self.clock, wall_clock=wall_clock, sleep=self.clock.sleep, **kwargs)

            return make

        # The service modules build their client in _dps_service.service_client(); dps_register builds its own.
        monkeypatch.setattr(_dps_service, "urls_transport", fake_urls_transport)
        monkeypatch.setattr(_dps_service, "DpsServiceClient", with_fake_clock(_dps_service.DpsServiceClient))
        self._module_fakes = {"urls_transport": fake_urls_transport, "DpsClient": with_fake_clock(_dps.DpsClient)}

    @property
    def calls(self) -> list[dict]:
        return self.transport.calls

    @property
    def sleeps(self) -> list[float]:
        return self.clock.sleeps

    @property
    def transport_options(self) -> dict:
        return self.transport.options

    def methods(self) -> list[str]:
        return self.transport.methods()

    @property
    def warnings(self) -> list[str]:
        """What the last run warned."""
        return self.last.warnings if self.last else []

    # --- against the emulator -----------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        """The emulator's host:port (a connection string's HostName, dps_register's provisioning_host)."""
        return f"{self.emulator.host}:{self.emulator.port}"

    def connection_string(self, policy: str = OWNER_POLICY, key: str | None = None) -> str:
        return f"HostName={self.address};SharedAccessKeyName={policy};SharedAccessKey={key or policy_key(policy)}"

    def service_args(self, policy: str = OWNER_POLICY, **args) -> dict:
        """A service API module's connection options for the emulator, plus `args`."""
        return dict(connection_string=self.connection_string(policy), ca_path=self.emulator.ca_cert, **args)

    def service_client(self) -> _dps_service.DpsServiceClient:
        """An owner client of the emulator's service API, for a test's own reads and writes (not recorded)."""
        credentials = _dps_service.parse_connection_string(self.connection_string())
        transport = _http.urls_transport("iotfleet.aziot-tests", ca_path=self.emulator.ca_cert)
        return SERVICE_CLIENT(credentials, transport, "test setup", sleep=FakeClock().sleep)

    def device_client(self, registration_id: str, cert: tuple[str, str] | None = None) -> _dps.DpsClient:
        """A device of the emulator (an X.509 (chain, key), else of group unit-sym), for a test's own registrations."""
        client_cert, client_key = cert or (None, None)
        transport = _http.urls_transport(
            "iotfleet.aziot-tests", client_cert=client_cert, client_key=client_key, ca_path=self.emulator.ca_cert
        )
        device_key = None if cert else group_device_key(registration_id)
        return DEVICE_CLIENT(
            EMULATED_ID_SCOPE,
            registration_id,
            transport,
            provisioning_host=self.address,
            device_key=device_key,
            sleep=FakeClock().sleep,
        )

    def before_request(self, callback: Callable[[dict], None] | None) -> None:
        """Call `callback(call)` before each request of the next runs reaches the emulator (None: stop)."""
        self.transport.before = callback

    def run(self, module: ModuleType, args: dict, *script) -> ModuleRun:
        """Run `module` with `args`; the transport answers with `script`, all of which must be used (or, with an
        emulator, the emulator answers)."""
        if self.emulator and script:
            raise ValueError("a harness on the emulator takes no scripted replies")
        for name, fake in self._module_fakes.items():
            if hasattr(module, name):
                self.monkeypatch.setattr(module, name, fake)
        self.monkeypatch.setattr(module.AnsibleModule, "log", lambda ansible_module, text, **kw: self.logs.append(text))
        self.transport.script = list(script)
        self.transport.calls.clear()
        self.clock.sleeps.clear()
        self.last = run_module(module, args)
        assert not self.transport.script, f"scripted answers left unused: {self.transport.script}"
        return self.last
