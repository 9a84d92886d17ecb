"""_fleet_report: the fleet report's rows (DPS records + certificates + inventory), the twin tags a device got, its
summary, the expiries per month and the expiry watch."""

from __future__ import annotations

import base64
import datetime
from pathlib import Path

import pytest

from ansible_collections.iotfleet.aziot.plugins.module_utils._fleet_report import (
    build_report,
    build_rows,
    due,
    due_text,
    expiries,
    summarise,
)
from tests.support.pki import DAY, Pki, issue

NOW = datetime.datetime.now(datetime.timezone.utc)
HUB = "hub-a.azure-devices.net"


def group(group_id: str, tags: dict | None = None, status: str = "enabled", signer: str = "") -> dict:
    record = {"enrollmentGroupId": group_id, "provisioningStatus": status, "initialTwin": {"tags": tags or {}}}
    if signer:
        record["attestation"] = {"x509": {"signingCertificates": {"primary": {"info": {"subjectName": signer}}}}}
    return record


def individual(registration_id: str, status: str = "enabled", tags: dict | None = None, info: dict | None = None):
    record = {"registrationId": registration_id, "provisioningStatus": status}
    if tags is not None:
        record["initialTwin"] = {"tags": tags}
    if info is not None:
        record["attestation"] = {"x509": {"clientCertificates": {"primary": {"info": info}}}}
    return record


def assigned(registration_id: str, hub: str = HUB) -> dict:
    return {"registrationId": registration_id, "status": "assigned", "assignedHub": hub, "deviceId": registration_id}


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki", label="Plant 3")


def copy_of(pki: Pki, registration_id: str, days: int = 200) -> str:
    """The controller's copy of a device certificate that expires in `days` days (and a few minutes)."""
    made = pki.device(registration_id, not_after=days * DAY + datetime.timedelta(minutes=10))
    return made.leaf_file


def rows(devices, groups=(), enrollments=(), by_group=None, records=(), warn_days=30) -> list[dict]:
    return build_rows(list(devices), list(groups), list(enrollments), by_group or {}, list(records), warn_days, NOW)


def test_a_group_device_with_its_controller_copy(pki: Pki) -> None:
    device = {"host": "pi-1", "registration_id": "pi-1", "certificate_path": copy_of(pki, "pi-1", 200)}
    [row] = rows(
        [device], [group("plant-3", {"site": "plant-3", "$version": 2})], by_group={"plant-3": [assigned("pi-1")]}
    )
    assert row["status"] == "assigned" and row["hub"] == HUB and row["device_id"] == "pi-1"
    assert row["cohort"] == "plant-3" and row["enrollment"] == "group plant-3"
    assert row["tags"] == {"site": "plant-3"} and row["tags_from"] == "enrollment group plant-3"  # no $ metadata
    assert row["subject"] == "CN=pi-1" and row["issuer"] == "CN=Plant 3 Intermediate CA"
    assert row["days_left"] == 200 and row["certificate_source"] == "controller copy"
    assert not row["blocked"] and not row["expiring"] and row["note"] == ""


def test_an_individual_enrollment_without_tags_shows_its_cohorts_tags(pki: Pki) -> None:
    """Fault 5: replace.yml / revoke.yml give a device an individual enrollment without initialTwin; its twin has
    its cohort's tags (initialTwin reached it at its first registration, through the group)."""
    device = {"host": "pi-2", "enrollment_group": "plant-3", "certificate_path": copy_of(pki, "pi-2")}
    groups = [group("plant-3", {"site": "plant-3", "ring": "canary"})]
    [row] = rows([device], groups, [individual("pi-2")], records=[assigned("pi-2")])
    assert row["enrollment"] == "individual pi-2" and row["cohort"] == "plant-3"
    assert row["tags"] == {"site": "plant-3", "ring": "canary"}, row
    assert row["tags_from"] == "enrollment group plant-3"


def test_an_individual_enrollment_with_tags_of_its_own_shows_them(pki: Pki) -> None:
    device = {"host": "pi-3", "enrollment_group": "plant-3", "certificate_path": copy_of(pki, "pi-3")}
    groups = [group("plant-3", {"site": "plant-3"})]
    [row] = rows([device], groups, [individual("pi-3", tags={"site": "lab"})], records=[assigned("pi-3")])
    assert row["tags"] == {"site": "lab"} and row["tags_from"] == "individual enrollment"


def test_the_cohort_of_a_device_the_inventory_does_not_place_is_the_group_of_its_issuer(pki: Pki) -> None:
    """No registration record (revoke.yml deleted it) and no dps_enrollment_group: the group whose CA issued the
    device's certificate, as DPS would match it (names compared whatever their order)."""
    device = {"host": "pi-4", "certificate_path": copy_of(pki, "pi-4")}
    groups = [
        group("other", {"site": "x"}, signer="CN=Other CA"),
        group("fleet", {"site": "y"}, signer="CN=Plant 3 Intermediate CA"),
    ]
    [row] = rows([device], groups, [individual("PI-4", status="disabled")])
    assert row["cohort"] == "fleet" and row["tags"] == {"site": "y"}
    assert row["blocked"] and row["status"] == "unregistered"
    assert row["note"] == "blocked: its individual enrollment is disabled; no registration record in DPS"


def test_a_disabled_group_blocks_its_devices_unless_an_individual_enrollment_wins(pki: Pki) -> None:
    devices = [
        {"host": "pi-5", "certificate_path": copy_of(pki, "pi-5")},
        {"host": "pi-6", "enrollment_group": "plant-3", "certificate_path": copy_of(pki, "pi-6")},
    ]
    found = rows(
        devices, [group("plant-3", status="disabled")], [individual("pi-6")], by_group={"plant-3": [assigned("pi-5")]}
    )
    assert [row["blocked"] for row in found] == [True, False]
    assert found[0]["note"].startswith("blocked: its enrollment group is disabled")


def test_registration_ids_compare_case_insensitively(pki: Pki) -> None:
    device = {"host": "pi-7", "registration_id": "Pi-7", "certificate_path": copy_of(pki, "Pi-7")}
    [row] = rows([device], [group("g")], by_group={"g": [assigned("pi-7")]})
    assert row["device"] == "Pi-7" and row["status"] == "assigned" and row["cohort"] == "g"


def test_where_the_certificate_is_read(pki: Pki, tmp_path: Path) -> None:
    """The controller's copy, else what the device sent, else the individual enrollment's certificate info; an
    unreadable file is a note, not a failure."""
    sent = base64.b64encode(pki.device("pi-9", not_after=3 * DAY + datetime.timedelta(minutes=10)).issued.pem).decode()
    broken = tmp_path / "broken.pem"
    broken.write_text("not a certificate")
    info = {"subjectName": "CN=pi-10", "issuerName": "CN=CA", "notAfterUtc": "2020-01-02T03:04:05.1234567Z"}
    devices = [
        {"host": "pi-8", "certificate_path": str(tmp_path / "missing.pem")},
        {"host": "pi-9", "certificate_path": str(tmp_path / "missing.pem"), "certificate_pem": sent},
        {"host": "pi-10"},
        {"host": "pi-11", "certificate_path": str(broken)},
    ]
    found = {row["device"]: row for row in rows(devices, enrollments=[individual("pi-10", info=info)])}
    assert found["pi-8"]["days_left"] is None and "certificate unknown: no controller copy" in found["pi-8"]["note"]
    assert found["pi-9"]["certificate_source"] == "device" and found["pi-9"]["days_left"] == 3
    assert "expires in 3 days" in found["pi-9"]["note"] and found["pi-9"]["expiring"]
    assert found["pi-10"]["certificate_source"] == "individual enrollment"
    assert found["pi-10"]["not_after"] == "2020-01-02T03:04:05Z" and found["pi-10"]["days_left"] < 0
    assert "certificate expired" in found["pi-10"]["note"] and found["pi-10"]["expiring"]
    assert found["pi-11"]["days_left"] is None
    assert f"unreadable certificate (controller copy): {broken} holds no PEM certificate" in found["pi-11"]["note"]


def test_one_day_left_is_said_in_the_singular(pki: Pki) -> None:
    device = {"host": "pi-12", "certificate_path": copy_of(pki, "pi-12", days=1)}
    [row] = rows([device])
    assert row["days_left"] == 1 and row["note"].endswith("expires in 1 day")
    assert due([row], 7) == [{"device": "pi-12", "days_left": 1, "not_after": row["not_after"]}]
    assert due_text(due([row], 7)) == "pi-12 (1 day left)" and due([row], 1) == []


def test_summary_counts_per_status_cohort_and_hub() -> None:
    def row(status, cohort, hub, days_left, blocked=False):
        return {
            "status": status,
            "cohort": cohort,
            "hub": hub,
            "days_left": days_left,
            "blocked": blocked,
            "expiring": days_left is not None and days_left < 30,
        }

    found = summarise(
        [
            row("assigned", "a", "h1", 100),
            row("assigned", "b", "h1", 5),
            row("failed", "b", "", -1),
            row("unregistered", "", "", None, blocked=True),
        ]
    )
    assert found["devices"] == 4 and found["assigned"] == 2 and found["blocked"] == 1
    assert (found["expiring"], found["expired"], found["unknown_certificate"]) == (2, 1, 1)
    assert found["by_status"] == {"assigned": 2, "failed": 1, "unregistered": 1}
    assert list(found["by_cohort"].items()) == [("b", 2), ("-", 1), ("a", 1)]  # most first, then by name
    assert found["by_hub"] == {"-": 2, "h1": 2}


def test_expiries_per_month_from_this_one() -> None:
    now = datetime.datetime(2026, 11, 20, 8, 0, tzinfo=datetime.timezone.utc)
    rows_ = [
        {"not_after": "2026-11-30T00:00:00Z", "days_left": 9},
        {"not_after": "2027-02-01T00:00:00Z", "days_left": 72},
        {"not_after": "2027-02-27T00:00:00Z", "days_left": 98},
        {"not_after": "2027-10-31T00:00:00Z", "days_left": 344},
        {"not_after": "2027-11-01T00:00:00Z", "days_left": 345},  # the 13th month: later
        {"not_after": "2026-11-01T00:00:00Z", "days_left": -20},  # this month, but already expired
        {"not_after": "", "days_left": None},
    ]
    found = expiries(rows_, now)
    months = {month["month"]: month["devices"] for month in found["months"]}
    assert list(months) == [f"2026-{m}" for m in ("11", "12")] + [f"2027-{m:02d}" for m in range(1, 11)]
    assert months["2026-11"] == 1 and months["2027-02"] == 2 and months["2027-10"] == 1 and sum(months.values()) == 4
    assert (found["expired"], found["later"]) == (1, 1)


def test_build_report_with_the_expiry_watch(pki: Pki) -> None:
    devices = [
        {"host": "pi-13", "certificate_path": copy_of(pki, "pi-13", 2)},
        {"host": "pi-14", "certificate_path": copy_of(pki, "pi-14", 90)},
    ]
    report = build_report(build_rows(devices, [], [], {}, [], 30, NOW), 30, NOW, fail_within_days=7)
    assert [row["device"] for row in report["devices"]] == ["pi-13", "pi-14"]  # the order given
    assert report["due_text"] == "pi-13 (2 days left)" and report["generated"] == NOW.strftime("%Y-%m-%d")
    assert report["summary"]["devices"] == 2 and sum(m["devices"] for m in report["expiries"]["months"]) == 2
    assert build_report(build_rows(devices, [], [], {}, [], 30, NOW), 30, NOW)["due"] == []  # no watch


def test_a_leaf_signed_elsewhere_matches_no_group(pki: Pki, tmp_path: Path) -> None:
    other = issue("Unrelated CA", ca=True)
    leaf = issue("pi-15", other)
    path = tmp_path / "pi-15.pem"
    path.write_bytes(leaf.pem)
    [row] = rows(
        [{"host": "pi-15", "certificate_path": str(path)}], [group("fleet", signer="CN=Plant 3 Intermediate CA")]
    )
    assert row["cohort"] == "" and row["enrollment"] == "" and row["tags"] == {} and row["tags_from"] == ""


def hub_device(device_id: str, status: str = "enabled", reason: str = "", tags=None, configurations=None) -> dict:
    """A device as iothub_device_info returns it."""
    return {
        "device_id": device_id,
        "status": status,
        "status_reason": reason,
        "tags": tags or {},
        "configurations": configurations or {},
    }


def test_the_hub_side_status_tags_and_applied_configurations(pki: Pki) -> None:
    """With the hub read: each device's status there, its twin's tags (which the hub keeps, not the enrollment) and
    the configurations applied to it - targeted-only ones left out; a device the hub lacks is `absent`."""
    groups = [group("plant-3", {"site": "plant-3"})]
    devices = [
        {"host": "pi-20", "enrollment_group": "plant-3", "certificate_path": copy_of(pki, "pi-20")},
        {"host": "pi-21", "enrollment_group": "plant-3", "certificate_path": copy_of(pki, "pi-21")},
        {"host": "pi-22", "enrollment_group": "plant-3", "certificate_path": copy_of(pki, "pi-22")},
        {"host": "pi-23", "enrollment_group": "plant-3", "certificate_path": copy_of(pki, "pi-23")},
    ]
    applied = {
        "edge-plant-3": {"status": "applied"},
        "edge-canary": {"status": "applied"},
        "edge-lab": {"status": "targeted"},
    }
    read = [
        hub_device("pi-20", tags={"site": "lab", "ring": "canary"}, configurations=applied),
        hub_device("pi-21", "disabled", "revoked by iotfleet.aziot revoke.yml", tags={"site": "plant-3"}),
        hub_device("PI-23"),  # a device id that differs only in case
    ]
    found = {
        row["device"]: row
        for row in build_rows(
            devices, groups, [], {"plant-3": [assigned(h) for h in ("pi-20", "pi-21", "pi-22")]}, [], 30, NOW, read
        )
    }
    enabled, disabled, absent, other_case = (found[name] for name in ("pi-20", "pi-21", "pi-22", "pi-23"))
    assert (enabled["hub_status"], enabled["configurations"]) == ("enabled", ["edge-canary", "edge-plant-3"])
    assert enabled["tags"] == {"site": "lab", "ring": "canary"} and enabled["tags_from"] == "IoT Hub twin"
    assert enabled["note"] == "" and not enabled["blocked"]
    assert disabled["hub_status"] == "disabled" and disabled["configurations"] == []
    assert disabled["hub_status_reason"] == "revoked by iotfleet.aziot revoke.yml"
    assert disabled["note"] == "disabled in IoT Hub (revoked by iotfleet.aziot revoke.yml)"
    assert absent["hub_status"] == "absent" and absent["note"] == "assigned by DPS but not in the IoT hub read"
    assert absent["tags"] == {"site": "plant-3"} and absent["tags_from"] == "enrollment group plant-3"
    assert other_case["hub_status"] == "enabled" and other_case["note"] == "no registration record in DPS"

    summary = summarise(list(found.values()))
    assert summary["hub_disabled"] == 1
    assert summary["by_hub_status"] == {"enabled": 2, "absent": 1, "disabled": 1}
    assert summary["by_configuration"] == {"-": 3, "edge-canary": 1, "edge-plant-3": 1}
    report = build_report(list(found.values()), 30, NOW)
    assert report["hub_read"] and report["summary"] == summary


def test_without_the_hub_the_rows_say_nothing_of_it(pki: Pki) -> None:
    device = {"host": "pi-24", "enrollment_group": "plant-3", "certificate_path": copy_of(pki, "pi-24")}
    [row] = rows([device], [group("plant-3", {"site": "plant-3"})], by_group={"plant-3": [assigned("pi-24")]})
    assert (row["hub_status"], row["hub_status_reason"], row["configurations"]) == ("", "", [])
    assert row["tags_from"] == "enrollment group plant-3" and row["note"] == ""
    report = build_report([row], 30, NOW)
    assert not report["hub_read"]
    assert (report["summary"]["hub_disabled"], report["summary"]["by_hub_status"]) == (0, {})
    assert report["summary"]["by_configuration"] == {}
    # The hub read and holding none of the devices: every one absent, the report still from the hub.
    [absent] = build_rows([device], [], [], {}, [], 30, NOW, [])
    assert absent["hub_status"] == "absent" and build_report([absent], 30, NOW)["hub_read"]
