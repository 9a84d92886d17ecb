"""Fixtures: test PKI, enrollment file and a running emulator (a real subprocess speaking real TLS)."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from dps_emulator.testing import Emulator, start_emulator

from tests.support.pki import Device, new_key

from .helpers import NOW, EmulatorPki, config_text


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> EmulatorPki:
    return EmulatorPki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def devices(pki: EmulatorPki) -> dict[str, Device]:
    return {
        "group": pki.device("dev-group-1"),
        "group2": pki.device("dev-group-2"),
        "individual": pki.device("dev-individual-1"),
        "disabled": pki.device("dev-disabled"),
        "unknown": pki.device("dev-unknown", issuer=pki.other_root),
        # claims the intermediate as its issuer, signed by an unrelated key
        "forged": pki.device("dev-forged", signing_key=new_key()),
        "unverified": pki.device("dev-unverified", issuer=pki.unverified_root),
        "expired": pki.device(
            "dev-expired",
            not_before=NOW - datetime.timedelta(days=10),
            not_after=NOW - datetime.timedelta(days=1),
        ),
        "future": pki.device("dev-future", not_before=NOW + datetime.timedelta(days=1)),
    }


@pytest.fixture(scope="session")
def config_file(pki: EmulatorPki, devices: dict[str, Device]) -> Path:
    path = pki.directory / "enrollments.yml"
    path.write_text(config_text(devices["individual"].leaf_file, devices["disabled"].leaf_file), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def emulator(config_file: Path, tmp_path_factory: pytest.TempPathFactory):
    running = start_emulator(config_file, tmp_path_factory.mktemp("dps-state"))
    yield running
    running.stop()
    assert running.process is not None and running.process.returncode == 0, running.log()


@pytest.fixture
def clean_faults(emulator: Emulator):
    emulator.clear_faults()
    yield emulator
    emulator.clear_faults()
