"""Unit tests for the dps_register module: argument checks, idempotence, check mode, error messages - against the DPS
emulator (`dps_module`: the real transport over mutual TLS or SAS, a fake clock), or with scripted replies
(`service_module`) for what the emulator cannot produce."""

from __future__ import annotations

import base64
import json

import pytest

from ansible_collections.iotfleet.aziot.plugins.modules import dps_register
from tests.support.dps_fakes import EMULATED_GROUP_KEY, EMULATED_HUB, EMULATED_ID_SCOPE, individual_enrollment, reply

GROUP_KEY = EMULATED_GROUP_KEY


def register(harness, args: dict, *script):
    return harness.run(dps_register, args, *script)


@pytest.fixture
def harness(dps_module):
    return dps_module


def device(emulator_pki, registration_id: str, **kwargs) -> dict:
    """Chain (leaf + intermediate), leaf-only and key files of a device of group unit-x509."""
    return emulator_pki.device(registration_id, **kwargs).files()


def x509_args(harness, files, registration_id, **extra) -> dict:
    args = dict(
        id_scope=EMULATED_ID_SCOPE,
        registration_id=registration_id,
        provisioning_host=harness.address,
        ca_path=harness.emulator.ca_cert,
        client_cert=files["chain"],
        client_key=files["key"],
    )
    args.update(extra)
    return args


def sym_args(harness, registration_id, **extra) -> dict:
    args = dict(
        id_scope=EMULATED_ID_SCOPE,
        registration_id=registration_id,
        provisioning_host=harness.address,
        ca_path=harness.emulator.ca_cert,
        attestation="symmetric_key",
        group_key=GROUP_KEY,
    )
    args.update(extra)
    return args


def hub_device(harness, registration_id) -> dict:
    return next(item for item in harness.emulator.devices() if item["registrationId"] == registration_id)


def test_registers_when_not_registered(harness, emulator_pki):
    files = device(emulator_pki, "pi-reg-new")
    result = register(harness, x509_args(harness, files, "pi-reg-new", payload={"site": "lab"}))
    assert not result.failed, result.result
    out = result.result
    assert out["changed"] is True
    assert (out["status"], out["assigned_hub"], out["device_id"]) == ("assigned", EMULATED_HUB, "pi-reg-new")
    assert out["operation_id"]
    assert out["requests"] == 3
    assert harness.methods() == [
        f"POST {EMULATED_ID_SCOPE}/registrations/pi-reg-new",
        f"PUT {EMULATED_ID_SCOPE}/registrations/pi-reg-new/register",
        f"GET {EMULATED_ID_SCOPE}/registrations/pi-reg-new/operations/{out['operation_id']}",
    ]
    assert harness.calls[1]["body"] == {"registrationId": "pi-reg-new", "payload": {"site": "lab"}}
    assert harness.transport_options["client_cert"] == files["chain"]
    assert harness.transport_options["validate_certs"] is True
    assert harness.sleeps == [2.0]  # the emulator's Retry-After
    assert hub_device(harness, "pi-reg-new")["registrationCount"] == 1


def test_already_assigned_same_certificate_is_unchanged(harness, emulator_pki):
    files = device(emulator_pki, "pi-reg-same")
    assert register(harness, x509_args(harness, files, "pi-reg-same")).result["changed"] is True
    result = register(harness, x509_args(harness, files, "pi-reg-same"))
    assert result.result["changed"] is False
    assert result.result["assigned_hub"] == EMULATED_HUB
    assert len(harness.calls) == 1
    assert hub_device(harness, "pi-reg-same")["registrationCount"] == 1


def test_force_registers_again(harness, emulator_pki):
    files = device(emulator_pki, "pi-reg-force")
    register(harness, x509_args(harness, files, "pi-reg-force"))
    result = register(harness, x509_args(harness, files, "pi-reg-force", force=True))
    assert result.result["changed"] is True
    assert hub_device(harness, "pi-reg-force")["registrationCount"] == 2


def test_assigned_with_other_certificate_registers_again(harness, emulator_pki):
    old = device(emulator_pki, "pi-reg-old-hardware", cn="pi-reg-renewed")
    register(harness, x509_args(harness, old, "pi-reg-renewed"))
    new = emulator_pki.device("pi-reg-renewed")
    result = register(harness, x509_args(harness, new.files(), "pi-reg-renewed"))
    assert result.result["changed"] is True
    assert hub_device(harness, "pi-reg-renewed")["sha256Thumbprint"] == new.sha256.upper()
    assert register(harness, x509_args(harness, new.files(), "pi-reg-renewed")).result["changed"] is False


def test_check_mode_stops_after_lookup(harness, emulator_pki):
    files = device(emulator_pki, "pi-reg-check")
    result = register(harness, x509_args(harness, files, "pi-reg-check", _ansible_check_mode=True))
    assert result.result["changed"] is True
    assert [call["method"] for call in harness.calls] == ["POST"]
    assert harness.emulator.registrations().get("pi-reg-check") is None


def test_leaf_only_chain_message(harness, emulator_pki):
    files = device(emulator_pki, "pi-reg-leaf")
    result = register(harness, x509_args(harness, files, "pi-reg-leaf", client_cert=files["leaf"]))
    assert result.failed
    assert result.result["msg"] == (
        "pi-reg-leaf: DPS refused the certificate (401002): the chain you sent stops at the device certificate; "
        "send the full chain (device + intermediate) in client_cert"
    )
    assert (result.result["http_status"], result.result["error_code"]) == (401, 401002)


def test_cn_mismatch_fails_before_any_request(harness, emulator_pki):
    files = device(emulator_pki, "pi-0042")
    result = register(harness, x509_args(harness, files, "pi-0099"))
    assert result.failed
    assert "registration id 'pi-0099' does not match certificate CN 'pi-0042'" in result.result["msg"]
    assert harness.calls == []


def test_missing_key_file(harness, emulator_pki):
    files = device(emulator_pki, "pi-0042")
    result = register(harness, x509_args(harness, files, "pi-0042", client_key="/nonexistent/key.pem"))
    assert result.result["msg"] == "pi-0042: client_key /nonexistent/key.pem does not exist"
    assert harness.calls == []


def test_invalid_registration_id(harness, emulator_pki):
    files = device(emulator_pki, "pi-0042")
    result = register(harness, x509_args(harness, files, "pi 42"))
    assert result.failed
    assert result.result["msg"] == "registration id 'pi 42' contains ' '; DPS allows only letters, digits and - . _ :"
    assert harness.calls == []


def test_registration_id_up_to_128_characters_64_when_it_is_the_certificate_cn(harness, emulator_pki):
    long_id = "s" * 128
    assert register(harness, sym_args(harness, long_id)).result["changed"] is True
    assert register(harness, sym_args(harness, long_id)).result["changed"] is False
    files = device(emulator_pki, "pi-0042")
    refused = register(harness, x509_args(harness, files, "x" * 65))
    assert refused.result["msg"].endswith(
        "is 65 characters long; DPS allows at most 64 when it is an X.509 certificate CN"
    )
    assert harness.calls == []


def test_symmetric_key_group_derives_device_key(harness):
    # the emulator checks the SAS with the device key it derives from the group key itself
    result = register(harness, sym_args(harness, "sym-reg-1"))
    assert (result.result["changed"], result.result["status"]) == (True, "assigned")
    assert harness.transport_options["client_cert"] is None
    assert all(call["headers"]["Authorization"].startswith("SharedAccessSignature sr=") for call in harness.calls)
    assert hub_device(harness, "sym-reg-1")["attestation"] == "symmetricKey"
    wrong = register(harness, sym_args(harness, "sym-reg-1", group_key=base64.b64encode(b"x" * 32).decode()))
    assert (wrong.result["http_status"], wrong.result["error_code"]) == (401, 401002)


def test_default_provisioning_host_is_the_global_endpoint(service_module):
    # Scripted: the emulator cannot answer at global.azure-devices-provisioning.net.
    args = dict(id_scope="0ne00000A1B", registration_id="sym-1", attestation="symmetric_key", group_key=GROUP_KEY)
    state = {"registrationId": "sym-1", "status": "assigned", "assignedHub": "h", "symmetricKey": {}}
    assert register(service_module, args, reply(200, state)).result["changed"] is False
    assert service_module.calls[0]["url"].startswith("https://global.azure-devices-provisioning.net/0ne00000A1B/")


def test_symmetric_key_needs_a_key(harness):
    args = sym_args(harness, "sym-1")
    del args["group_key"]
    result = register(harness, args)
    assert result.failed
    assert result.result["msg"].startswith("sym-1: attestation=symmetric_key needs symmetric_key or group_key")
    assert harness.calls == []


def test_an_empty_id_scope_is_one_line_with_the_fix(harness):
    result = register(harness, sym_args(harness, "sym-1", id_scope=" "))
    assert result.failed
    assert result.result["msg"].startswith("sym-1: id_scope is empty: set it to the DPS ID scope")
    assert harness.calls == []


def test_symmetric_key_left_empty_in_yaml_is_one_line(harness):
    """`group_key:` left empty in YAML is a null that Ansible counts as given: it crashed in decode_key."""
    args = sym_args(harness, "sym-1", group_key=None)
    result = register(harness, args)
    assert result.failed and "Traceback" not in str(result.result), result.result
    assert result.result["msg"].startswith("sym-1: attestation=symmetric_key needs symmetric_key or group_key")
    assert harness.calls == []


def test_bad_symmetric_key(harness):
    args = sym_args(harness, "sym-1", symmetric_key="%%%")
    del args["group_key"]
    assert register(harness, args).result["msg"] == (
        "sym-1: symmetric_key is not valid base64 (copy the key exactly as DPS shows it)"
    )
    assert harness.calls == []


def disable(harness, emulator_pki, registration_id) -> dict:
    """A disabled individual enrollment for the device (its own certificate): how DPS blocks one device."""
    return individual_enrollment(harness, emulator_pki, registration_id, "disabled").files()


def test_disabled_result(harness, emulator_pki):
    files = disable(harness, emulator_pki, "pi-reg-disabled")
    result = register(harness, x509_args(harness, files, "pi-reg-disabled"))
    assert result.failed
    assert result.result["msg"].startswith("pi-reg-disabled: enrollment is disabled in DPS")


def test_failed_result(service_module):
    # Scripted: the emulator's assignments end assigned or disabled, never failed (a hub error such as 400209).
    args = dict(id_scope="0ne00000A1B", registration_id="sym-1", attestation="symmetric_key", group_key=GROUP_KEY)
    failed = {
        "operationId": "o",
        "status": "failed",
        "registrationState": {"status": "failed", "errorCode": 400209, "errorMessage": "hub not linked"},
    }
    result = register(service_module, args, reply(404, {}), reply(200, failed))
    assert result.result["msg"] == "sym-1: DPS registration failed (errorCode 400209): hub not linked"


def test_disabled_is_final_at_once(harness, emulator_pki):
    """Fault 4 of issue 19 ("a registration refused as disabled is retried three times"): a disabled answer in the
    operation result ends the run at once - the three requests are the status lookup, the register and one operation
    poll, none of them a retry."""
    files = disable(harness, emulator_pki, "pi-reg-final")
    register(harness, x509_args(harness, files, "pi-reg-final"))
    # again: the status lookup shows the last attempt (disabled); the enrollment may be enabled since, so it registers
    result = register(harness, x509_args(harness, files, "pi-reg-final"))
    assert result.failed
    methods = harness.methods()
    assert methods[:2] == [
        f"POST {EMULATED_ID_SCOPE}/registrations/pi-reg-final",
        f"PUT {EMULATED_ID_SCOPE}/registrations/pi-reg-final/register",
    ]
    assert methods[2].startswith(f"GET {EMULATED_ID_SCOPE}/registrations/pi-reg-final/operations/")
    assert (result.result["requests"], result.result["retried_requests"], harness.sleeps) == (3, 0, [2.0])
    assert result.result["msg"].startswith("pi-reg-final: enrollment is disabled in DPS (")
    assert result.result["msg"].endswith(
        "); enable the enrollment (or this device's registration) in DPS and run again"
    )


def test_disabled_refusal_is_final_at_once(service_module):
    # Scripted: the emulator accepts a disabled device's register (202) and ends the operation disabled, as DPS
    # documents; some DPS answers refuse it at once with 401003 instead.
    args = dict(id_scope="0ne00000A1B", registration_id="sym-1", attestation="symmetric_key", group_key=GROUP_KEY)
    refused = reply(401, {"errorCode": 401003, "message": "Enrollment is disabled"})
    result = register(service_module, args, reply(404, {}), refused)
    assert (result.result["requests"], result.result["retried_requests"], service_module.sleeps) == (2, 0, [])
    assert result.result["msg"].startswith("sym-1: enrollment is disabled in DPS (401003): Enrollment is disabled")


def test_validate_certs_false_warns(harness, emulator_pki):
    files = device(emulator_pki, "pi-reg-unverified")
    result = register(harness, x509_args(harness, files, "pi-reg-unverified", validate_certs=False))
    assert result.result["status"] == "assigned"
    assert harness.transport_options["validate_certs"] is False
    assert any("validate_certs=false" in text for text in harness.warnings)


def test_timeout_message(harness):
    harness.emulator.set_faults([{"type": "error", "status": 503, "endpoint": "status", "registration_id": "sym-slow"}])
    result = register(harness, sym_args(harness, "sym-slow", timeout=3))
    assert harness.sleeps == [1.0]  # no Retry-After: backoff 1 s, then 2 s would reach the deadline
    assert result.failed
    assert "DPS did not finish within timeout=3s" in result.result["msg"]
    assert "HTTP 503" in result.result["msg"]


# --- registration_state (what the controller learned in bulk) and the provisioning marker ------------------------


def assigned_state(**extra) -> dict:
    return dict(status="assigned", assigned_hub=EMULATED_HUB, device_id=None, enrollment_iot_hubs=[], **extra)


def test_a_device_dps_has_no_record_of_registers_without_a_lookup_and_keeps_a_marker(harness, emulator_pki, tmp_path):
    files = device(emulator_pki, "pi-state-new")
    marker = tmp_path / "dps-registration.json"
    args = x509_args(harness, files, "pi-state-new", registration_state={}, provisioning_marker=str(marker))
    result = register(harness, args)
    assert not result.failed, result.result
    assert result.result["changed"] is True
    assert result.result["registration_reasons"] == ["DPS has no registration record for it"]
    assert [call["method"] for call in harness.calls] == ["PUT", "GET"]  # register, poll: no lookup
    written = json.loads(marker.read_text())
    assert written == {
        "version": 1,
        "registration_id": "pi-state-new",
        "attestation": "x509",
        "sha256_thumbprint": hub_device(harness, "pi-state-new")["sha256Thumbprint"],  # what it registered with
        "assigned_hub": EMULATED_HUB,
        "device_id": "pi-state-new",
        "registration_state": result.result["registration_state"],  # DPS's answer
    }
    assert oct(marker.stat().st_mode & 0o777) == "0o644"

    # Re-run: DPS shows it assigned where the marker says, with the certificate it holds - no request at all.
    harness.calls.clear()
    state = assigned_state() | {"device_id": "pi-state-new"}
    again = register(harness, dict(args, registration_state=state))
    assert again.result["changed"] is False and again.result["requests"] == 0
    assert (again.result["status"], again.result["assigned_hub"]) == ("assigned", EMULATED_HUB)
    assert again.result["registration_state"] == result.result["registration_state"]  # as the marker keeps it
    assert harness.calls == []
    assert hub_device(harness, "pi-state-new")["registrationCount"] == 1


@pytest.mark.parametrize(
    ("state", "marker_change", "reason"),
    [
        ({"status": "failed"}, {}, "DPS shows its registration failed"),
        ({"enrollment_iot_hubs": ["other-hub.azure-devices.net"]}, {}, "which its enrollment no longer lists"),
        ({}, {"sha256_thumbprint": "00" * 32}, "its certificate changed since it registered (renewed or replaced)"),
        ({}, {"assigned_hub": "old-hub.azure-devices.net"}, "(reassigned)"),
        ({}, {"attestation": "symmetric_key"}, "it registered with symmetric_key attestation and now uses x509"),
    ],
    ids=["not-assigned", "hub-not-listed", "certificate-changed", "reassigned", "attestation-changed"],
)
def test_what_dps_or_the_marker_tells_registers_without_a_lookup(
    harness, emulator_pki, tmp_path, state, marker_change, reason
):
    registration_id = f"pi-state-{len(reason)}"
    files = device(emulator_pki, registration_id)
    marker = tmp_path / "dps-registration.json"
    args = x509_args(harness, files, registration_id, registration_state={}, provisioning_marker=str(marker))
    assert register(harness, args).result["changed"] is True
    marker.write_text(json.dumps(dict(json.loads(marker.read_text()), **marker_change)))
    harness.calls.clear()
    known = assigned_state() | {"device_id": registration_id} | state
    result = register(harness, dict(args, registration_state=known))
    assert result.result["changed"] is True
    assert any(reason in line for line in result.result["registration_reasons"]), result.result
    assert [call["method"] for call in harness.calls] == ["PUT", "GET"]
    assert hub_device(harness, registration_id)["registrationCount"] == 2


def test_without_a_marker_the_device_looks_itself_up_once_and_writes_it(harness, emulator_pki, tmp_path):
    files = device(emulator_pki, "pi-state-upgrade")
    assert register(harness, x509_args(harness, files, "pi-state-upgrade")).result["changed"] is True  # no marker
    marker = tmp_path / "dps-registration.json"
    harness.calls.clear()
    state = assigned_state() | {"device_id": "pi-state-upgrade"}
    args = x509_args(harness, files, "pi-state-upgrade", registration_state=state, provisioning_marker=str(marker))
    result = register(harness, args)
    assert result.result["changed"] is False
    assert [call["method"] for call in harness.calls] == ["POST"]  # the lookup says: its own certificate
    assert json.loads(marker.read_text())["device_id"] == "pi-state-upgrade"
    harness.calls.clear()
    assert register(harness, args).result["changed"] is False
    assert harness.calls == []


def test_check_mode_with_registration_state_sends_nothing_and_writes_no_marker(harness, emulator_pki, tmp_path):
    files = device(emulator_pki, "pi-state-check")
    marker = tmp_path / "dps-registration.json"
    args = x509_args(
        harness,
        files,
        "pi-state-check",
        registration_state={},
        provisioning_marker=str(marker),
        _ansible_check_mode=True,
    )
    result = register(harness, args)
    assert result.result["changed"] is True
    assert result.result["registration_reasons"] == ["DPS has no registration record for it"]
    assert harness.calls == [] and not marker.exists()
    assert harness.emulator.registrations().get("pi-state-check") is None


def test_a_marker_directory_that_does_not_exist_is_no_error(harness, emulator_pki, tmp_path):
    files = device(emulator_pki, "pi-state-nodir")
    marker = tmp_path / "missing" / "dps-registration.json"
    args = x509_args(harness, files, "pi-state-nodir", registration_state={}, provisioning_marker=str(marker))
    result = register(harness, args)
    assert not result.failed and result.result["changed"] is True
    assert not marker.exists()


def test_an_unreadable_or_foreign_marker_counts_as_none(harness, emulator_pki, tmp_path):
    files = device(emulator_pki, "pi-state-foreign")
    register(harness, x509_args(harness, files, "pi-state-foreign"))
    marker = tmp_path / "dps-registration.json"
    state = assigned_state() | {"device_id": "pi-state-foreign"}
    args = x509_args(harness, files, "pi-state-foreign", registration_state=state, provisioning_marker=str(marker))
    for content in ("not json", json.dumps({"version": 1, "registration_id": "someone-else"})):
        marker.write_text(content)
        harness.calls.clear()
        assert register(harness, args).result["changed"] is False
        assert [call["method"] for call in harness.calls] == ["POST"]  # looked up, as without a marker
    assert json.loads(marker.read_text())["registration_id"] == "pi-state-foreign"  # rewritten
