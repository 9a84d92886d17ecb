"""Unit tests for the dps_registration_record module, against the DPS emulator (`dps_module`: the real transport over
TLS): the devices register with it first, so the records are the emulator's."""

from __future__ import annotations

import json

from ansible_collections.iotfleet.aziot.plugins.module_utils._dps_service import REGISTRATIONS
from ansible_collections.iotfleet.aziot.plugins.modules import dps_registration_record
from tests.support.dps_fakes import EMULATED_HUB


def registered(harness, registration_id: str) -> dict:
    """Register a device of group unit-sym; its registration record as DPS shows it."""
    assert harness.device_client(registration_id).register()["status"] == "assigned"
    return harness.service_client().get(REGISTRATIONS, registration_id)


def run(harness, registration_id, policy="provisioningserviceowner", **args):
    args = harness.service_args(policy, registration_id=registration_id, state="absent", **args)
    return harness.run(dps_registration_record, args)


def meanwhile(harness, action, times=1):
    """Before each of the module's first `times` DELETEs, `action()` (another actor's move)."""
    done = []

    def before(call):
        if call["method"] == "DELETE" and len(done) < times:
            action()
            done.append(call)

    harness.before_request(before)
    return done


def test_deletes_with_if_match_from_the_get(dps_module):
    record = registered(dps_module, "pi-record-1")
    out = run(dps_module, "pi-record-1", _ansible_diff=True).result
    assert out["changed"] is True
    assert out["registration"]["etag"] == record["etag"]
    assert dps_module.methods() == ["GET registrations/pi-record-1", "DELETE registrations/pi-record-1"]
    assert dps_module.calls[1]["headers"]["If-Match"] == record["etag"]
    assert json.loads(out["diff"]["before"])["assignedHub"] == EMULATED_HUB
    assert out["diff"]["after"] == ""
    assert dps_module.service_client().get(REGISTRATIONS, "pi-record-1") is None


def test_absent_already_is_not_a_change(dps_module):
    result = run(dps_module, "pi-record-never")
    assert (result.result["changed"], result.result["registration"]) == (False, {})
    assert len(dps_module.calls) == 1


def test_check_mode_sends_no_delete(dps_module):
    registered(dps_module, "pi-record-check")
    result = run(dps_module, "pi-record-check", _ansible_check_mode=True)
    assert result.result["changed"] is True
    assert [call["method"] for call in dps_module.calls] == ["GET"]
    assert dps_module.service_client().get(REGISTRATIONS, "pi-record-check") is not None


def test_412_is_read_again_and_bounded(dps_module):
    # the device registers again between the module's read and its delete: a new etag
    first = registered(dps_module, "pi-record-412")
    done = meanwhile(dps_module, lambda: registered(dps_module, "pi-record-412"))
    result = run(dps_module, "pi-record-412")
    assert (len(done), result.result["changed"]) == (1, True)
    if_match = [call["headers"].get("If-Match") for call in dps_module.calls if call["method"] == "DELETE"]
    assert len(if_match) == 2 and if_match[0] == first["etag"] and if_match[1] != first["etag"]
    assert dps_module.service_client().get(REGISTRATIONS, "pi-record-412") is None

    registered(dps_module, "pi-record-412")
    meanwhile(dps_module, lambda: registered(dps_module, "pi-record-412"), times=4)
    failed = run(dps_module, "pi-record-412")
    assert failed.failed
    assert failed.result["msg"] == (
        "registration record pi-record-412: the record changed in DPS while this task was deleting it, 4 times in a "
        "row (HTTP 412); this task changed nothing, run it again"
    )
    assert [call["method"] for call in dps_module.calls].count("DELETE") == 4


def test_gone_between_read_and_delete_is_not_this_tasks_change(dps_module):
    registered(dps_module, "pi-record-gone")
    meanwhile(dps_module, lambda: dps_module.service_client().delete(REGISTRATIONS, "pi-record-gone", None))
    result = run(dps_module, "pi-record-gone")
    assert result.result["changed"] is False
    assert dps_module.methods()[-1] == "DELETE registrations/pi-record-gone"


def test_policy_without_registration_write(dps_module):
    registered(dps_module, "pi-record-denied")
    result = run(dps_module, "pi-record-denied", policy="registrationstatusread")
    assert result.result["msg"].startswith(
        "registration record pi-record-denied: policy registrationstatusread may not delete registration record "
        "pi-record-denied: give it the RegistrationStatusWrite permission (DPS > Shared access policies) or use a "
        "policy that has it (HTTP 401 (401002): "
    )
    assert dps_module.service_client().get(REGISTRATIONS, "pi-record-denied") is not None


def test_state_is_required(dps_module):
    result = dps_module.run(dps_registration_record, dps_module.service_args(registration_id="pi-1"))
    assert result.failed
    assert "state" in result.result["msg"]
    assert dps_module.calls == []
