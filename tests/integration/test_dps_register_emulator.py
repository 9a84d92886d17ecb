"""iotfleet.aziot.dps_register through ansible-playbook against the local DPS emulator (tools/dps_emulator).

One emulator for the module; every case uses its own registration id so the cases do not depend on each other.
The PKI (root -> intermediate -> device leaf) comes from tests/support/pki.py; the X.509 enrollment group trusts
the root, so a device must send leaf + intermediate.
"""

from __future__ import annotations

import base64

import pytest

from tests.support.emulator import fleet_config
from tests.support.pki import Pki
from tests.support.playbook import PlaybookRun, run_playbook

ID_SCOPE = "0ne00DPSTEST"
HUB = "hub-test.azure-devices.net"
GROUP_KEY = base64.b64encode(b"integration-group-key-0123456789").decode()
DISABLED_KEY = base64.b64encode(b"disabled-device-key-0123456789ab").decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"), label="iotfleet Test")


@pytest.fixture(scope="module")
def emulator(pki, dps_emulator_factory):
    disabled = {
        "registration_id": "sym-disabled",
        "attestation": "symmetric_key",
        "primary_key": DISABLED_KEY,
        "provisioning_status": "disabled",
    }
    return dps_emulator_factory(
        fleet_config(ID_SCOPE, HUB, pki.root_path, GROUP_KEY, individual_enrollments=[disabled])
    )


def connection(emulator) -> dict:
    return {"id_scope": ID_SCOPE, "provisioning_host": f"{emulator.host}:{emulator.port}", "ca_path": emulator.ca_cert}


def four_runs(module_args: str) -> list[dict]:
    """check mode (changed), real (changed), check mode (unchanged), real (unchanged), asserting each."""
    register = "iotfleet.aziot.dps_register"
    return [
        {"name": "Register (check mode)", register: module_args, "check_mode": True, "register": "check1"},
        {"name": "Register", register: module_args, "register": "real1"},
        {"name": "Register again (check mode)", register: module_args, "check_mode": True, "register": "check2"},
        {"name": "Register again", register: module_args, "register": "real2"},
        {
            "name": "Assert the four runs",
            "ansible.builtin.assert": {
                "that": [
                    "check1 is changed",
                    "real1 is changed",
                    "real1.status == 'assigned'",
                    "real1.assigned_hub == hub",
                    "real1.device_id == registration_id",
                    "real1.operation_id | length > 0",
                    "check2 is not changed",
                    "real2 is not changed",
                    "real2.status == 'assigned'",
                    "real2.assigned_hub == hub",
                    "real2.requests == 1",
                ]
            },
        },
    ]


def assert_ok(run: PlaybookRun) -> None:
    assert run.returncode == 0, run.output()


def registered(emulator) -> dict[str, dict]:
    """The emulator's IoT Hub device list, keyed by registration id."""
    return {device["registrationId"]: device for device in emulator.devices()}


def test_x509_group_four_runs(emulator, pki, tmp_path):
    device = pki.device("pi-int-x509")
    variables = dict(
        connection(emulator), registration_id="pi-int-x509", hub=HUB, chain=device.chain_file, key=device.key_file
    )
    args = {
        "id_scope": "{{ id_scope }}",
        "registration_id": "{{ registration_id }}",
        "provisioning_host": "{{ provisioning_host }}",
        "ca_path": "{{ ca_path }}",
        "client_cert": "{{ chain }}",
        "client_key": "{{ key }}",
        "timeout": 30,
    }
    assert_ok(run_playbook(tmp_path, four_runs(args), variables))
    device_record = registered(emulator)["pi-int-x509"]
    assert device_record["enrollmentGroupId"] == "fleet-x509"
    assert device_record["registrationCount"] == 1  # the re-runs did not register again


def test_leaf_only_chain_is_refused_with_the_fix(emulator, pki, tmp_path):
    device = pki.device("pi-int-leaf")
    variables = dict(connection(emulator), registration_id="pi-int-leaf", leaf=device.leaf_file, key=device.key_file)
    tasks = [
        {
            "name": "Register with only the device certificate",
            "iotfleet.aziot.dps_register": {
                "id_scope": "{{ id_scope }}",
                "registration_id": "{{ registration_id }}",
                "provisioning_host": "{{ provisioning_host }}",
                "ca_path": "{{ ca_path }}",
                "client_cert": "{{ leaf }}",
                "client_key": "{{ key }}",
                "timeout": 30,
            },
            "register": "leaf_only",
            "failed_when": False,
        },
        {
            "name": "Assert the message names the fix",
            "ansible.builtin.assert": {
                "that": [
                    "leaf_only.msg == registration_id ~ ': DPS refused the certificate (401002): the chain you sent "
                    "stops at the device certificate; send the full chain (device + intermediate) in client_cert'",
                    "leaf_only.http_status == 401",
                    "leaf_only.retried_requests == 0",
                ]
            },
        },
    ]
    assert_ok(run_playbook(tmp_path, tasks, variables))
    assert "pi-int-leaf" not in set(registered(emulator))


def test_symmetric_key_group_four_runs(emulator, tmp_path):
    variables = dict(connection(emulator), registration_id="sym-int-001", hub=HUB, group_key=GROUP_KEY)
    args = {
        "id_scope": "{{ id_scope }}",
        "registration_id": "{{ registration_id }}",
        "provisioning_host": "{{ provisioning_host }}",
        "ca_path": "{{ ca_path }}",
        "attestation": "symmetric_key",
        "group_key": "{{ group_key }}",
        "payload": {"site": "lab"},
        "timeout": 30,
    }
    assert_ok(run_playbook(tmp_path, four_runs(args), variables))
    device_record = registered(emulator)["sym-int-001"]
    assert device_record["enrollmentGroupId"] == "fleet-sym"
    assert device_record["registrationCount"] == 1


def test_disabled_enrollment_fails_clearly(emulator, tmp_path):
    variables = dict(connection(emulator), registration_id="sym-disabled", device_key=DISABLED_KEY)
    tasks = [
        {
            "name": "Register a device whose enrollment is disabled",
            "iotfleet.aziot.dps_register": {
                "id_scope": "{{ id_scope }}",
                "registration_id": "{{ registration_id }}",
                "provisioning_host": "{{ provisioning_host }}",
                "ca_path": "{{ ca_path }}",
                "attestation": "symmetric_key",
                "symmetric_key": "{{ device_key }}",
                "timeout": 30,
            },
            "register": "disabled",
            "failed_when": False,
        },
        {
            "name": "Assert the message says the enrollment is disabled",
            "ansible.builtin.assert": {
                "that": [
                    "disabled.msg.startswith(registration_id ~ ': enrollment is disabled in DPS')",
                    "disabled.status == 'disabled'",
                ]
            },
        },
    ]
    assert_ok(run_playbook(tmp_path, tasks, variables))
    assert "sym-disabled" not in set(registered(emulator))


def test_throttling_and_dropped_connection_recover(emulator, pki, tmp_path):
    storm = pki.device("pi-int-storm")
    drop = pki.device("pi-int-drop")
    emulator.set_faults(
        [
            {"type": "throttle", "count": 4, "retry_after": 1, "registration_id": "pi-int-storm"},
            {"type": "drop", "count": 1, "endpoint": "operation", "registration_id": "pi-int-drop"},
        ]
    )
    variables = dict(connection(emulator), storm=storm.files(), drop=drop.files())
    tasks = []
    for name, files in (("storm", "storm"), ("drop", "drop")):
        tasks.append(
            {
                "name": f"Register through the {name} fault",
                "iotfleet.aziot.dps_register": {
                    "id_scope": "{{ id_scope }}",
                    "registration_id": f"pi-int-{name}",
                    "provisioning_host": "{{ provisioning_host }}",
                    "ca_path": "{{ ca_path }}",
                    "client_cert": "{{ %s.chain }}" % files,
                    "client_key": "{{ %s.key }}" % files,
                    "timeout": 30,
                },
                "register": f"{name}_result",
            }
        )
    tasks.append(
        {
            "name": "Assert both recovered",
            "ansible.builtin.assert": {
                "that": [
                    "storm_result is changed",
                    "storm_result.status == 'assigned'",
                    "storm_result.retried_requests == 4",
                    "drop_result is changed",
                    "drop_result.status == 'assigned'",
                    "drop_result.retried_requests == 1",
                ]
            },
        }
    )
    try:
        assert_ok(run_playbook(tmp_path, tasks, variables))
    finally:
        emulator.clear_faults()
    assert {"pi-int-storm", "pi-int-drop"} <= set(registered(emulator))
