"""The DPS modules' unit tests run each module's main() against the DPS emulator (`dps_module`: the real transport,
a fake clock), or, for what the emulator cannot produce, with a scripted transport (`service_module`); the iothub_*
modules' likewise against the emulator's IoT Hub API (`hub_emulator_module`) or scripted (`hub_module`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.dps_fakes import ModuleHarness, emulator_config
from tests.support.iothub_fakes import HubHarness, emulator_hub_config
from tests.support.pki import Pki


@pytest.fixture
def service_module(monkeypatch) -> ModuleHarness:
    return ModuleHarness(monkeypatch)


@pytest.fixture(scope="module")
def emulator_pki(tmp_path_factory) -> Pki:
    """The PKI whose root the emulator's unit-x509 group trusts (verified)."""
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def dps_emulator(dps_emulator_factory, emulator_pki):
    """One emulator per test file; tests use their own ids, so they need no fresh one."""
    return dps_emulator_factory(emulator_config(emulator_pki))


@pytest.fixture
def dps_module(monkeypatch, dps_emulator) -> Iterator[ModuleHarness]:
    dps_emulator.clear_faults()
    yield ModuleHarness(monkeypatch, dps_emulator)
    dps_emulator.clear_faults()


@pytest.fixture
def hub_module(monkeypatch) -> HubHarness:
    """An iothub_* module run with scripted IoT Hub answers."""
    return HubHarness(monkeypatch)


@pytest.fixture(scope="module")
def hub_emulator(dps_emulator_factory, emulator_pki):
    """One emulator serving hub HUB per test file (emulator_hub_config); tests use their own device ids."""
    return dps_emulator_factory(emulator_hub_config(emulator_pki))


@pytest.fixture
def hub_emulator_module(monkeypatch, hub_emulator) -> Iterator[HubHarness]:
    """An iothub_* module run against the emulator's IoT Hub API (the real transport, a fake clock)."""
    hub_emulator.clear_faults()
    yield HubHarness(monkeypatch, hub_emulator)
    hub_emulator.clear_faults()
