"""Day two, end to end: the playbooks a fleet operator runs after provisioning, on a simulated fleet
(tests/support/fleet.py: devices on the controller, the collection's lab CA, the DPS emulator's device and service
APIs). One fleet for the module, provisioned once with playbooks/provision.yml; each flow works on its own cohort
(an enrollment group with its own CA) and limits its runs to it.

- renew.yml: renews what falls inside the window, in batches, registers the renewed devices again (seen in the
  emulator's hub device list), reports it; a re-run changes nothing; a failing first batch stops the run.
- replace.yml: new hardware takes over a registration id (group and individual enrollment); the old certificate no
  longer registers where DPS can tell; one hub device of that id.
- ca_rollover.yml: a group moves from its CA to a new one with a registration attempt between every step.
- fleet_status.yml: the report from DPS and the controller's copies; the expiry watch fails on a short-lived
  certificate and passes otherwise; text, JSON and HTML written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.support.fleet import SimulatedFleet

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the roles give device files to root (run as root)")

COHORTS = {
    "dt_renew": ["dt-renew-1", "dt-renew-2"],
    "dt_replace": ["dt-repl-group", "dt-repl-indiv"],
    "dt_roll": ["dt-roll-1", "dt-roll-2"],
    "dt_watch": ["dt-watch-short", "dt-watch-ok"],
    "dt_revoke": ["dt-revoke-1"],
    "dt_stolen": ["dt-stolen-renew", "dt-stolen-reinstate"],
    "dt_rollstop": ["dt-rollstop-1"],
}
# Certificates issued for 20 days at first (a pilot), due for renewal within 30 days.
PILOT = {"device_identity_valid_days": 20, "device_identity_renew_before": 10}
# A certificate that expires in two days: the expiry watch's alarm.
SHORT_LIVED = {"device_identity_valid_days": 2, "device_identity_renew_before": 1}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, dps_emulator_factory) -> SimulatedFleet:
    made = SimulatedFleet(tmp_path_factory.mktemp("daytwo"), COHORTS)
    made.host_vars.update({"dt-renew-1": dict(PILOT), "dt-watch-short": SHORT_LIVED})
    made.make_ca()
    made.use_emulator(dps_emulator_factory(made.emulator_config(), name="daytwo"))
    first = made.playbook("provision.yml")
    assert first.returncode == 0, first.output()
    assert sorted(made.hub_devices()) == made.hosts
    return made


def thumbprint(path: Path) -> str:
    """SHA-256 thumbprint (upper-case hex, as DPS shows it) of the first certificate in a PEM file."""
    return x509.load_pem_x509_certificate(path.read_bytes()).fingerprint(hashes.SHA256()).hex().upper()


def not_after_days(path: Path) -> int:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return (cert.not_valid_after_utc - cert.not_valid_before_utc).days


def changed_hosts(run) -> set[str]:
    return {host for host, counts in run.recap.items() if counts["changed"] and host != "localhost"}


# --- renew.yml ------------------------------------------------------------------------------------------------------


def test_renew_renews_the_window_registers_again_and_reports(fleet: SimulatedFleet, tmp_path: Path) -> None:
    hosts = COHORTS["dt_renew"]
    due = ["dt-renew-1"]
    certs = {host: fleet.files(host)["cert"].read_bytes() for host in hosts}
    hub = fleet.hub_devices()
    # The pilot certificate (20 days) is due; renewed, it gets the fleet's standard validity (365 days).
    for host in due:
        fleet.host_vars[host] = {}
    window = {"renew_within_days": 30}

    check = fleet.playbook("renew.yml", "-l", "dt_renew", "--check", extra_vars=window)
    assert check.returncode == 0, check.output()
    assert "would renew 1 of 2 devices (window: 30 days)" in check.stdout, check.output()
    assert {host: fleet.files(host)["cert"].read_bytes() for host in hosts} == certs
    assert fleet.hub_devices() == hub

    summary_file = tmp_path / "renewed.json"
    run = fleet.playbook("renew.yml", "-l", "dt_renew", extra_vars=dict(window, renew_summary_file=str(summary_file)))
    assert run.returncode == 0, run.output()
    assert "renewed 1 of 2 devices (window: 30 days)" in run.stdout, run.output()
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    assert [outcome["registration_id"] for outcome in summary["renewed"]] == due, summary
    assert summary["not_due"] == ["dt-renew-2"] and summary["failed"] == [], summary
    assert all(outcome["reasons"][0].startswith("renewal_window: ") for outcome in summary["renewed"]), summary
    assert changed_hosts(run) == set(due), run.recap

    after = fleet.hub_devices()
    for host in due:
        files = fleet.files(host)
        assert files["cert"].read_bytes() != certs[host], host
        assert not_after_days(files["cert"]) == 365, host
        assert files["copy"].read_bytes() == files["cert"].read_bytes(), host  # the controller's copy follows
        # Registered again, once, with the new certificate: the hub device now knows its thumbprint.
        assert after[host]["registrationCount"] == hub[host]["registrationCount"] + 1, (host, after[host])
        assert after[host]["sha256Thumbprint"] == thumbprint(files["cert"]), host
    assert after["dt-renew-2"] == hub["dt-renew-2"]
    assert fleet.files("dt-renew-2")["cert"].read_bytes() == certs["dt-renew-2"]

    again = fleet.playbook("renew.yml", "-l", "dt_renew", extra_vars=window)
    assert again.returncode == 0, again.output()
    assert changed_hosts(again) == set(), again.recap
    assert "renewed 0 of 2 devices (window: 30 days)" in again.stdout, again.output()
    assert fleet.hub_devices() == after


def test_renew_stops_after_a_failing_batch(fleet: SimulatedFleet, tmp_path: Path) -> None:
    """The first batch (one device) fails to sign - its CA key is not its CA's: the run stops there, the rest of
    the fleet keeps its certificates."""
    certs = {host: fleet.files(host)["cert"].read_bytes() for host in COHORTS["dt_renew"]}
    fleet.host_vars["dt-renew-1"] = {"device_identity_ca_key_path": "{{ pki_dir }}/dt_roll-ca.key.pem"}
    summary_file = tmp_path / "renewed.json"
    try:
        window = {"renew_within_days": 400, "renew_summary_file": str(summary_file)}
        run = fleet.playbook("renew.yml", "-l", "dt_renew", extra_vars=window)
    finally:
        fleet.host_vars["dt-renew-1"] = {}
    assert run.returncode != 0, run.output()
    assert run.recap["dt-renew-1"]["failed"] == 1, run.recap
    assert "dt-renew-1: CA " in run.stdout and "the CA key does not belong to the CA certificate" in run.stdout
    assert {host: fleet.files(host)["cert"].read_bytes() for host in certs} == certs
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    # The second batch never ran: dt-renew-2 is neither renewed nor "outside the window".
    assert (summary["failed"], summary["renewed"], summary["not_due"]) == (["dt-renew-1"], [], []), summary


def test_a_users_handler_hears_of_a_new_identity(fleet: SimulatedFleet, tmp_path: Path) -> None:
    """A device without IoT Edge: the user's own handler listens to the topic device_identity notifies - and is not
    called when nothing changed."""
    heard = tmp_path / "heard"
    playbook = tmp_path / "app.yml"
    play = {
        "name": "My application on the device identity",
        "hosts": "dt-renew-2",
        "gather_facts": False,
        "roles": ["iotfleet.aziot.device_identity"],
        "handlers": [
            {
                "name": "Restart my application",
                "ansible.builtin.lineinfile": {"path": str(heard), "line": "{{ inventory_hostname }}", "create": True},
                "listen": "iotfleet device identity changed",
            }
        ],
    }
    playbook.write_text(yaml.safe_dump([play], sort_keys=False), encoding="utf-8")
    unchanged = fleet.playbook(playbook)
    assert unchanged.returncode == 0 and changed_hosts(unchanged) == set(), unchanged.output()
    assert not heard.exists()
    renewed = fleet.playbook(playbook, extra_vars={"device_identity_renew_before": 400})
    assert renewed.returncode == 0, renewed.output()
    assert heard.read_text(encoding="utf-8") == "dt-renew-2\n"
    assert "RUNNING HANDLER [Restart my application]" in renewed.stdout


@pytest.mark.parametrize(
    ("extra_var", "line"),
    [
        ("renew_within_days=soon", "argument 'renew_within_days' is of type str and we were unable to convert to int"),
        ("renew_within_days=-3", "renew_within_days=-3: renew_within_days must be a number of days, 0 or more"),
        ("renew_max_fail_percentage=120", "renew_max_fail_percentage must be a percentage from 0 to 100"),
        ("renew_serial=1,soon", "renew_serial=1,soon: renew_serial must be batch sizes"),
    ],
)
def test_renew_refuses_a_bad_extra_var_in_one_line(fleet: SimulatedFleet, extra_var: str, line: str) -> None:
    """Fault 2 of issue 19: `-e renew_within_days=soon` renewed nothing and exited 0 ("window: soon days")."""
    run = fleet.playbook("renew.yml", "-l", "dt_renew", "-e", extra_var)
    assert run.returncode != 0, run.output()
    assert line in run.stdout, run.output()
    assert changed_hosts(run) == set() and "Renew device certificates in batches" not in run.stdout, run.recap


def test_reissue_refuses_a_bad_extra_var_in_one_line(fleet: SimulatedFleet) -> None:
    run = fleet.playbook("reissue.yml", "-l", "dt-renew-2", "-e", "reissue_new_key=maybe")
    assert run.returncode != 0, run.output()
    assert "argument 'reissue_new_key' is of type str and we were unable to convert to bool" in run.stdout
    assert changed_hosts(run) == set(), run.recap


# --- replace.yml ----------------------------------------------------------------------------------------------------


def individual_enrollment(fleet: SimulatedFleet, registration_id: str) -> dict | None:
    found = fleet.service("dps_enrollment_info", kind="enrollment", id=registration_id)["enrollments"]
    return found[0] if found else None


def enrolled_thumbprints(enrollment: dict) -> dict[str, str]:
    certificates = enrollment["attestation"]["x509"]["clientCertificates"]
    return {slot: entry["info"]["sha256Thumbprint"] for slot, entry in certificates.items() if entry}


def assert_replaced(fleet: SimulatedFleet, host: str, old: dict[str, Path], hub_before: dict) -> None:
    """A new key and certificate on the device, the controller's copy of it, one hub device of that id with it."""
    files = fleet.files(host)
    assert files["key"].read_bytes() != old["key"].read_bytes(), host
    assert files["cert"].read_bytes() != old["cert"].read_bytes(), host
    assert files["copy"].read_bytes() == files["cert"].read_bytes(), host
    cert = x509.load_pem_x509_certificate(files["cert"].read_bytes())
    assert cert.subject.rfc4514_string() == f"CN={host}"
    hub = [device for device in fleet.emulator.devices() if device["deviceId"].lower() == host]
    assert len(hub) == 1, hub  # IoT Hub keeps one device of that id
    assert hub[0]["sha256Thumbprint"] == thumbprint(files["cert"]), hub
    assert hub[0]["registrationCount"] == hub_before[host]["registrationCount"] + 1, hub  # registered again, once


def test_replace_a_group_device(fleet: SimulatedFleet, tmp_path: Path) -> None:
    host = "dt-repl-group"
    old = fleet.keep_old_identity(host, tmp_path / "old")
    hub = fleet.hub_devices()
    fleet.new_hardware(host)

    unlimited = fleet.playbook("replace.yml")
    assert unlimited.returncode != 0 and "limit it with -l <host>" in unlimited.stdout, unlimited.output()

    check = fleet.playbook("replace.yml", "-l", host, "--check")
    assert check.returncode == 0, check.output()
    assert changed_hosts(check) == {host}, check.recap
    assert list((fleet.devices / host).iterdir()) == [] and fleet.hub_devices() == hub  # nothing done

    run = fleet.playbook("replace.yml", "-l", host)
    assert run.returncode == 0, run.output()
    assert f"{host}: new key and certificate, enrollment group dt_replace, registration forced" in run.stdout
    assert_replaced(fleet, host, old, hub)

    after = fleet.hub_devices()
    again = fleet.playbook("replace.yml", "-l", host)
    assert again.returncode == 0, again.output()
    assert changed_hosts(again) == set(), again.recap
    assert "already holds the certificate last issued for it" in again.stdout
    assert fleet.hub_devices() == after


def test_replace_a_device_with_an_individual_enrollment(fleet: SimulatedFleet, tmp_path: Path) -> None:
    """Its individual enrollment gets the new certificate: the old hardware's no longer registers. A revoked device
    (revoke.yml: a disabled individual enrollment) is replaced only with replace_enable=true."""
    host = "dt-repl-indiv"
    copy = fleet.files(host)["copy"]
    fleet.service("dps_enrollment", registration_id=host, attestation="x509", primary_certificate=str(copy))
    assert fleet.register(host)["status"] == "assigned"  # now through its individual enrollment
    assert enrolled_thumbprints(individual_enrollment(fleet, host)) == {"primary": thumbprint(copy)}

    old = fleet.keep_old_identity(host, tmp_path / "first")
    hub = fleet.hub_devices()
    fleet.new_hardware(host)
    run = fleet.playbook("replace.yml", "-l", host)
    assert run.returncode == 0, run.output()
    assert f"{host}: new key and certificate, individual enrollment updated, registration forced" in run.stdout
    assert_replaced(fleet, host, old, hub)
    new = thumbprint(fleet.files(host)["cert"])
    assert enrolled_thumbprints(individual_enrollment(fleet, host)) == {"primary": new}  # the old one is gone
    refused = fleet.register(host, chain=old["chain"], key=old["key"])  # the old hardware tries
    assert refused.get("failed") and refused.get("http_status") == 401, refused

    # Stolen: revoked first (a disabled individual enrollment), then replaced.
    revoked = fleet.playbook("revoke.yml", "-l", host)
    assert revoked.returncode == 0, revoked.output()
    stolen = fleet.keep_old_identity(host, tmp_path / "stolen")
    fleet.new_hardware(host)
    refused_run = fleet.playbook("replace.yml", "-l", host)
    assert refused_run.returncode != 0, refused_run.output()
    assert f"{host}: its individual enrollment in DPS is disabled (revoked, playbooks/revoke.yml)" in refused_run.stdout
    assert list((fleet.devices / host).iterdir()) == []  # stopped before touching the new device
    hub = fleet.hub_devices()
    enabled = fleet.playbook("replace.yml", "-l", host, extra_vars={"replace_enable": True})
    assert enabled.returncode == 0, enabled.output()
    enrollment = individual_enrollment(fleet, host)
    assert enrollment["provisioningStatus"] == "enabled", enrollment
    assert enrolled_thumbprints(enrollment) == {"primary": thumbprint(fleet.files(host)["cert"])}
    assert_replaced(fleet, host, stolen, hub)
    refused = fleet.register(host, chain=stolen["chain"], key=stolen["key"])
    assert refused.get("failed") and refused.get("http_status") == 401, refused


def replace_stolen(fleet: SimulatedFleet, host: str, where: Path) -> dict[str, Path]:
    """The stolen-device path: revoke.yml, new hardware at the address, replace.yml -e replace_enable=true. Returns
    the stolen hardware's identity (key, chain), which DPS must keep refusing."""
    revoked = fleet.playbook("revoke.yml", "-l", host)
    assert revoked.returncode == 0, revoked.output()
    stolen = fleet.keep_old_identity(host, where)
    fleet.new_hardware(host)
    replaced = fleet.playbook("replace.yml", "-l", host, extra_vars={"replace_enable": True})
    assert replaced.returncode == 0, replaced.output()
    assert_in_step(fleet, host, stolen)
    return stolen


def assert_in_step(fleet: SimulatedFleet, host: str, stolen: dict[str, Path]) -> None:
    """The device's individual enrollment holds the certificate the device holds (and no other), enabled: the device
    registers, the stolen hardware does not."""
    enrollment = individual_enrollment(fleet, host)
    assert enrollment is not None and enrollment["provisioningStatus"] == "enabled", enrollment
    assert enrolled_thumbprints(enrollment) == {"primary": thumbprint(fleet.files(host)["cert"])}, host
    assert fleet.register(host).get("status") == "assigned", host
    refused = fleet.register(host, chain=stolen["chain"], key=stolen["key"])
    assert refused.get("failed") and refused.get("http_status") == 401, refused


def test_a_replaced_stolen_device_is_renewed_and_reissued_in_step(fleet: SimulatedFleet, tmp_path: Path) -> None:
    """Fault 1 of issue 19: after the stolen-device replacement the device has an individual enrollment; renew.yml and
    reissue.yml give it a new certificate and its enrollment must follow, before the device registers."""
    host = "dt-stolen-renew"
    stolen = replace_stolen(fleet, host, tmp_path / "stolen")
    replaced = fleet.files(host)["cert"].read_bytes()

    renewed = fleet.playbook("renew.yml", "-l", host, extra_vars={"renew_within_days": 400})
    assert renewed.returncode == 0, renewed.output()
    assert "renewed 1 of 1 devices" in renewed.stdout, renewed.output()
    assert fleet.files(host)["cert"].read_bytes() != replaced
    assert fleet.hub_devices()[host]["sha256Thumbprint"] == thumbprint(fleet.files(host)["cert"])
    assert_in_step(fleet, host, stolen)

    hub = fleet.hub_devices()
    again = fleet.playbook("renew.yml", "-l", host)
    assert again.returncode == 0, again.output()
    assert not any(counts["changed"] for counts in again.recap.values()), again.recap  # DPS writes count too
    assert fleet.hub_devices() == hub

    reissued = fleet.playbook("reissue.yml", "-l", host)
    assert reissued.returncode == 0, reissued.output()
    assert fleet.hub_devices()[host]["sha256Thumbprint"] == thumbprint(fleet.files(host)["cert"])
    assert_in_step(fleet, host, stolen)


def test_reinstate_keeps_the_stolen_hardware_out(fleet: SimulatedFleet, tmp_path: Path) -> None:
    """A replaced device revoked again and reinstated is reinstated on its current certificate (its individual
    enrollment enabled), not by deleting the enrollment - which would let the stolen hardware back in through the
    group, whose CA signed its certificate too."""
    host = "dt-stolen-reinstate"
    stolen = replace_stolen(fleet, host, tmp_path / "stolen")
    revoked = fleet.playbook("revoke.yml", "-l", host)
    assert revoked.returncode == 0, revoked.output()
    attempt = fleet.register(host)
    assert attempt.get("failed") and "disabled" in attempt["msg"], attempt  # revoked: the new hardware too

    reinstated = fleet.playbook("reinstate.yml", "-l", host)
    assert reinstated.returncode == 0, reinstated.output()
    assert_in_step(fleet, host, stolen)
    again = fleet.playbook("reinstate.yml", "-l", host)
    assert again.returncode == 0, again.output()
    assert not any(counts["changed"] for counts in again.recap.values()), again.recap


# --- revoke.yml, reinstate.yml --------------------------------------------------------------------------------------


def test_revoke_with_an_issued_dir_and_no_pki_dir_then_reinstate(fleet: SimulatedFleet, tmp_path: Path) -> None:
    """Fault 3 of issue 19: an inventory that sets device_identity_issued_dir and no pki_dir (revoke.yml failed on
    "'pki_dir' is undefined"). With no controller copy yet the certificate comes from the device's
    device_identity_cert_dir (revoke.yml read /var/aziot/certs whatever the inventory said)."""
    host = "dt-revoke-1"
    issued = tmp_path / "issued"
    all_vars, group_vars = dict(fleet.all_vars), dict(fleet.group_vars)
    pki_dir = fleet.all_vars.pop("pki_dir")
    for name, value in fleet.all_vars.items():
        if isinstance(value, str):
            fleet.all_vars[name] = value.replace("{{ pki_dir }}", pki_dir)
    fleet.group_vars["device_identity_issued_dir"] = str(issued)
    try:
        revoked = fleet.playbook("revoke.yml", "-l", host)
        assert revoked.returncode == 0, revoked.output()
        copy = issued / f"{host}.cert.pem"
        assert copy.read_bytes() == fleet.files(host)["cert"].read_bytes()  # read from the device, kept
        enrollment = individual_enrollment(fleet, host)
        assert enrollment is not None and enrollment["provisioningStatus"] == "disabled", enrollment
        assert enrolled_thumbprints(enrollment) == {"primary": thumbprint(copy)}
        # Its group's settings too: reinstate.yml enables this enrollment, and DPS then assigns the device by it.
        assert enrollment["initialTwin"]["tags"] == {"site": "dt_revoke"}, enrollment
        assert enrollment["capabilities"] == {"iotEdge": False}, enrollment
        refused = fleet.register(host)
        assert refused.get("failed") and "disabled" in refused["msg"], refused

        reinstated = fleet.playbook("reinstate.yml", "-l", host)
        assert reinstated.returncode == 0, reinstated.output()
        assert fleet.register(host).get("status") == "assigned"
        assert individual_enrollment(fleet, host)["initialTwin"]["tags"] == {"site": "dt_revoke"}
    finally:
        fleet.all_vars, fleet.group_vars = all_vars, group_vars


def test_revoke_and_reinstate_use_the_inventorys_dps_service_connection(fleet: SimulatedFleet) -> None:
    """The inventory's dps_enrollment_* reach the DPS service modules (module_defaults; validate_certs and timeout
    were dropped before), an empty dps_enrollment_ca_path means the controller's trust store, and a missing
    connection string stops the run with one line saying where it goes."""
    host = "dt-revoke-1"

    def reinstate(**service):
        saved = dict(fleet.all_vars)
        fleet.all_vars.update(service)
        try:
            return fleet.playbook("reinstate.yml", "-l", host)
        finally:
            fleet.all_vars = saved

    untrusted = reinstate(dps_enrollment_ca_path="")  # the emulator's CA is not in the trust store
    assert untrusted.returncode != 0, untrusted.output()
    assert "server certificate did not verify" in untrusted.stdout, untrusted.output()
    unverified = reinstate(dps_enrollment_ca_path="", dps_enrollment_validate_certs=False)
    assert unverified.returncode == 0, unverified.output()
    assert "validate_certs=false: the DPS server certificate is not verified" in unverified.output()
    no_time = reinstate(dps_enrollment_timeout=0)
    assert no_time.returncode != 0 and "timeout must be a positive number of seconds" in no_time.stdout
    unset = reinstate(dps_enrollment_connection_string="")
    assert unset.returncode != 0, unset.output()
    assert "dps_enrollment: set dps_enrollment_connection_string" in unset.stdout, unset.output()
    assert changed_hosts(unset) == set()


# --- ca_rollover.yml ------------------------------------------------------------------------------------------------


def issuer_cn(path: Path) -> str:
    return x509.load_pem_x509_certificate(path.read_bytes()).issuer.rfc4514_string()


def test_ca_rollover_with_a_registration_attempt_between_every_step(fleet: SimulatedFleet, tmp_path: Path) -> None:
    hosts = COHORTS["dt_roll"]
    old_ca, new_ca = "{{ pki_dir }}/dt_roll-ca", "{{ pki_dir }}/dt_roll-2027-ca"

    def every_device_registers(step: str) -> None:
        for host in hosts:
            result = fleet.register(host)
            assert result.get("status") == "assigned", (step, host, result)

    def rollover(*args: str, step: str = "all", changes: bool = True):
        run = fleet.playbook(
            "ca_rollover.yml", *args, extra_vars={"ca_rollover_group": "dt_roll", "ca_rollover_step": step}
        )
        assert run.returncode == 0, (step, run.output())
        assert any(counts["changed"] for counts in run.recap.values()) == changes, (step, run.recap)
        every_device_registers(step)
        return run

    every_device_registers("before")
    # The inventory says where the group goes: devices issued by the new CA, the old one still accepted.
    fleet.cohort_vars["dt_roll"].update(
        device_identity_ca_cert_path=f"{new_ca}.cert.pem",
        device_identity_ca_key_path=f"{new_ca}.key.pem",
        dps_enrollment_secondary_certificate=f"{old_ca}.cert.pem",
    )
    old_identity = fleet.keep_old_identity("dt-roll-2", tmp_path / "old")

    rollover(step="secondary")  # makes the new lab CA, adds it to the group as secondary
    assert (fleet.pki_dir / "dt_roll-2027-ca.cert.pem").is_file()
    rollover("-l", "dt-roll-1", step="reissue")  # a first batch
    assert issuer_cn(fleet.files("dt-roll-1")["cert"]) == "CN=iotfleet Intermediate CA dt_roll-2027"
    assert issuer_cn(fleet.files("dt-roll-2")["cert"]) == "CN=iotfleet Intermediate CA dt_roll"
    rollover(step="promote")  # dt-roll-2 still holds a certificate of the old CA: accepted as secondary
    run = rollover(step="reissue")
    assert {host for host, counts in run.recap.items() if counts["changed"]} == {"dt-roll-2"}, run.recap
    for host in hosts:
        assert issuer_cn(fleet.files(host)["cert"]) == "CN=iotfleet Intermediate CA dt_roll-2027", host

    # The old CA is dropped once the inventory no longer names it - after every device moved. --check shows it
    # (it refused: a device counted as moved only once re-issued, and check mode re-issues nothing).
    del fleet.cohort_vars["dt_roll"]["dps_enrollment_secondary_certificate"]
    run = rollover("--check", step="all")
    assert "enrollment group dt_roll: signed by dt_roll-2027-ca.cert.pem alone" in run.stdout, run.output()
    assert len(changed_hosts(run)) == 1, run.recap  # the drop (run once), nothing on the devices
    run = rollover(step="all")
    assert "enrollment group dt_roll: signed by dt_roll-2027-ca.cert.pem alone" in run.stdout, run.output()
    refused = fleet.register("dt-roll-2", chain=old_identity["chain"], key=old_identity["key"])
    assert refused.get("failed") and refused.get("http_status") == 401, refused  # the old CA is gone from DPS

    rollover(step="all", changes=False)
    after = fleet.playbook("provision.yml", "-l", "dt_roll")
    assert after.returncode == 0 and changed_hosts(after) == set(), after.recap


def test_ca_rollover_keeps_the_old_ca_while_a_device_has_not_moved(fleet: SimulatedFleet) -> None:
    """A device limited out of the run (or unreachable) still holds a certificate of the old CA: the drop step
    refuses, naming it, and DPS keeps accepting it."""
    fleet.cohort_vars["dt_watch"].update(
        device_identity_ca_cert_path="{{ pki_dir }}/dt_watch-2027-ca.cert.pem",
        device_identity_ca_key_path="{{ pki_dir }}/dt_watch-2027-ca.key.pem",
        dps_enrollment_secondary_certificate="{{ pki_dir }}/dt_watch-ca.cert.pem",
    )
    try:
        moved = fleet.playbook("ca_rollover.yml", "-l", "dt-watch-ok", extra_vars={"ca_rollover_group": "dt_watch"})
        assert moved.returncode == 0, moved.output()
        del fleet.cohort_vars["dt_watch"]["dps_enrollment_secondary_certificate"]
        drop = fleet.playbook("ca_rollover.yml", "-l", "dt-watch-ok", extra_vars={"ca_rollover_group": "dt_watch"})
        assert drop.returncode != 0, drop.output()
        assert "enrollment group dt_watch: the old CA stays - dt-watch-short did not get a certificate" in drop.stdout
        assert fleet.register("dt-watch-short")["status"] == "assigned"  # still on the old CA, still accepted
    finally:
        fleet.cohort_vars["dt_watch"] = {"dps_enrollment_group": "dt_watch", "site": "dt_watch"}


@pytest.mark.parametrize(
    ("extra_var", "line"),
    [
        ("ca_rollover_step=later", "value of ca_rollover_step must be one of: all, secondary, reissue, promote, drop"),
        # It was an "Unexpected Exception, this is probably a bug" traceback.
        ("ca_rollover_serial=soon", "ca_rollover_serial=soon: ca_rollover_serial must be batch sizes"),
        ("ca_rollover_max_fail_percentage=120", "ca_rollover_max_fail_percentage must be a percentage from 0 to 100"),
    ],
)
def test_ca_rollover_refuses_a_bad_extra_var_in_one_line(fleet: SimulatedFleet, extra_var: str, line: str) -> None:
    run = fleet.playbook("ca_rollover.yml", "-e", "ca_rollover_group=dt_rollstop", "-e", extra_var)
    assert run.returncode != 0, run.output()
    assert line in run.stdout and "Traceback" not in run.output(), run.output()
    assert changed_hosts(run) == set(), run.recap


def test_ca_rollover_stops_before_a_step_that_cannot_do_what_was_asked(fleet: SimulatedFleet) -> None:
    """The plan stops the run, changing nothing, where it used to do something else: the drop step asked while the
    inventory still keeps the old CA (it passed, dropping nothing), and an old CA named wrong after the secondary step
    (the promote step replaced the CA the devices still hold with it, and DPS refused them)."""
    host, kept = "dt-rollstop-1", dict(fleet.cohort_vars["dt_rollstop"])

    def rollover(step: str):
        return fleet.playbook(
            "ca_rollover.yml", extra_vars={"ca_rollover_group": "dt_rollstop", "ca_rollover_step": step}
        )

    def assert_stopped(run, line: str) -> None:
        assert run.returncode != 0, run.output()
        assert line in run.stdout, run.output()
        assert changed_hosts(run) == set(), run.recap
        assert fleet.register(host)["status"] == "assigned"  # still on the old CA, still accepted

    fleet.cohort_vars["dt_rollstop"].update(
        device_identity_ca_cert_path="{{ pki_dir }}/dt_rollstop-2027-ca.cert.pem",
        device_identity_ca_key_path="{{ pki_dir }}/dt_rollstop-2027-ca.key.pem",
        dps_enrollment_secondary_certificate="{{ pki_dir }}/dt_rollstop-ca.cert.pem",
    )
    try:
        added = rollover("secondary")
        assert added.returncode == 0, added.output()
        assert_stopped(
            rollover("drop"),
            "enrollment group dt_rollstop: ca_rollover_step=drop, but its group_vars still keep the old CA accepted",
        )
        # Another group's CA named as the old one: DPS's primary, which the device holds, is neither CA.
        fleet.cohort_vars["dt_rollstop"]["dps_enrollment_secondary_certificate"] = "{{ pki_dir }}/dt_renew-ca.cert.pem"
        assert_stopped(
            rollover("promote"),
            "enrollment group dt_rollstop: its primary signing certificate in DPS is CN=iotfleet Intermediate CA "
            "dt_rollstop (thumbprint",
        )
    finally:
        fleet.cohort_vars["dt_rollstop"] = kept


# --- fleet_status.yml -----------------------------------------------------------------------------------------------


def test_fleet_status_reports_and_watches_expiry(fleet: SimulatedFleet, tmp_path: Path) -> None:
    revoked = fleet.playbook("revoke.yml", "-l", "dt-watch-ok")  # a blocked device for the report
    assert revoked.returncode == 0, revoked.output()
    report = tmp_path / "report"
    text_file = tmp_path / "status.txt"

    alarm = fleet.playbook(
        "fleet_status.yml",
        extra_vars={"fail_within_days": 7, "fleet_status_dir": str(report), "fleet_status_file": str(text_file)},
    )
    assert alarm.returncode != 0, alarm.output()
    assert "1 device certificate(s) expire in less than 7 day(s): dt-watch-short (1 day left)" in alarm.stdout
    assert changed_hosts(alarm) == set(), alarm.recap  # a report changes nothing

    # Written before the alarm: text (the first three columns as before: device, status, hub), JSON, HTML.
    lines = text_file.read_text(encoding="utf-8").splitlines()
    assert lines[0].split()[:2] == ["DEVICE", "STATUS"] and len(lines) == 1 + len(fleet.hosts), lines
    assert (report / "fleet-status.txt").read_text(encoding="utf-8") == text_file.read_text(encoding="utf-8")
    rows = {row["device"]: row for row in json.loads((report / "fleet-status.json").read_text())["devices"]}
    assert sorted(rows) == fleet.hosts
    short = rows["dt-watch-short"]
    assert (short["status"], short["hub"], short["enrollment"]) == ("assigned", fleet.hub, "group dt_watch")
    assert short["tags"] == {"site": "dt_watch"} and short["subject"] == "CN=dt-watch-short"
    assert short["issuer"] == "CN=iotfleet Intermediate CA dt_watch" and short["days_left"] == 1
    assert short["expiring"] and "expires in 1 day" in short["note"] and not short["blocked"]
    cert = x509.load_pem_x509_certificate(fleet.files("dt-watch-short")["cert"].read_bytes())
    assert short["not_after"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    blocked = rows["dt-watch-ok"]
    assert blocked["blocked"] and blocked["status"] == "unregistered", blocked  # revoke.yml deleted its record
    assert blocked["enrollment"] == "individual dt-watch-ok" and "individual enrollment is disabled" in blocked["note"]
    # Fault 5: the tags its twin has - its cohort's. revoke.yml's individual enrollment carries its group's settings,
    # tags included (an enrollment without tags, as revoke.yml made before, shows the group's: unit tests).
    assert blocked["tags"] == {"site": "dt_watch"} and blocked["tags_from"] == "individual enrollment", blocked
    assert blocked["cohort"] == "dt_watch", blocked
    assert not rows["dt-renew-2"]["expiring"] and rows["dt-renew-2"]["days_left"] >= 300
    for line in lines[1:]:
        device, status, hub = line.split()[:3]
        assert (status, hub) == (rows[device]["status"], rows[device]["hub"] or "-"), line
    assert "site=dt_watch" in next(line for line in lines if line.startswith("dt-watch-ok "))
    # The page: the same rows embedded as JSON (tests/report drives it in a browser), nothing fetched from elsewhere.
    html = (report / "fleet-status.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    embedded = html.split('<script id="fleet-data" type="application/json">', 1)[1].split("</script>", 1)[0]
    page = json.loads(embedded)
    assert {row["device"]: row for row in page["devices"]} == rows
    assert page["summary"]["by_cohort"]["dt_watch"] == len(COHORTS["dt_watch"]), page["summary"]
    assert "http" not in html.replace(fleet.hub, "") and " src=" not in html  # self-contained

    quiet = fleet.playbook("fleet_status.yml", extra_vars={"fail_within_days": 1})
    assert quiet.returncode == 0, quiet.output()
    assert "no device certificate expires in less than 1 day(s)" in quiet.stdout
    assert changed_hosts(quiet) == set(), quiet.recap

    # No watch without fail_within_days; the report is written in check mode too; a word for a day count is refused.
    checked = fleet.playbook("fleet_status.yml", "--check", extra_vars={"fleet_status_file": str(tmp_path / "c.txt")})
    assert checked.returncode == 0 and "no device certificate expires" not in checked.stdout, checked.output()
    assert (tmp_path / "c.txt").read_text(encoding="utf-8").splitlines()[1:] == lines[1:]
    soon = fleet.playbook("fleet_status.yml", extra_vars={"fail_within_days": "soon"})
    assert soon.returncode != 0 and "fail_within_days" in soon.stdout, soon.output()

    # No copy on the controller: the certificate is unknown, or read from the device with fleet_status_read_devices.
    copy = fleet.files("dt-watch-short")["copy"]
    away = copy.with_suffix(".away")
    copy.rename(away)
    try:
        for name, read in (("unknown", False), ("read", True)):
            extra = {"fleet_status_dir": str(tmp_path / name), "fleet_status_read_devices": read}
            run = fleet.playbook("fleet_status.yml", "-l", "dt-watch-short", extra_vars=extra)
            assert run.returncode == 0, run.output()
    finally:
        away.rename(copy)
    [unknown] = json.loads((tmp_path / "unknown" / "fleet-status.json").read_text())["devices"]
    assert unknown["days_left"] is None and "certificate unknown: no controller copy" in unknown["note"], unknown
    [read] = json.loads((tmp_path / "read" / "fleet-status.json").read_text())["devices"]
    assert (read["certificate_source"], read["days_left"], read["not_after"]) == ("device", 1, short["not_after"])
