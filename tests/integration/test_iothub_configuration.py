"""iothub_configuration and iothub_configuration_info through ansible-playbook against the emulator's IoT Hub service
API.

Every state-changing case runs its task four times, as community.crypto's targets do: check mode (changed), real
run (changed), check mode again (not changed), real run again (not changed). The hub has three IoT Edge devices,
two at plant-3 (one of them in the canary ring) and one at plant-4; what the hub holds afterwards is read back with
iothub_configuration_info and the emulator's twins.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.iothub_fakes import emulator_hub_client, emulator_hub_config, hub_connection_string
from tests.support.pki import Pki
from tests.support.playbook import assert_four, four_runs, run_playbook

CONFIGURATION = "iotfleet.aziot.iothub_configuration"
INFO = "iotfleet.aziot.iothub_configuration_info"
DEVICES = {"pi-cfg-01": "plant-3", "pi-cfg-02": "plant-3", "pi-cfg-03": "plant-4"}
EDGE = {
    "modulesContent": {
        "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "modules": {}}},
        "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}}},
    }
}
EDGE_V2 = json.loads(json.dumps(EDGE))
EDGE_V2["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"] = {
    "telemetry": {"type": "docker", "settings": {"image": "contoso/telemetry:2.0"}}
}
# A layered deployment: only properties.desired.<path> keys on $edgeAgent (Azure's rule).
LAYER = {"modulesContent": {"$edgeAgent": {"properties.desired.modules.canary": {"type": "docker"}}}}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory, dps_emulator_factory):
    made = dps_emulator_factory(
        emulator_hub_config(Pki(tmp_path_factory.mktemp("pki")), configuration_operations_per_minute=0)
    )
    client = emulator_hub_client(made)
    for device_id, site in DEVICES.items():
        client.put_device(device_id, {"deviceId": device_id, "capabilities": {"iotEdge": True}}, None)
        tags = {"site": site, "ring": "canary" if device_id == "pi-cfg-01" else "production"}
        client.patch_twin(device_id, {"tags": tags}, None)
    return made


def run_play(tmp_path: Path, emulator, tasks: list[dict], policy: str = "iothubowner") -> dict:
    """Run `tasks` on localhost with the hub connection set once (module_defaults on the action group iothub)."""
    defaults = {
        "connection_string": hub_connection_string(policy),
        "service_url": f"https://{emulator.host}:{emulator.port}",
        "ca_path": emulator.ca_cert,
        "timeout": 30,
    }
    run = run_playbook(tmp_path, tasks, play={"module_defaults": {"group/iotfleet.aziot.iothub": defaults}})
    assert run.returncode == 0, run.output()
    return run.results


def write(path: Path, document: dict) -> str:
    path.write_text(json.dumps(document), encoding="utf-8")
    return str(path)


def test_deployments_created_updated_replaced_and_removed(emulator, tmp_path):
    manifest = write(tmp_path / "plant-3.json", {"content": EDGE})
    manifest_v2 = write(tmp_path / "plant-3-v2.json", {"content": EDGE_V2})
    base = {
        "id": "plant-3-base",
        "content_file": manifest,
        "target_condition": "tags.site='plant-3'",
        "priority": 10,
        "labels": {"managed-by": "iotfleet.aziot"},
        "metrics": {"canary": "SELECT deviceId FROM devices WHERE tags.ring = 'canary'"},
    }
    layer = {"id": "plant-3-canary", "content": LAYER, "target_condition": "tags.ring='canary'", "priority": 20}
    tasks = [
        *four_runs(CONFIGURATION, base, "create"),
        *four_runs(CONFIGURATION, layer, "layer"),
        *four_runs(
            CONFIGURATION, dict(base, priority=15, labels={"managed-by": "iotfleet.aziot", "ring": "all"}), "update"
        ),
        {CONFIGURATION: dict(base, priority=15, content_file=manifest_v2), "register": "refused", "failed_when": False},
        *four_runs(
            CONFIGURATION,
            dict(
                base,
                priority=15,
                labels={"managed-by": "iotfleet.aziot", "ring": "all"},
                content_file=manifest_v2,
                replace_changed_content=True,
            ),
            "replace",
        ),
        {INFO: {}, "register": "listed"},
        *four_runs(CONFIGURATION, {"id": "plant-3-canary", "state": "absent"}, "absent"),
        {INFO: {"id": "plant-3-canary"}, "register": "gone"},
    ]
    results = run_play(tmp_path, emulator, tasks)
    for name in ("create", "layer", "update", "replace", "absent"):
        assert_four(results, name)

    created = results["create_real1"]["configuration"]
    assert created["systemMetrics"]["results"]["targetedCount"] == 2
    assert created["metrics"]["results"] == {"canary": 1}
    diff = results["create_check1"]["diff"]
    assert diff["before"] == "" and json.loads(diff["after"])["content"] == EDGE
    assert results["update_real1"]["differences"] == ["priority", "labels"]
    assert results["update_real1"]["configuration"]["etag"] != created["etag"]

    # (failed_when: false keeps the play going; the message is the module's failure)
    refused = results["refused"]
    assert refused["changed"] is False
    assert refused["msg"] == (
        "configuration plant-3-base: IoT Hub does not change a configuration's content once created; set "
        "replace_changed_content=true to delete and re-create it (its devices drop it for a moment), or give the new "
        "content a new id"
    )
    assert (results["replace_check1"]["replaced"], results["replace_real1"]["replaced"]) == (True, True)
    assert results["replace_real2"]["replaced"] is False
    replaced = results["replace_real1"]["configuration"]
    assert replaced["content"]["modulesContent"] == EDGE_V2["modulesContent"]
    assert replaced["priority"] == 15

    listed = {item["id"]: item for item in results["listed"]["configurations"]}
    assert set(listed) == {"plant-3-base", "plant-3-canary"}
    assert listed["plant-3-canary"]["systemMetrics"]["results"] == {
        **listed["plant-3-canary"]["systemMetrics"]["results"],
        "targetedCount": 1,
        "appliedCount": 1,
    }
    assert (results["gone"]["exists"], results["gone"]["configurations"]) == (False, [])
    # the hub applies the base deployment to both plant-3 devices
    twin = emulator_hub_client(emulator).get_twin("pi-cfg-02")
    assert twin["configurations"]["plant-3-base"]["status"] == "applied"


def test_refusals_are_one_line_and_write_nothing(emulator, tmp_path):
    not_json = tmp_path / "broken.json"
    not_json.write_text('{"content": ', encoding="utf-8")
    cases = {
        "malformed": {"id": "bad-condition", "content": EDGE, "target_condition": "tags.site = = 'x'"},
        "missing_file": {"id": "bad-file", "content_file": str(tmp_path / "missing.json"), "target_condition": "*"},
        "not_json": {"id": "bad-json", "content_file": str(not_json), "target_condition": "*"},
        "two_kinds": {"id": "bad-kinds", "content": {**EDGE, "deviceContent": {}}, "target_condition": "*"},
    }
    tasks = [{CONFIGURATION: args, "register": name, "failed_when": False} for name, args in cases.items()]
    results = run_play(tmp_path, emulator, tasks)
    read_only = run_play(
        tmp_path / "read-only",
        emulator,
        [
            {
                CONFIGURATION: {"id": "no-write", "content": EDGE, "target_condition": "*"},
                "register": "denied",
                "failed_when": False,
            }
        ],
        policy="registryread",
    )
    messages = {name: results[name]["msg"] for name in cases}
    messages["denied"] = read_only["denied"]["msg"]
    for name, message in messages.items():
        assert "\n" not in message, (name, message)
    assert messages["malformed"].startswith(
        "configuration bad-condition: target_condition \"tags.site = = 'x'\" is malformed"
    )
    assert "does not exist on the controller" in messages["missing_file"]
    assert "is not JSON (line 1" in messages["not_json"]
    assert "must have exactly one of modulesContent, moduleContent, deviceContent" in messages["two_kinds"]
    assert messages["denied"].startswith(
        "configuration no-write: policy registryread may not create configuration no-write: give it the "
        "RegistryWrite right"
    )
    client = emulator_hub_client(emulator)
    assert all(client.get_configuration(args["id"]) is None for args in [*cases.values(), {"id": "no-write"}])
