"""Day two with the IoT hub connected (iothub_deployment_connection_string set), end to end on a simulated fleet
(tests/support/fleet.py) and the emulator's IoT Hub service API:

- revoke.yml disables the device in its hub, with the collection's reason, besides DPS; reinstate.yml enables it
  again (reason cleared) and it registers, as replace.yml -e replace_enable=true does for new hardware; each re-run
  changes nothing; a device the hub does not have (never registered) is skipped, not an error.
- fleet_status.yml shows each device's hub status and the configurations applied to it (one hub read), in the JSON,
  text and HTML reports.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.fleet import SimulatedFleet, hub_connection_string

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the roles give device files to root (run as root)")

COHORTS = {"hr_plant": ["hr-plant-1", "hr-plant-2"], "hr_lab": ["hr-lab-1"], "hr_spare": ["hr-spare-1"]}
REGISTERED = ["hr-lab-1", "hr-plant-1", "hr-plant-2"]
REASON = "revoked by iotfleet.aziot revoke.yml"
# An automatic device configuration per registered cohort (the simulated devices run no IoT Edge, and IoT Hub gives
# IoT Edge deployments to IoT Edge devices only).
DEPLOYMENTS = {"telemetry-plant": ["hr_plant"], "telemetry-lab": ["hr_lab"]}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, dps_emulator_factory) -> SimulatedFleet:
    work = tmp_path_factory.mktemp("hub-revoke")
    made = SimulatedFleet(work, COHORTS)
    made.make_ca()
    emulator = dps_emulator_factory(made.emulator_config(), name="hub-revoke")
    made.use_emulator(emulator)
    deployments = []
    for name, cohorts in DEPLOYMENTS.items():
        content = work / f"{name}.json"
        content.write_text(json.dumps({"content": {"deviceContent": {"properties.desired.telemetry": {"of": name}}}}))
        deployments.append({"name": name, "content_file": str(content), "priority": 10, "cohorts": cohorts})
    made.all_vars.update(
        {
            "iothub_deployment_connection_string": hub_connection_string(made.hub),
            "iothub_deployment_service_url": f"https://{emulator.host}:{emulator.port}",
            "iothub_deployment_ca_path": emulator.ca_cert,
            "iothub_deployment_deployments": deployments,
        }
    )
    # hr_spare stays unregistered: provision.yml for the others, then only a certificate for hr-spare-1 (what a
    # device has when provisioning stopped before it registered).
    first = made.playbook("provision.yml", "-l", "hr_plant:hr_lab")
    assert first.returncode == 0, first.output()
    assert sorted(made.hub_devices()) == REGISTERED
    identity = made.work / "identity.yml"
    identity.write_text(
        json.dumps(
            [
                {
                    "name": "Certificate only",
                    "hosts": "hr-spare-1",
                    "gather_facts": False,
                    "roles": ["iotfleet.aziot.device_identity"],
                }
            ]
        ),
        encoding="utf-8",
    )
    issued = made.playbook(identity)
    assert issued.returncode == 0 and made.files("hr-spare-1")["copy"].exists(), issued.output()
    return made


def changes(run) -> int:
    return sum(counts["changed"] for counts in run.recap.values())


def hub_status(fleet: SimulatedFleet, host: str) -> tuple[str, str | None]:
    device = fleet.hub_devices()[host]
    return device["status"], device["statusReason"]


def test_revoke_disables_the_device_in_its_hub_and_reinstate_enables_it(fleet: SimulatedFleet) -> None:
    host = "hr-plant-1"
    assert hub_status(fleet, host) == ("enabled", None)

    revoked = fleet.playbook("revoke.yml", "-l", host)
    assert revoked.returncode == 0, revoked.output()
    assert hub_status(fleet, host) == ("disabled", REASON)
    assert hub_status(fleet, "hr-plant-2") == ("enabled", None)  # only the limited device
    again = fleet.playbook("revoke.yml", "-l", host)
    assert again.returncode == 0 and changes(again) == 0, (again.recap, again.output())
    # (after the re-run: a refused attempt leaves a registration record, which revoke.yml would delete again)
    refused = fleet.register(host)
    assert refused.get("failed") and "disabled" in refused["msg"], refused  # and DPS refuses it

    reinstated = fleet.playbook("reinstate.yml", "-l", host)
    assert reinstated.returncode == 0, reinstated.output()
    assert hub_status(fleet, host) == ("enabled", "")  # the revoke reason cleared
    assert fleet.register(host).get("status") == "assigned"
    again = fleet.playbook("reinstate.yml", "-l", host)
    assert again.returncode == 0 and changes(again) == 0, (again.recap, again.output())
    assert hub_status(fleet, host) == ("enabled", "")


def test_a_revoked_device_replaced_with_replace_enable_is_enabled_in_its_hub(fleet: SimulatedFleet) -> None:
    """Stolen, revoked, replaced by new hardware with replace_enable=true: the new hardware registers, and the hub
    device revoke.yml disabled is enabled again (a registration keeps the hub's status, so without this step the new
    device would be assigned by DPS and refused by the hub)."""
    host = "hr-plant-2"
    revoked = fleet.playbook("revoke.yml", "-l", host)
    assert revoked.returncode == 0, revoked.output()
    assert hub_status(fleet, host) == ("disabled", REASON)

    fleet.new_hardware(host)
    replaced = fleet.playbook("replace.yml", "-l", host, extra_vars={"replace_enable": True})
    assert replaced.returncode == 0, replaced.output()
    assert hub_status(fleet, host) == ("enabled", "")
    assert fleet.hub_devices()[host]["status"] == "enabled"
    again = fleet.playbook("replace.yml", "-l", host, extra_vars={"replace_enable": True})
    assert again.returncode == 0 and changes(again) == 0, (again.recap, again.output())


def test_revoke_skips_a_device_the_hub_does_not_have(fleet: SimulatedFleet) -> None:
    """hr-spare-1 has a certificate but never registered: DPS blocks it, the hub has nothing to disable."""
    host = "hr-spare-1"
    revoked = fleet.playbook("revoke.yml", "-l", host)
    assert revoked.returncode == 0, revoked.output()
    assert host not in fleet.hub_devices()
    task = revoked.stdout.split("Set the devices' status in their IoT hub]", 1)[1].split("TASK [", 1)[0]
    assert f"ok: [{host} -> localhost]" in task, task  # it ran, and skipped the device (missing=skip)
    reinstated = fleet.playbook("reinstate.yml", "-l", host)
    assert reinstated.returncode == 0, reinstated.output()
    assert fleet.hub_devices()[host]["status"] == "enabled"  # registered now: DPS created it in the hub


def test_without_a_hub_connection_revoke_leaves_the_hub_alone(fleet: SimulatedFleet) -> None:
    host = "hr-plant-2"
    saved = dict(fleet.all_vars)
    fleet.all_vars["iothub_deployment_connection_string"] = ""
    before = hub_status(fleet, host)
    assert before[0] == "enabled"
    try:
        revoked = fleet.playbook("revoke.yml", "-l", host)
        assert revoked.returncode == 0, revoked.output()
        assert hub_status(fleet, host) == before  # DPS only
        reinstated = fleet.playbook("reinstate.yml", "-l", host)
        assert reinstated.returncode == 0, reinstated.output()
    finally:
        fleet.all_vars = saved


def test_fleet_status_shows_the_hub_status_and_the_configurations_applied(
    fleet: SimulatedFleet, tmp_path: Path
) -> None:
    host = "hr-lab-1"
    revoked = fleet.playbook("revoke.yml", "-l", host)
    assert revoked.returncode == 0, revoked.output()
    try:
        run = fleet.playbook("fleet_status.yml", extra_vars={"fleet_status_dir": str(tmp_path)})
        assert run.returncode == 0, run.output()
        assert changes(run) == 0, run.recap
    finally:
        reinstated = fleet.playbook("reinstate.yml", "-l", host)
        assert reinstated.returncode == 0, reinstated.output()

    report = json.loads((tmp_path / "fleet-status.json").read_text(encoding="utf-8"))
    rows = {row["device"]: row for row in report["devices"]}
    assert report["hub_read"] and sorted(rows) == fleet.hosts
    assert (rows["hr-plant-2"]["hub_status"], rows["hr-plant-2"]["configurations"]) == ("enabled", ["telemetry-plant"])
    assert rows["hr-plant-2"]["tags"] == {"site": "hr_plant"} and rows["hr-plant-2"]["tags_from"] == "IoT Hub twin"
    revoked_row = rows[host]
    assert (revoked_row["hub_status"], revoked_row["hub_status_reason"]) == ("disabled", REASON), revoked_row
    assert revoked_row["configurations"] == ["telemetry-lab"]  # disabled, still targeted and applied by the hub
    assert f"disabled in IoT Hub ({REASON})" in revoked_row["note"]
    assert report["summary"]["hub_disabled"] == 1
    assert report["summary"]["by_configuration"]["telemetry-plant"] == 2

    lines = (tmp_path / "fleet-status.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0].split()[:7] == ["DEVICE", "STATUS", "ASSIGNED", "HUB", "HUB", "STATUS", "ENROLLMENT"], lines[0]
    line = next(line for line in lines if line.startswith("hr-plant-2 "))
    assert line.split()[3] == "enabled" and "telemetry-plant" in line, line
    assert "1 disabled in IoT Hub" in run.stdout
    html = (tmp_path / "fleet-status.html").read_text(encoding="utf-8")
    embedded = html.split('<script id="fleet-data" type="application/json">', 1)[1].split("</script>", 1)[0]
    assert json.loads(embedded)["hub_read"] is True
