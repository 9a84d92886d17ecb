"""A harness for the DPS service API modules: a scripted fake transport, a fake clock, captured exits."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils.testing import patch_module_args

WALL_CLOCK = 1700000000.0


class ModuleExit(Exception):
    def __init__(self, result: dict, failed: bool) -> None:
        super().__init__(result)
        self.result = result
        self.failed = failed


class ServiceModuleHarness:
    """Runs a service API module's main() with a scripted transport and captures exit_json/fail_json."""

    def __init__(self, monkeypatch) -> None:
        self.monkeypatch = monkeypatch
        self.script: list = []
        self.calls: list[dict] = []
        self.transport_options: dict = {}
        self.sleeps: list[float] = []
        self.warnings: list[str] = []
        self.logs: list[str] = []
        self.patched: set[str] = set()

    def _patch(self, module) -> None:
        if module.__name__ in self.patched:
            return
        self.patched.add(module.__name__)

        def fake_urls_transport(**options):
            self.transport_options = options

            def send(method, url, data, headers, timeout):
                self.calls.append(
                    dict(method=method, url=url, body=json.loads(data) if data else None, headers=dict(headers))
                )
                if not self.script:
                    raise AssertionError(f"unexpected request {method} {url}")
                item = self.script.pop(0)
                if isinstance(item, Exception):
                    raise item
                return item

            return send

        real_client = module.DpsServiceClient

        def client_factory(*args, **kwargs):
            return real_client(
                *args,
                clock=lambda: 100.0 + sum(self.sleeps),
                wall_clock=lambda: WALL_CLOCK,
                sleep=self.sleeps.append,
                **kwargs,
            )

        def exit_json(ansible_module, **result):
            raise ModuleExit(result, failed=False)

        def fail_json(ansible_module, msg, **result):
            raise ModuleExit(dict(result, msg=msg), failed=True)

        self.monkeypatch.setattr(module, "urls_transport", fake_urls_transport)
        self.monkeypatch.setattr(module, "DpsServiceClient", client_factory)
        self.monkeypatch.setattr(module.AnsibleModule, "exit_json", exit_json)
        self.monkeypatch.setattr(module.AnsibleModule, "fail_json", fail_json)
        self.monkeypatch.setattr(module.AnsibleModule, "warn", lambda ansible_module, text: self.warnings.append(text))
        self.monkeypatch.setattr(module.AnsibleModule, "log", lambda ansible_module, text, **kw: self.logs.append(text))

    def run(self, module, args: dict, *script) -> ModuleExit:
        self._patch(module)
        self.script = list(script)
        self.calls = []
        self.sleeps = []
        with patch_module_args(args), pytest.raises(ModuleExit) as caught:
            module.main()
        assert not self.script, f"scripted answers left unused: {self.script}"
        return caught.value

    def methods(self) -> list[str]:
        return [f"{call['method']} {call['url'].split('?')[0].split('/', 3)[3]}" for call in self.calls]


@pytest.fixture
def service_module(monkeypatch) -> ServiceModuleHarness:
    return ServiceModuleHarness(monkeypatch)
