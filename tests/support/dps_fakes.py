"""Fakes for the collection's DPS clients (plugins/module_utils/_dps.py, _dps_service.py, both on _http.py): no network,
no waiting.

- `reply(status, body, retry_after=1)`: a transport answer (`Response`), headers from keywords (`_` -> `-`).
- `FakeTransport(*script)`: answers requests from a script (answers, exceptions to raise) and records each request.
- `FakeClock()`: a monotonic clock whose `sleep` only moves it on (and records the sleeps).
- `ModuleHarness`: runs a DPS module with a scripted transport and a fake clock (`run_module` underneath).
"""

from __future__ import annotations

import json
from types import ModuleType

from ansible_collections.iotfleet.aziot.plugins.module_utils import _dps, _dps_service
from ansible_collections.iotfleet.aziot.plugins.module_utils._http import Response
from tests.support.modules import ModuleRun, run_module

WALL_CLOCK = 1700000000.0


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
    """Answers requests from a script: each item is a Response or an exception instance to raise."""

    def __init__(self, *script) -> None:
        self.script = list(script)
        self.calls: list[dict] = []
        self.options: dict = {}  # what the module asked urls_transport() for

    def __call__(self, method, url, data, headers, timeout):
        self.calls.append(
            dict(
                method=method, url=url, body=json.loads(data) if data else None, headers=dict(headers), timeout=timeout
            )
        )
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
    """Runs a DPS module's main() against a FakeTransport and a FakeClock; module.log lines land in `logs`."""

    def __init__(self, monkeypatch) -> None:
        self.monkeypatch = monkeypatch
        self.transport = FakeTransport()
        self.clock = FakeClock(100.0)
        self.logs: list[str] = []
        self.last: ModuleRun | None = None

        def fake_urls_transport(**options):
            self.transport.options = options
            return self.transport

        def with_fake_clock(client_class):
            def make(*args, **kwargs):
                return client_class(
                    *args, clock=self.clock, wall_clock=lambda: WALL_CLOCK, sleep=self.clock.sleep, **kwargs
                )

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

    def run(self, module: ModuleType, args: dict, *script) -> ModuleRun:
        """Run `module` with `args`; the transport answers with `script`, all of which must be used."""
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
