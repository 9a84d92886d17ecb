"""What playbooks/renew.yml reports (filters iotfleet.aziot.renew_summary and iotfleet.aziot.renew_report)."""

from __future__ import annotations

from ansible_collections.iotfleet.aziot.plugins.filter import renew_report as report_plugin
from ansible_collections.iotfleet.aziot.plugins.filter import renew_summary as summary_plugin
from ansible_collections.iotfleet.aziot.plugins.filter.renew_report import renew_report
from ansible_collections.iotfleet.aziot.plugins.filter.renew_summary import renew_summary


def _outcome(registration_id: str, renewed: bool, **extra) -> dict:
    outcome = {
        "registration_id": registration_id,
        "renewed": renewed,
        "reasons": ["renewal_window: expires in 9 days (window 30)"] if renewed else [],
        "issuer": "CN=iotfleet Intermediate CA plant-3" if renewed else "",
        "not_after": "2027-05-01T00:00:00Z" if renewed else "",
        "iot_edge": False,
        "registration": "assigned hub-a.azure-devices.net" if renewed else "",
    }
    outcome.update(extra)
    return outcome


def _hostvars() -> dict[str, dict]:
    return {
        "pi-1": {"renew_outcome": _outcome("pi-1", True), "renew_reached": True},
        "pi-2": {"renew_outcome": _outcome("pi-2", False), "renew_reached": True},
        "pi-3": {"renew_reached": True},  # its batch ran and it failed
        "pi-4": {},  # unreachable: left the play before its batch
        "pi-5": {},  # its batch has not run yet
    }


def test_summary_sorts_the_devices_by_what_happened() -> None:
    summary = renew_summary(list(_hostvars()), _hostvars(), ["pi-1", "pi-2", "pi-3", "pi-5"], "30", False)
    assert summary["window_days"] == 30 and summary["check_mode"] is False
    assert [outcome["registration_id"] for outcome in summary["renewed"]] == ["pi-1"]
    assert summary["not_due"] == ["pi-2"]
    assert summary["failed"] == ["pi-3", "pi-4"]  # pi-5 is in no list yet


def test_summary_takes_templated_strings() -> None:
    """set_fact may leave booleans as strings ("False" is true in Python)."""
    hostvars = {"pi-1": {"renew_outcome": _outcome("pi-1", "False")}}
    summary = renew_summary(["pi-1"], hostvars, ["pi-1"], None, "True")
    assert summary["not_due"] == ["pi-1"] and summary["renewed"] == []
    assert summary["window_days"] is None and summary["check_mode"] is True


def test_report_counts_and_names_every_device() -> None:
    summary = renew_summary(list(_hostvars()), _hostvars(), ["pi-1", "pi-2", "pi-3", "pi-5"], 30, False)
    assert renew_report(summary) == [
        "renewed 1 of 4 devices (window: 30 days)",
        "pi-1: renewed, issued by CN=iotfleet Intermediate CA plant-3, not after 2027-05-01T00:00:00Z, DPS: assigned "
        "hub-a.azure-devices.net - renewal_window: expires in 9 days (window 30)",
        "outside the window: pi-2",
        "failed or unreachable: pi-3, pi-4",
    ]


def test_report_in_check_mode_and_on_iot_edge() -> None:
    edge = _outcome("pi-1", True, iot_edge=True, registration="", not_after="")
    summary = {"window_days": None, "check_mode": True, "renewed": [edge], "not_due": [], "failed": []}
    lines = renew_report(summary)
    assert lines[0] == "would renew 1 of 1 devices (window: each device's device_identity_renew_before)"
    # In check mode nothing was issued or reprovisioned yet.
    assert lines[1].startswith(
        "pi-1: would renew, issued by CN=iotfleet Intermediate CA plant-3, not after (when issued) - "
    )
    summary["check_mode"] = False
    assert ", IoT Edge reprovisioned - " in renew_report(summary)[1]


def test_registered_as_filters() -> None:
    assert summary_plugin.FilterModule().filters()["renew_summary"] is renew_summary
    assert report_plugin.FilterModule().filters()["renew_report"] is renew_report
