"""DPS operations of provision.yml (issue 21), counted by the emulator as DPS bills them (GET /_emulator/operations):
one registration per new device and no status lookup on a first run, no device request on a re-run that changes
nothing - the controller learns what DPS knows of the fleet in a few service API requests (role dps_registration,
module dps_registration_state_info) and each device compares it with its provisioning marker. And the cases the
shortcut must not hide, each noticed and registered on the next run: a registration record deleted in DPS, a
device its enrollment moved to another hub, a renewed certificate, replaced hardware, a revoked device (individual
enrollment disabled, or its enrollment group disabled) and the same device re-enabled. Check mode still says what a
run would register, and sends nothing.

A simulated fleet (tests/support/fleet.py); each case works on its own cohort (an enrollment group with its own CA).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.support.fleet import SimulatedFleet

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the roles give device files to root (run as root)")

COHORTS = {
    "ops_steady": ["ops-steady-1", "ops-steady-2", "ops-steady-3"],
    "ops_deleted": ["ops-deleted-1"],
    "ops_moved": ["ops-moved-1"],
    "ops_renewed": ["ops-renewed-1"],
    "ops_replaced": ["ops-replaced-1"],
    "ops_revoked": ["ops-revoked-1"],
    "ops_disabled": ["ops-disabled-1"],
}
SECOND_HUB = "hub-second.azure-devices.net"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, dps_emulator_factory) -> SimulatedFleet:
    made = SimulatedFleet(tmp_path_factory.mktemp("registration-ops"), COHORTS)
    made.make_ca()
    config = made.emulator_config()
    config["linked_hubs"].append(SECOND_HUB)
    made.use_emulator(dps_emulator_factory(config, name="registration-ops"))
    return made


@pytest.fixture(scope="module")
def first_run(fleet: SimulatedFleet) -> dict:
    """provision.yml on the new fleet: the DPS operations it cost."""
    fleet.emulator.reset_operations()
    run = fleet.playbook("provision.yml")
    assert run.returncode == 0, run.output()
    assert sorted(fleet.hub_devices()) == fleet.hosts
    return fleet.emulator.operations()


def device_operations(fleet: SimulatedFleet, run_playbook) -> tuple[dict, object]:
    """The device API operations (register, lookup) a playbook run cost, and the run."""
    fleet.emulator.reset_operations()
    run = run_playbook()
    kinds = fleet.emulator.operations()["by_kind"]
    return {kind: kinds.get(kind, 0) for kind in ("register", "lookup")}, run


def changed_hosts(run) -> set[str]:
    return {host for host, counts in run.recap.items() if counts["changed"] and host != "localhost"}


def thumbprint(path: Path) -> str:
    return x509.load_pem_x509_certificate(path.read_bytes()).fingerprint(hashes.SHA256()).hex().upper()


def marker_path(fleet: SimulatedFleet, host: str) -> Path:
    """The device's provisioning marker (role dps_registration's default: next to its certificate)."""
    return fleet.files(host)["chain"].parent / f"dps-registration.{host}.json"


def marker(fleet: SimulatedFleet, host: str) -> dict:
    return json.loads(marker_path(fleet, host).read_text())


def registered(fleet: SimulatedFleet, host: str) -> dict:
    """The emulator's hub device of `host` (its hub, and the thumbprint of the certificate it registered with)."""
    return fleet.hub_devices()[host]


def test_a_first_run_costs_one_operation_per_device_and_a_rerun_none(fleet: SimulatedFleet, first_run: dict) -> None:
    devices = len(fleet.hosts)
    assert first_run["by_kind"].get("register") == devices, first_run  # one registration each
    assert first_run["by_kind"].get("lookup", 0) == 0, first_run  # and no status lookup
    assert first_run["by_api"]["device"] == devices, first_run
    for host in fleet.hosts:  # each device keeps what it registered with
        written = marker(fleet, host)
        assert written["sha256_thumbprint"] == thumbprint(fleet.files(host)["cert"]), written
        assert (written["assigned_hub"], written["device_id"]) == (registered(fleet, host)["assignedHub"], host)
        assert oct(marker_path(fleet, host).stat().st_mode & 0o777) == "0o644"

    fleet.emulator.reset_operations()
    rerun = fleet.playbook("provision.yml")
    assert rerun.returncode == 0, rerun.output()
    assert changed_hosts(rerun) == set(), rerun.output()
    operations = fleet.emulator.operations()
    assert operations["by_api"].get("device", 0) == 0, operations  # not one device request
    # The controller's bulk read: enrollment groups, individual enrollments, one page per group - a fixed handful.
    assert operations["by_kind"].get("registration_query") == len(COHORTS), operations


def test_without_the_service_connection_every_device_looks_itself_up(fleet: SimulatedFleet, first_run: dict) -> None:
    """The shortcut is what saves the lookups: without the DPS service connection for dps_registration, a re-run
    costs one lookup per device (as before issue 21), and changes nothing either."""
    operations, run = device_operations(
        fleet,
        lambda: fleet.playbook("provision.yml", extra_vars={"dps_registration_service_connection_string": ""}),
    )
    assert run.returncode == 0, run.output()
    assert operations == {"register": 0, "lookup": len(fleet.hosts)}, operations
    assert changed_hosts(run) == set(), run.output()


def test_a_deleted_registration_record_is_registered_again_and_check_mode_says_so(
    fleet: SimulatedFleet, first_run: dict
) -> None:
    host = "ops-deleted-1"
    deleted = fleet.service("dps_registration_record", registration_id=host, state="absent")
    assert deleted["changed"], deleted

    operations, check = device_operations(fleet, lambda: fleet.playbook("provision.yml", "--check"))
    assert check.returncode == 0, check.output()
    assert changed_hosts(check) == {host}, check.output()  # check mode tells ...
    assert operations == {"register": 0, "lookup": 0}, operations  # ... and sends nothing
    assert fleet.service("dps_enrollment_info", kind="registration", id=host)["registrations"] == []

    operations, run = device_operations(fleet, lambda: fleet.playbook("provision.yml"))
    assert run.returncode == 0, run.output()
    assert changed_hosts(run) == {host}, run.output()
    assert operations == {"register": 1, "lookup": 0}, operations  # registered at once, no lookup
    assert (
        fleet.service("dps_enrollment_info", kind="registration", id=host)["registrations"][0]["status"] == "assigned"
    )


def test_a_device_its_enrollment_moved_to_another_hub_registers_there(fleet: SimulatedFleet, first_run: dict) -> None:
    host = "ops-moved-1"
    other = SECOND_HUB if registered(fleet, host)["assignedHub"] == fleet.hub else fleet.hub  # hashed over both
    fleet.cohort_vars["ops_moved"]["dps_enrollment_iot_hubs"] = [other]
    operations, run = device_operations(fleet, lambda: fleet.playbook("provision.yml"))
    assert run.returncode == 0, run.output()
    assert operations == {"register": 1, "lookup": 0}, operations
    record = fleet.service("dps_enrollment_info", kind="registration", id=host)["registrations"][0]
    assert record["assignedHub"] == other, record
    assert marker(fleet, host)["assigned_hub"] == other

    operations, rerun = device_operations(fleet, lambda: fleet.playbook("provision.yml"))
    assert rerun.returncode == 0 and changed_hosts(rerun) == set(), rerun.output()
    assert operations == {"register": 0, "lookup": 0}, operations


def test_a_renewed_certificate_is_registered(fleet: SimulatedFleet, first_run: dict) -> None:
    host = "ops-renewed-1"
    before = thumbprint(fleet.files(host)["cert"])
    renewed = fleet.playbook("renew.yml", "-l", host, extra_vars={"renew_within_days": 400})
    assert renewed.returncode == 0, renewed.output()
    after = thumbprint(fleet.files(host)["cert"])
    assert after != before
    assert registered(fleet, host)["sha256Thumbprint"] == after  # DPS has the new certificate
    assert marker(fleet, host)["sha256_thumbprint"] == after

    # A certificate changed behind the playbooks' back (the marker still names the old one): provision.yml notices.
    stale = dict(marker(fleet, host), sha256_thumbprint=before)
    marker_path(fleet, host).write_text(json.dumps(stale), encoding="utf-8")
    operations, run = device_operations(fleet, lambda: fleet.playbook("provision.yml"))
    assert run.returncode == 0, run.output()
    assert changed_hosts(run) == {host}, run.output()
    assert operations == {"register": 1, "lookup": 0}, operations
    assert marker(fleet, host)["sha256_thumbprint"] == after


def test_replaced_hardware_is_registered_with_its_new_certificate(fleet: SimulatedFleet, first_run: dict) -> None:
    host = "ops-replaced-1"
    old = registered(fleet, host)["sha256Thumbprint"]
    fleet.new_hardware(host)  # blank: no key, no certificate, no marker
    operations, run = device_operations(fleet, lambda: fleet.playbook("provision.yml"))
    assert run.returncode == 0, run.output()
    new = thumbprint(fleet.files(host)["cert"])
    assert new != old
    assert registered(fleet, host)["sha256Thumbprint"] == new
    # DPS shows it assigned and there is no marker: the device looks it up, sees another certificate, registers.
    assert operations == {"register": 1, "lookup": 1}, operations
    assert marker(fleet, host)["sha256_thumbprint"] == new


def test_a_revoked_device_is_refused_and_registers_once_reinstated(fleet: SimulatedFleet, first_run: dict) -> None:
    host = "ops-revoked-1"
    revoked = fleet.playbook("revoke.yml", "-l", host)
    assert revoked.returncode == 0, revoked.output()
    refused = fleet.playbook("provision.yml", "-l", host)
    assert refused.returncode != 0, refused.output()
    assert refused.recap[host]["failed"] == 1 and "disabled" in refused.stdout, refused.output()

    reinstated = fleet.playbook("reinstate.yml", "-l", host)
    assert reinstated.returncode == 0, reinstated.output()
    record = fleet.service("dps_enrollment_info", kind="registration", id=host)["registrations"]
    assert record and record[0]["status"] == "assigned", record
    # On its individual enrollment, which the group query does not list, the controller reads its registration
    # record (one GET, dps_registration_state_info): the device sends nothing and is not registered again.
    operations, rerun = device_operations(fleet, lambda: fleet.playbook("provision.yml", "-l", host, "-v"))
    assert rerun.returncode == 0 and changed_hosts(rerun) == set(), rerun.output()
    assert operations == {"register": 0, "lookup": 0}, operations
    assert '"device_check": "read"' in rerun.stdout and '"device_check": "module"' not in rerun.stdout, rerun.output()


def test_a_disabled_enrollment_group_is_noticed_and_its_device_registers_once_enabled(
    fleet: SimulatedFleet, first_run: dict
) -> None:
    host = "ops-disabled-1"
    fleet.cohort_vars["ops_disabled"]["dps_enrollment_provisioning_status"] = "disabled"
    refused = fleet.playbook("provision.yml", "-l", host)
    assert refused.returncode != 0, refused.output()
    assert refused.recap[host]["failed"] == 1 and "enrollment is disabled" in refused.stdout, refused.output()

    fleet.cohort_vars["ops_disabled"]["dps_enrollment_provisioning_status"] = "enabled"
    operations, run = device_operations(fleet, lambda: fleet.playbook("provision.yml", "-l", host))
    assert run.returncode == 0, run.output()
    assert operations["lookup"] == 0, operations
    record = fleet.service("dps_enrollment_info", kind="registration", id=host)["registrations"]
    assert record and record[0]["status"] == "assigned", record
    operations, rerun = device_operations(fleet, lambda: fleet.playbook("provision.yml", "-l", host))
    assert rerun.returncode == 0 and changed_hosts(rerun) == set(), rerun.output()
    assert operations == {"register": 0, "lookup": 0}, operations
