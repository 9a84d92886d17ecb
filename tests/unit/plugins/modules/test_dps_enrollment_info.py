"""Unit tests for the dps_enrollment_info module: against the DPS emulator (`dps_module`: the real transport over
TLS), or with scripted replies (`service_module`) for what the emulator cannot produce."""

from __future__ import annotations

import base64
import json

from ansible_collections.iotfleet.aziot.plugins.module_utils._dps_service import ENROLLMENT_GROUPS
from ansible_collections.iotfleet.aziot.plugins.modules import dps_enrollment_info
from tests.support.dps_fakes import EMULATED_HUB, reply

POLICY_KEY = base64.b64encode(b"policy-key-material-0123456789ab").decode()
HOST = "contoso-dps.azure-devices-provisioning.net"
CONNECTION_STRING = f"HostName={HOST};SharedAccessKeyName=reader;SharedAccessKey={POLICY_KEY}"
SECRET_KEY = base64.b64encode(b"enrollment-key-material-01234567").decode()


def run(harness, args, policy="provisioningserviceowner"):
    return harness.run(dps_enrollment_info, harness.service_args(policy, **args))


def register(harness, *registration_ids):
    for registration_id in registration_ids:
        assert harness.device_client(registration_id).register()["status"] in ("assigned", "disabled")


def test_registrations_of_a_group_paged(dps_module, emulator_pki):
    # a group of its own, so that other tests' devices do not count: two assigned, then disabled, one refused
    group = {"enrollmentGroupId": "unit-paged", "attestation": {"type": "x509"}}
    client = dps_module.service_client()
    group["attestation"]["x509"] = {
        "signingCertificates": {"primary": {"certificate": emulator_pki.intermediate.pem_text}}
    }
    created = client.put(ENROLLMENT_GROUPS, "unit-paged", group, None)
    for name in ("pi-paged-1", "pi-paged-2"):
        device = emulator_pki.device(name)
        assert dps_module.device_client(name, cert=device.full()).register()["status"] == "assigned"
    client.put(ENROLLMENT_GROUPS, "unit-paged", dict(created, provisioningStatus="disabled"), created["etag"])
    device = emulator_pki.device("pi-paged-3")
    assert dps_module.device_client("pi-paged-3", cert=device.full()).register()["status"] == "disabled"

    out = run(dps_module, dict(kind="registration", enrollment_group_id="unit-paged", page_size=2)).result
    assert out["changed"] is False
    assert [record["registrationId"] for record in out["registrations"]] == ["pi-paged-1", "pi-paged-2", "pi-paged-3"]
    assert out["registrations"][0]["assignedHub"] == EMULATED_HUB
    assert out["status_counts"] == {"assigned": 2, "disabled": 1}
    assert dps_module.methods() == ["POST registrations/unit-paged/query", "POST registrations/unit-paged/query"]
    assert dps_module.calls[1]["headers"]["x-ms-continuation"]
    assert dps_module.calls[0]["headers"]["x-ms-max-item-count"] == "2"


def test_one_registration_record_and_a_missing_one(dps_module):
    register(dps_module, "pi-info-1")
    out = run(dps_module, dict(kind="registration", id="pi-info-1"))
    assert out.result["registrations"][0]["etag"]
    assert out.result["registrations"][0]["status"] == "assigned"
    assert dps_module.methods() == ["GET registrations/pi-info-1"]
    missing = run(dps_module, dict(kind="registration", id="pi-info-9"))
    assert (missing.result["registrations"], missing.result["status_counts"]) == ([], {})


def test_enrollments_are_listed_with_keys_masked(service_module):
    # Scripted: DPS's query answers carry no keys, nor do the emulator's; the mask guards against one that does.
    enrollment = {
        "registrationId": "pi-1",
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": SECRET_KEY, "secondaryKey": SECRET_KEY}},
    }
    args = dict(kind="enrollment", connection_string=CONNECTION_STRING)
    result = service_module.run(dps_enrollment_info, args, reply(200, [enrollment]))
    out = result.result
    assert out["enrollments"][0]["attestation"]["symmetricKey"]["primaryKey"] == "********"
    assert SECRET_KEY not in json.dumps(out)
    assert service_module.methods() == ["POST enrollments/query"]
    assert "registrations" not in out


def test_enrollments_are_listed(dps_module):
    client = dps_module.service_client()
    client.put(
        "enrollments",
        "pi-info-listed",
        {"registrationId": "pi-info-listed", "attestation": {"type": "symmetricKey"}},
        None,
    )
    out = run(dps_module, dict(kind="enrollment")).result
    listed = {record["registrationId"]: record for record in out["enrollments"]}
    assert listed["pi-info-listed"]["attestation"]["type"] == "symmetricKey"
    assert dps_module.methods() == ["POST enrollments/query"]
    assert "registrations" not in out


def test_one_enrollment_group(dps_module):
    result = run(dps_module, dict(kind="enrollment_group", id="unit-sym"))
    groups = result.result["enrollment_groups"]
    assert [group["enrollmentGroupId"] for group in groups] == ["unit-sym"]
    assert groups[0]["attestation"]["type"] == "symmetricKey"
    assert dps_module.methods() == ["GET enrollmentGroups/unit-sym"]


def test_runs_the_same_in_check_mode(dps_module):
    result = run(dps_module, dict(kind="enrollment_group", _ansible_check_mode=True))
    assert result.result["changed"] is False
    assert {"unit-sym", "unit-x509"} <= {group["enrollmentGroupId"] for group in result.result["enrollment_groups"]}
    assert dps_module.methods() == ["POST enrollmentGroups/query"]


def test_registration_needs_an_id_or_a_group(service_module):
    result = service_module.run(dps_enrollment_info, dict(kind="registration", connection_string=CONNECTION_STRING))
    assert result.failed
    assert "id" in result.result["msg"] and "enrollment_group_id" in result.result["msg"]
    assert service_module.calls == []


def test_enrollment_group_id_only_for_registrations(service_module):
    args = dict(kind="enrollment", enrollment_group_id="fleet", connection_string=CONNECTION_STRING)
    result = service_module.run(dps_enrollment_info, args)
    assert result.result["msg"] == (
        "registrations of enrollment group fleet: enrollment_group_id is for kind=registration; use id to read one "
        "enrollment"
    )
    assert service_module.calls == []


def test_policy_without_registration_read(dps_module):
    result = run(dps_module, dict(kind="registration", enrollment_group_id="unit-sym"), policy="enrollmentread")
    assert result.result["msg"].startswith(
        "registrations of enrollment group unit-sym: the DPS refused the shared access signature: check "
        "SharedAccessKey of policy enrollmentread and the controller clock, and that the policy has "
        "RegistrationStatusRead (HTTP 401 (401002): "
    )
