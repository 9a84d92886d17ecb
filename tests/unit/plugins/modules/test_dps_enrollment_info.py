"""Unit tests for the dps_enrollment_info module (no network: scripted fake transport)."""

from __future__ import annotations

import base64
import json

from ansible_collections.iotfleet.aziot.plugins.modules import dps_enrollment_info
from tests.support.dps_fakes import reply

POLICY_KEY = base64.b64encode(b"policy-key-material-0123456789ab").decode()
HOST = "contoso-dps.azure-devices-provisioning.net"
CONNECTION_STRING = f"HostName={HOST};SharedAccessKeyName=reader;SharedAccessKey={POLICY_KEY}"
SECRET_KEY = base64.b64encode(b"enrollment-key-material-01234567").decode()


def registration(registration_id: str, status: str, **fields) -> dict:
    record = {
        "registrationId": registration_id,
        "status": status,
        "assignedHub": "hub-a.azure-devices.net",
        "deviceId": registration_id,
        "etag": f'"{registration_id}-etag"',
        "lastUpdatedDateTimeUtc": "2026-01-12T10:31:07Z",
        "x509": {"certificateInfo": {"subjectName": f"CN={registration_id}", "sha256Thumbprint": "AB" * 32}},
    }
    record.update(fields)
    return record


def run(harness, args, *script):
    return harness.run(dps_enrollment_info, dict(args, connection_string=CONNECTION_STRING), *script)


def test_registrations_of_a_group_paged(service_module):
    result = run(
        service_module,
        dict(kind="registration", enrollment_group_id="fleet", page_size=2),
        reply(
            200,
            [registration("pi-1", "assigned"), registration("pi-2", "failed", errorCode=400209)],
            x_ms_continuation="c1",
        ),
        reply(200, [registration("pi-3", "assigned")]),
    )
    out = result.result
    assert out["changed"] is False
    assert [record["registrationId"] for record in out["registrations"]] == ["pi-1", "pi-2", "pi-3"]
    assert out["registrations"][0]["x509"]["certificateInfo"]["subjectName"] == "CN=pi-1"
    assert out["status_counts"] == {"assigned": 2, "failed": 1}
    assert service_module.methods() == ["POST registrations/fleet/query", "POST registrations/fleet/query"]
    assert service_module.calls[1]["headers"]["x-ms-continuation"] == "c1"
    assert service_module.calls[0]["headers"]["x-ms-max-item-count"] == "2"


def test_one_registration_record_and_a_missing_one(service_module):
    out = run(service_module, dict(kind="registration", id="pi-1"), reply(200, registration("pi-1", "assigned")))
    assert out.result["registrations"][0]["etag"] == '"pi-1-etag"'
    assert service_module.methods() == ["GET registrations/pi-1"]
    missing = run(service_module, dict(kind="registration", id="pi-9"), reply(404, {"errorCode": 404202}))
    assert (missing.result["registrations"], missing.result["status_counts"]) == ([], {})


def test_enrollments_are_listed_with_keys_masked(service_module):
    enrollment = {
        "registrationId": "pi-1",
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": SECRET_KEY, "secondaryKey": SECRET_KEY}},
    }
    result = run(service_module, dict(kind="enrollment"), reply(200, [enrollment]))
    out = result.result
    assert out["enrollments"][0]["attestation"]["symmetricKey"]["primaryKey"] == "********"
    assert SECRET_KEY not in json.dumps(out)
    assert service_module.methods() == ["POST enrollments/query"]
    assert "registrations" not in out


def test_one_enrollment_group(service_module):
    result = run(service_module, dict(kind="enrollment_group", id="fleet"), reply(200, {"enrollmentGroupId": "fleet"}))
    assert result.result["enrollment_groups"] == [{"enrollmentGroupId": "fleet"}]
    assert service_module.methods() == ["GET enrollmentGroups/fleet"]


def test_runs_the_same_in_check_mode(service_module):
    result = run(service_module, dict(kind="enrollment_group", _ansible_check_mode=True), reply(200, []))
    assert (result.result["changed"], result.result["enrollment_groups"]) == (False, [])


def test_registration_needs_an_id_or_a_group(service_module):
    result = run(service_module, dict(kind="registration"))
    assert result.failed
    assert "id" in result.result["msg"] and "enrollment_group_id" in result.result["msg"]
    assert service_module.calls == []


def test_enrollment_group_id_only_for_registrations(service_module):
    result = run(service_module, dict(kind="enrollment", enrollment_group_id="fleet"))
    assert result.result["msg"] == (
        "registrations of enrollment group fleet: enrollment_group_id is for kind=registration; use id to read one "
        "enrollment"
    )


def test_policy_without_registration_read(service_module):
    result = run(
        service_module,
        dict(kind="registration", enrollment_group_id="fleet"),
        reply(401, {"errorCode": 401002, "message": "Unauthorized"}),
    )
    assert result.result["msg"] == (
        "registrations of enrollment group fleet: the DPS refused the shared access signature: check SharedAccessKey "
        "of policy reader and the controller clock, and that the policy has RegistrationStatusRead "
        "(HTTP 401 (401002): Unauthorized)"
    )
