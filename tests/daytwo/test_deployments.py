"""IoT Hub deployments from the inventory, end to end: playbooks/provision.yml with an IoT Hub connection string runs
the role iothub_deployment on a simulated fleet (tests/support/fleet.py) against the emulator's IoT Hub service API.

Two cohorts - dp_plant (ring production) and dp_lab (ring canary) - and three deployments: a device configuration
for both cohorts, a higher-priority one for the canary ring, and inventory/example's IoT Edge manifest for dp_plant
(no device runs IoT Edge here, so it is created but applied to none). The steps build on each other, in order:
provision (configurations, conditions, which one each device gets), re-run and --limit (nothing changes), a device
moved to the other cohort (its tags and configuration follow), a changed content file (refused, then replaced on
request), declaration mistakes (one line, nothing written), a deployment removed (pruned, a hand-made one kept).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.emulator import hub_settings
from tests.support.fleet import HUB, SimulatedFleet, hub_connection_string
from tests.support.modules import run_module
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the roles give device files to root (run as root)")

COHORTS = {"dp_plant": ["dp-plant-1", "dp-plant-2"], "dp_lab": ["dp-lab-1"]}
RINGS = {"dp_plant": "production", "dp_lab": "canary"}
EDGE_MANIFEST = REPO_ROOT / "inventory" / "example" / "deployments" / "edge-base.json"
PLANT = "tags.ring='production' AND tags.site='dp_plant'"
LAB = "tags.ring='canary' AND tags.site='dp_lab'"
MANAGED = {"managed-by": "iotfleet.aziot"}


def device_content(interval: int) -> dict:
    return {"content": {"deviceContent": {"properties.desired.sensor": {"interval": interval}}}}


def declared(*names: str) -> list[dict]:
    """The fleet's deployments (content files relative to the inventory's directory), or only `names`."""
    deployments = [
        {
            "name": "dev-base",
            "content_file": "deployments/base.json",
            "priority": 10,
            "cohorts": ["dp_plant", "dp_lab"],
        },
        {"name": "dev-canary", "content_file": "deployments/canary.json", "priority": 20, "rings": ["canary"]},
        {"name": "edge-plant", "content_file": str(EDGE_MANIFEST), "priority": 10, "cohorts": ["dp_plant"]},
    ]
    return [deployment for deployment in deployments if not names or deployment["name"] in names]


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


class Hub:
    """The emulator's IoT Hub, read with the collection's own info modules."""

    def __init__(self, fleet: SimulatedFleet) -> None:
        self.args = {
            "connection_string": hub_connection_string(),
            "service_url": f"https://{fleet.emulator.host}:{fleet.emulator.port}",
            "ca_path": fleet.emulator.ca_cert,
            "timeout": 30,
        }

    def run(self, module: str, **args) -> dict:
        run = run_module(module, dict(self.args, **args))
        assert run.result is not None and not run.failed, run.output()
        return run.result

    def configurations(self) -> dict[str, dict]:
        return {item["id"]: item for item in self.run("iothub_configuration_info")["configurations"]}

    def devices(self, fleet: SimulatedFleet) -> dict[str, dict]:
        devices = self.run("iothub_device_info", device_ids=fleet.hosts)["devices"]
        return {device["device_id"]: device for device in devices}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, dps_emulator_factory) -> SimulatedFleet:
    made = SimulatedFleet(tmp_path_factory.mktemp("deployments"), COHORTS)
    for cohort, ring in RINGS.items():
        made.cohort_vars[cohort]["ring"] = ring
    made.make_ca()
    config = made.emulator_config()
    config["iot_hub"] = hub_settings(configuration_operations_per_minute=0)  # many runs in a minute
    made.use_emulator(dps_emulator_factory(config, name="deployments"))
    write_json(made.work / "deployments" / "base.json", device_content(60))
    write_json(made.work / "deployments" / "canary.json", device_content(5))
    made.all_vars.update(
        iothub_deployment_connection_string=hub_connection_string(),
        iothub_deployment_service_url=f"https://{made.emulator.host}:{made.emulator.port}",
        iothub_deployment_ca_path=made.emulator.ca_cert,
        iothub_deployment_deployments=declared(),
    )
    return made


@pytest.fixture(scope="module")
def hub(fleet: SimulatedFleet) -> Hub:
    return Hub(fleet)


def applied(device: dict) -> dict[str, str]:
    return {config: state["status"] for config, state in device["configurations"].items()}


def test_provision_creates_the_deployments_and_each_device_gets_its_own(fleet: SimulatedFleet, hub: Hub) -> None:
    run = fleet.playbook("provision.yml")
    assert run.returncode == 0, run.output()
    assert sorted(fleet.hub_devices()) == fleet.hosts

    configurations = hub.configurations()
    assert sorted(configurations) == ["dev-base", "dev-canary", "edge-plant"]
    base, canary, edge = (configurations[name] for name in ("dev-base", "dev-canary", "edge-plant"))
    assert base["targetCondition"] == f"({PLANT}) OR ({LAB})" and base["priority"] == 10
    assert canary["targetCondition"] == f"({LAB}) AND tags.ring IN ['canary']" and canary["priority"] == 20
    assert edge["targetCondition"] == PLANT
    assert edge["content"] == json.loads(EDGE_MANIFEST.read_text(encoding="utf-8"))["content"]
    assert base["content"] == device_content(60)["content"]
    assert all(configuration["labels"] == MANAGED for configuration in configurations.values())
    # The hub's own counts: the device configurations reach all three devices, the canary one the lab; the IoT Edge
    # deployment targets IoT Edge devices only, and none runs it here.
    assert base["systemMetrics"]["results"]["targetedCount"] == 3
    assert canary["systemMetrics"]["results"]["appliedCount"] == 1

    devices = hub.devices(fleet)
    for host in COHORTS["dp_plant"]:
        assert devices[host]["tags"] == {"site": "dp_plant", "ring": "production"}, devices[host]
        assert applied(devices[host]) == {"dev-base": "applied"}, devices[host]
    # Highest priority wins: the canary configuration, the base one only targeted.
    assert applied(devices["dp-lab-1"]) == {"dev-base": "targeted", "dev-canary": "applied"}
    assert fleet.emulator._admin("GET", f"/_emulator/hubs/{HUB}/configurations-applied") == {
        "dp-lab-1": ["dev-canary"],
        "dp-plant-1": ["dev-base"],
        "dp-plant-2": ["dev-base"],
    }


def test_a_rerun_and_a_limited_run_change_nothing(fleet: SimulatedFleet, hub: Hub) -> None:
    before = hub.configurations()
    again = fleet.playbook("provision.yml")
    assert again.returncode == 0, again.output()
    assert again.changed_hosts() == set(), again.recap
    check = fleet.playbook("provision.yml", "--check")
    assert check.returncode == 0, check.output()
    assert check.changed_hosts() == set(), check.recap
    # --limit: the conditions are still computed over the whole inventory.
    limited = fleet.playbook("provision.yml", "-l", "dp-lab-1")
    assert limited.returncode == 0, limited.output()
    assert limited.changed_hosts() == set(), limited.recap
    assert hub.configurations() == before


def test_a_device_moved_to_the_other_cohort_takes_its_tags_and_configuration(fleet: SimulatedFleet, hub: Hub) -> None:
    fleet.cohorts["dp_plant"].remove("dp-plant-2")
    fleet.cohorts["dp_lab"].append("dp-plant-2")
    try:
        run = fleet.playbook("provision.yml")
        assert run.returncode == 0, run.output()
        device = hub.devices(fleet)["dp-plant-2"]
        assert device["tags"] == {"site": "dp_lab", "ring": "canary"}, device
        assert applied(device) == {"dev-base": "targeted", "dev-canary": "applied"}, device
        assert hub.configurations()["dev-canary"]["systemMetrics"]["results"]["appliedCount"] == 2
        again = fleet.playbook("provision.yml")
        assert again.returncode == 0, again.output()
        assert again.changed_hosts() == set(), again.recap
    finally:
        fleet.cohorts["dp_lab"].remove("dp-plant-2")
        fleet.cohorts["dp_plant"].append("dp-plant-2")
    back = fleet.playbook("provision.yml")
    assert back.returncode == 0, back.output()
    device = hub.devices(fleet)["dp-plant-2"]
    assert device["tags"] == {"site": "dp_plant", "ring": "production"} and applied(device) == {"dev-base": "applied"}


def test_a_changed_content_file_is_refused_then_replaced_on_request(fleet: SimulatedFleet, hub: Hub) -> None:
    write_json(fleet.work / "deployments" / "base.json", device_content(30))
    refused = fleet.playbook("provision.yml")
    assert refused.returncode != 0, refused.output()
    assert "configuration dev-base: IoT Hub does not change a configuration's content once created" in refused.stdout
    assert "replace_changed_content=true" in refused.stdout, refused.output()
    assert hub.configurations()["dev-base"]["content"] == device_content(60)["content"]

    replaced = fleet.playbook("provision.yml", extra_vars={"iothub_deployment_replace_changed_content": True})
    assert replaced.returncode == 0, replaced.output()
    configurations = hub.configurations()
    assert configurations["dev-base"]["content"] == device_content(30)["content"]
    assert configurations["dev-base"]["targetCondition"] == f"({PLANT}) OR ({LAB})"
    assert applied(hub.devices(fleet)["dp-plant-1"]) == {"dev-base": "applied"}
    again = fleet.playbook("provision.yml")
    assert again.returncode == 0 and again.changed_hosts() == set(), again.output()


@pytest.mark.parametrize(
    ("mistake", "expected"),
    [
        ({"cohorts": ["dp_nowhere"]}, "deployment 'dev-new': unknown cohort 'dp_nowhere' (the inventory's cohorts"),
        (
            {"content_file": "deployments/broken.json"},
            "deployment 'dev-new': content_file {work}/deployments/broken.json is not JSON",
        ),
    ],
)
def test_declaration_mistakes_stop_in_one_line_before_anything_is_written(
    fleet: SimulatedFleet, hub: Hub, mistake: dict, expected: str
) -> None:
    (fleet.work / "deployments" / "broken.json").write_text('{"content": {"deviceContent": ', encoding="utf-8")
    new = dict({"name": "dev-new", "content_file": "deployments/canary.json", "cohorts": ["dp_plant"], "priority": 30})
    fleet.all_vars["iothub_deployment_deployments"] = [*declared(), dict(new, **mistake)]
    configurations, devices = hub.configurations(), fleet.hub_devices()
    try:
        run = fleet.playbook("provision.yml")
    finally:
        fleet.all_vars["iothub_deployment_deployments"] = declared()
    assert run.returncode != 0, run.output()
    line = next((line for line in run.stdout.splitlines() if expected.format(work=fleet.work) in line), None)
    assert line is not None, run.output()
    assert "Traceback" not in run.stdout + run.stderr
    # Stopped before any device was touched: no device task ran, nothing changed in the hub.
    assert "Register the device with DPS" not in run.stdout, run.output()
    assert hub.configurations() == configurations and fleet.hub_devices() == devices


def test_validate_checks_the_declaration_without_the_hub(fleet: SimulatedFleet) -> None:
    ok = fleet.playbook("validate.yml")
    assert ok.returncode == 0, ok.output()
    assert f"3 deployment(s): dev-base <- ({PLANT}) OR ({LAB}); " in ok.stdout, ok.output()
    fleet.all_vars["iothub_deployment_deployments"] = [*declared(), {"name": "x", "content_file": "nope.json"}]
    try:
        bad = fleet.playbook("validate.yml")
    finally:
        fleet.all_vars["iothub_deployment_deployments"] = declared()
    assert bad.returncode != 0 and f"deployment 'x': content_file {fleet.work}/nope.json does not exist" in bad.stdout


def test_a_deployment_no_longer_declared_is_pruned_but_not_a_hand_made_one(fleet: SimulatedFleet, hub: Hub) -> None:
    hub.run(
        "iothub_configuration",
        id="by-hand",
        target_condition="tags.site='dp_lab'",
        content=device_content(1)["content"],
        priority=1,
        labels={"owner": "operator"},
    )
    fleet.all_vars["iothub_deployment_deployments"] = declared("dev-base", "edge-plant")
    try:
        run = fleet.playbook("provision.yml")
        assert run.returncode == 0, run.output()
        assert sorted(hub.configurations()) == ["by-hand", "dev-base", "edge-plant"]
        assert applied(hub.devices(fleet)["dp-lab-1"]) == {"dev-base": "applied", "by-hand": "targeted"}
        again = fleet.playbook("provision.yml")
        assert again.returncode == 0 and again.changed_hosts() == set(), again.output()
    finally:
        fleet.all_vars["iothub_deployment_deployments"] = declared()
