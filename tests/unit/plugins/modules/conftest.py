"""The DPS modules' unit tests run each module with a scripted transport and a fake clock (tests/support)."""

from __future__ import annotations

import pytest

from tests.support.dps_fakes import ModuleHarness


@pytest.fixture
def service_module(monkeypatch) -> ModuleHarness:
    return ModuleHarness(monkeypatch)
