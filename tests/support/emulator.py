"""The DPS emulator fixture factory, on top of `dps_emulator.testing` (the emulator's own stable test interface).

    @pytest.fixture(scope="module")
    def emulator(dps_emulator_factory, pki):
        return dps_emulator_factory(fleet_config(ID_SCOPE, HUB, pki.root_path, GROUP_KEY))

Each call writes the configuration (a dict, dumped as YAML, or YAML text) to a fresh directory, starts an emulator
process there and returns its `Emulator`. Every emulator the factory started is stopped at the end of the session,
and must have exited cleanly (its log is shown when not). `fleet_config()` is the configuration most suites start
from.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from dps_emulator.testing import Emulator, start_emulator

EmulatorFactory = Callable[..., Emulator]
# The linked IoT hubs' owner policy (config key iot_hub), for the IoT Hub service API: every right.
HUB_POLICY = "iothubowner"
HUB_POLICY_KEY = base64.b64encode(b"simulated-iot-hub-owner-policy-key").decode()
HUB_POLICY_RIGHTS = ["RegistryRead", "RegistryWrite", "ServiceConnect", "DeviceConnect"]


def hub_settings(**limits) -> dict:
    """The config's `iot_hub` key: the owner policy above; `limits`: configuration_limit,
    configuration_operations_per_minute."""
    return {
        "shared_access_policies": [{"name": HUB_POLICY, "primary_key": HUB_POLICY_KEY, "rights": HUB_POLICY_RIGHTS}],
        **limits,
    }


def fleet_config(id_scope: str, hub: str, root_ca: Path, group_key: str, prefix: str = "fleet", **extra) -> dict:
    """The usual configuration: one IoT Hub (its owner policy HUB_POLICY for the IoT Hub service API), an X.509
    enrollment group `<prefix>-x509` on a verified root CA (its devices send leaf + intermediate) and a
    symmetric-key enrollment group `<prefix>-sym`; `extra` adds or replaces top-level keys (individual_enrollments,
    shared_access_policies, iot_hub ...)."""
    return {
        "id_scope": id_scope,
        "linked_hubs": [hub],
        "defaults": {"assignment_delay": 0.2, "retry_after": 1},
        "enrollment_groups": [
            {"name": f"{prefix}-x509", "attestation": "x509", "ca_cert": str(root_ca), "verified": True},
            {"name": f"{prefix}-sym", "attestation": "symmetric_key", "primary_key": group_key},
        ],
        "iot_hub": hub_settings(),
        **extra,
    }


def start_dps_emulator(directory: Path, config: dict | str, filename: str = "dps.yml", **options) -> Emulator:
    """Write `config` to `directory/filename` and start an emulator with its state in `directory/state`; `options`
    go to `start_emulator` (host, port, extra_args)."""
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / filename
    config_path.write_text(config if isinstance(config, str) else yaml.safe_dump(config), encoding="utf-8")
    return start_emulator(config_path, directory / "state", **options)


@pytest.fixture(scope="session")
def dps_emulator_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorFactory]:
    started: list[Emulator] = []

    def start(config: dict | str, name: str = "dps", **options) -> Emulator:
        emulator = start_dps_emulator(tmp_path_factory.mktemp(name), config, **options)
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.stop()
    unclean = [emulator.log() for emulator in started if emulator.process and emulator.process.returncode != 0]
    assert not unclean, "a DPS emulator did not exit cleanly:\n" + "\n".join(unclean)
