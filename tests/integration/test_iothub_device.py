"""iothub_device and iothub_device_info through ansible-playbook against the emulator's IoT Hub service API.

Every state-changing case runs its task four times, as community.crypto's targets do: check mode (changed), real
run (changed), check mode again (not changed), real run again (not changed). The devices are made in the hub first
(PUT /devices/{id}, as a device DPS assigned would be there), and what the hub holds afterwards is read back with
iothub_device_info.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ansible_collections.iotfleet.aziot.plugins.module_utils import _http, _iothub
from tests.support.iothub_fakes import HUB, emulator_hub_config, hub_connection_string
from tests.support.pki import Pki
from tests.support.playbook import assert_four, four_runs, run_playbook

DEVICE = "iotfleet.aziot.iothub_device"
DEVICES = ["pi-int-01", "pi-int-02", "pi-int-03"]
REASON = "revoked by iotfleet.aziot revoke.yml"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory, dps_emulator_factory):
    made = dps_emulator_factory(emulator_hub_config(Pki(tmp_path_factory.mktemp("pki"))))
    client = hub_client(made)
    for device_id in DEVICES:
        client.put_device(device_id, {"deviceId": device_id}, None)
    twin = client.get_twin("pi-int-03")
    client.patch_twin("pi-int-03", {"tags": {"site": "old", "keep": "x"}}, twin["etag"])
    return made


def service_url(emulator) -> str:
    return f"https://{emulator.host}:{emulator.port}"


def hub_client(emulator) -> _iothub.IotHubClient:
    """An owner client of the emulator's hub for the test's own setup."""
    credentials = _iothub.parse_connection_string(hub_connection_string(), service_url(emulator))
    transport = _http.urls_transport("iotfleet.aziot-tests", ca_path=emulator.ca_cert)
    return _iothub.IotHubClient(credentials, transport, "test setup")


def run_play(tmp_path: Path, emulator, tasks: list[dict], policy: str = "iothubowner") -> dict:
    """Run `tasks` on localhost with the hub connection set once (module_defaults on the action group iothub)."""
    defaults = {
        "connection_string": hub_connection_string(policy),
        "service_url": service_url(emulator),
        "ca_path": emulator.ca_cert,
        "timeout": 30,
    }
    run = run_playbook(tmp_path, tasks, play={"module_defaults": {"group/iotfleet.aziot.iothub": defaults}})
    assert run.returncode == 0, run.output()
    return run.results


def info_task(register: str, device_ids: list[str]) -> dict:
    return {"iotfleet.aziot.iothub_device_info": {"device_ids": device_ids}, "register": register}


def by_id(result: dict) -> dict:
    return {device["device_id"]: device for device in result["devices"]}


def test_tags_set_purged_and_merged_status_disabled_and_enabled(emulator, tmp_path):
    canary = {"site": "plant-3", "ring": "canary", "location": {"line": 4}}
    tags = {"devices": [{"device_id": device_id, "tags": canary} for device_id in DEVICES[:2]]}
    purge = {"devices": [{"device_id": "pi-int-03", "tags": {"site": "plant-3"}}]}
    merge = {"devices": [{"device_id": "pi-int-03", "tags": {"ring": "beta"}}], "purge_tags": False}
    disable = {"devices": [{"device_id": "pi-int-02", "status": "disabled", "status_reason": REASON}]}
    enable = {"devices": [{"device_id": "pi-int-02", "status": "enabled", "status_reason": ""}]}
    tasks = [
        *four_runs(DEVICE, tags, "tags"),
        *four_runs(DEVICE, purge, "purge"),
        *four_runs(DEVICE, merge, "merge"),
        *four_runs(DEVICE, disable, "disable"),
        info_task("disabled", DEVICES),
        *four_runs(DEVICE, enable, "enable"),
        info_task("after", DEVICES),
    ]
    results = run_play(tmp_path, emulator, tasks)
    for name in ("tags", "purge", "merge", "disable", "enable"):
        assert_four(results, name)

    assert results["tags_check1"]["changed_devices"] == ["pi-int-01", "pi-int-02"]
    assert by_id(results["tags_check1"])["pi-int-01"]["tags"] == {}  # check mode: as the hub has it now
    assert by_id(results["tags_real1"])["pi-int-01"]["tags"] == canary
    diff = results["tags_real1"]["diff"][0]
    assert (json.loads(diff["before"]), json.loads(diff["after"])) == ({"tags": {}}, {"tags": canary})
    # nothing differs: one query, no write
    assert (results["tags_real2"]["requests"], results["tags_real2"]["changed_devices"]) == (1, [])

    assert json.loads(results["purge_real1"]["diff"][0]["before"]) == {"tags": {"site": "old", "keep": "x"}}
    assert by_id(results["purge_real1"])["pi-int-03"]["tags"] == {"site": "plant-3"}
    assert by_id(results["merge_real1"])["pi-int-03"]["tags"] == {"site": "plant-3", "ring": "beta"}

    # a status change reads the identity and puts it back: query + GET + PUT
    assert results["disable_real1"]["requests"] == 3
    disabled = by_id(results["disabled"])["pi-int-02"]
    assert (disabled["status"], disabled["status_reason"]) == ("disabled", REASON)
    assert disabled["tags"] == canary  # the tags stay

    after = by_id(results["after"])
    assert (after["pi-int-02"]["status"], after["pi-int-02"]["status_reason"]) == ("enabled", "")
    assert after["pi-int-01"]["tags"] == canary
    assert after["pi-int-03"]["tags"] == {"site": "plant-3", "ring": "beta"}
    assert after["pi-int-01"]["capabilities"] == {"iotEdge": False}
    assert results["after"]["missing"] == []


def test_missing_device_skip_and_fail(emulator, tmp_path):
    skip = {
        "devices": [
            {"device_id": "pi-int-01", "tags": {"site": "plant-4"}},
            {"device_id": "pi-int-99", "tags": {"site": "plant-4"}},
        ],
        "missing": "skip",
    }
    fail = dict(skip, missing="fail", devices=[dict(entry, tags={"site": "plant-5"}) for entry in skip["devices"]])
    tasks = [
        *four_runs(DEVICE, skip, "skip"),
        {DEVICE: fail, "register": "fail", "failed_when": False},
        info_task("after", ["pi-int-01", "pi-int-99"]),
    ]
    results = run_play(tmp_path, emulator, tasks)
    assert_four(results, "skip")
    for run in ("check1", "real1", "check2", "real2"):
        assert results[f"skip_{run}"]["missing"] == ["pi-int-99"]
    assert [device["device_id"] for device in results["skip_real1"]["devices"]] == ["pi-int-01"]

    assert results["fail"]["msg"] == (
        f"device pi-int-99 is not in IoT Hub {HUB}: register it through DPS first (provision.yml), or set "
        "missing=skip to leave it out; nothing was changed"
    )
    assert results["fail"]["changed_devices"] == []
    assert by_id(results["after"])["pi-int-01"]["tags"] == {"site": "plant-4"}  # the fail run wrote nothing
    assert results["after"]["missing"] == ["pi-int-99"]


def test_a_policy_without_registry_write_is_refused_in_one_line(emulator, tmp_path):
    args = {"devices": [{"device_id": "pi-int-01", "tags": {"site": "plant-9"}}]}
    tasks = [{DEVICE: args, "register": "refused", "failed_when": False}]
    results = run_play(tmp_path, emulator, tasks, policy="registryread")
    message = results["refused"]["msg"]
    assert message.startswith(
        "device pi-int-01: policy registryread may not update the twin of device pi-int-01: give it the "
        "RegistryWrite right"
    ), message
    assert results["refused"]["http_status"] == 401
    assert results["refused"]["changed_devices"] == []
