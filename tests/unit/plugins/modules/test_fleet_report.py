"""fleet_report: the module's options and result (the rows themselves: tests/unit/plugins/module_utils)."""

from __future__ import annotations

import datetime
from pathlib import Path

from ansible_collections.iotfleet.aziot.plugins.modules import fleet_report
from tests.support.modules import run_module
from tests.support.pki import DAY, Pki


def test_the_report_of_a_device_in_check_mode(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    leaf = pki.device("pi-1", not_after=2 * DAY + datetime.timedelta(minutes=10)).leaf_file
    run = run_module(
        fleet_report,
        {
            "devices": [{"host": "pi-1", "enrollment_group": "plant-3", "certificate_path": leaf}],
            "enrollment_groups": [{"enrollmentGroupId": "plant-3", "initialTwin": {"tags": {"site": "plant-3"}}}],
            "enrollments": [{"registrationId": "pi-1", "provisioningStatus": "disabled"}],
            "fail_within_days": "7",  # -e fail_within_days=7 arrives as a string
            "_ansible_check_mode": True,
        },
    )
    result = run.result
    assert run.returncode == 0 and not result["changed"], run.output()
    [row] = result["devices"]
    assert row["device"] == "pi-1" and row["cohort"] == "plant-3" and row["enrollment"] == "individual pi-1"
    assert row["tags"] == {"site": "plant-3"} and row["blocked"] and row["days_left"] == 2
    assert result["due_text"] == "pi-1 (2 days left)" and result["warn_days"] == 30
    assert result["summary"]["by_cohort"] == {"plant-3": 1} and len(result["expiries"]["months"]) == 12


def test_a_negative_day_count_is_refused_in_one_line() -> None:
    run = run_module(fleet_report, {"devices": [{"host": "pi-1"}], "fail_within_days": -3})
    assert run.returncode != 0 and run.result["msg"] == "fail_within_days must be 0 or more days, not -3"


def test_a_word_for_a_day_count_is_refused() -> None:
    run = run_module(fleet_report, {"devices": [{"host": "pi-1"}], "warn_days": "soon"})
    assert run.returncode != 0 and "warn_days" in run.result["msg"], run.output()


def test_the_hub_devices_from_iothub_device_info() -> None:
    run = run_module(
        fleet_report,
        {
            "devices": [{"host": "pi-1"}, {"host": "pi-2"}],
            "registrations": [{"registrationId": "pi-1", "status": "assigned", "deviceId": "pi-1"}],
            "hub_devices": [
                {
                    "device_id": "pi-1",
                    "status": "disabled",
                    "status_reason": "revoked by iotfleet.aziot revoke.yml",
                    "tags": {"site": "lab"},
                    "configurations": {"edge-lab": {"status": "applied"}},
                }
            ],
        },
    )
    result = run.result
    assert run.returncode == 0 and not result["changed"] and result["hub_read"], run.output()
    first, second = result["devices"]
    assert (first["hub_status"], first["configurations"], first["tags"]) == ("disabled", ["edge-lab"], {"site": "lab"})
    assert second["hub_status"] == "absent" and result["summary"]["hub_disabled"] == 1
    without = run_module(fleet_report, {"devices": [{"host": "pi-1"}]}).result
    assert not without["hub_read"] and without["devices"][0]["hub_status"] == ""
