"""Unit tests for the dps_registration_record module (no network: scripted fake transport)."""

from __future__ import annotations

import base64
import json

from ansible_collections.iotfleet.aziot.plugins.modules import dps_registration_record
from tests.support.dps_fakes import reply

POLICY_KEY = base64.b64encode(b"policy-key-material-0123456789ab").decode()
HOST = "contoso-dps.azure-devices-provisioning.net"
CONNECTION_STRING = f"HostName={HOST};SharedAccessKeyName=registrations;SharedAccessKey={POLICY_KEY}"
RECORD = {"registrationId": "pi-1", "status": "assigned", "assignedHub": "hub-a", "deviceId": "pi-1", "etag": '"r1"'}


def run(harness, *script, **args):
    args = dict(connection_string=CONNECTION_STRING, registration_id="pi-1", state="absent", **args)
    return harness.run(dps_registration_record, args, *script)


def test_deletes_with_if_match_from_the_get(service_module):
    result = run(service_module, reply(200, RECORD), reply(204), _ansible_diff=True)
    out = result.result
    assert out["changed"] is True
    assert out["registration"]["etag"] == '"r1"'
    assert service_module.methods() == ["GET registrations/pi-1", "DELETE registrations/pi-1"]
    assert service_module.calls[1]["headers"]["If-Match"] == '"r1"'
    assert json.loads(out["diff"]["before"])["assignedHub"] == "hub-a"
    assert out["diff"]["after"] == ""


def test_absent_already_is_not_a_change(service_module):
    result = run(service_module, reply(404, {"errorCode": 404202}))
    assert (result.result["changed"], result.result["registration"]) == (False, {})
    assert len(service_module.calls) == 1


def test_check_mode_sends_no_delete(service_module):
    result = run(service_module, reply(200, RECORD), _ansible_check_mode=True)
    assert result.result["changed"] is True
    assert [call["method"] for call in service_module.calls] == ["GET"]


def test_412_is_read_again_and_bounded(service_module):
    result = run(service_module, reply(200, RECORD), reply(412, {}), reply(200, dict(RECORD, etag='"r2"')), reply(204))
    assert result.result["changed"] is True
    assert [call["headers"].get("If-Match") for call in service_module.calls if call["method"] == "DELETE"] == [
        '"r1"',
        '"r2"',
    ]
    script = [item for _ in range(4) for item in (reply(200, RECORD), reply(412, {}))]
    failed = run(service_module, *script)
    assert failed.failed
    assert failed.result["msg"] == (
        "registration record pi-1: the record changed in DPS while this task was deleting it, 4 times in a row "
        "(HTTP 412); this task changed nothing, run it again"
    )


def test_gone_between_read_and_delete_is_not_this_tasks_change(service_module):
    result = run(service_module, reply(200, RECORD), reply(404, {}))
    assert result.result["changed"] is False


def test_policy_without_registration_write(service_module):
    result = run(service_module, reply(200, RECORD), reply(403, {"message": "Forbidden"}))
    assert result.result["msg"] == (
        "registration record pi-1: policy registrations may not delete registration record pi-1: give it the "
        "RegistrationStatusWrite permission (DPS > Shared access policies) or use a policy that has it "
        "(HTTP 403: Forbidden)"
    )


def test_state_is_required(service_module):
    result = service_module.run(
        dps_registration_record, dict(connection_string=CONNECTION_STRING, registration_id="pi-1")
    )
    assert result.failed
    assert "state" in result.result["msg"]
    assert service_module.calls == []
