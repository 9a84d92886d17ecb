"""Unit tests for the dps_register module: argument checks, idempotence, check mode, error messages (no network)."""

from __future__ import annotations

import base64

import pytest

from ansible_collections.iotfleet.aziot.plugins.module_utils import _dps, _x509_der
from ansible_collections.iotfleet.aziot.plugins.modules import dps_register
from tests.support.dps_fakes import reply
from tests.support.pki import Pki

GROUP_KEY = base64.b64encode(b"group-key-material-0123456789abc").decode()


def register(harness, args: dict, *script):
    return harness.run(dps_register, args, *script)


@pytest.fixture
def harness(service_module):
    return service_module


@pytest.fixture
def device_files(tmp_path):
    """Chain (leaf + intermediate), leaf-only and key files for CN pi-0042."""
    device = Pki(tmp_path).device("pi-0042")
    return dict(device.files(), thumbprints=_x509_der.thumbprints(device.issued.der))


def x509_args(files, **extra) -> dict:
    args = dict(
        id_scope="0ne00000A1B",
        registration_id="pi-0042",
        provisioning_host="127.0.0.1:8443",
        client_cert=files["chain"],
        client_key=files["key"],
    )
    args.update(extra)
    return args


def assigned_state(files=None, **extra) -> dict:
    state = {"registrationId": "pi-0042", "status": "assigned", "assignedHub": "hub.example", "deviceId": "pi-0042"}
    if files:
        state["x509"] = {"certificateInfo": {"sha1Thumbprint": files["thumbprints"]["sha1"]}}
    state.update(extra)
    return state


def test_registers_when_not_registered(harness, device_files):
    result = register(
        harness,
        x509_args(device_files, payload={"site": "lab"}),
        reply(404, {"errorCode": 404201, "message": "not found"}),
        reply(202, {"operationId": "op-1", "status": "assigning"}, Retry_After=2),
        reply(200, {"operationId": "op-1", "status": "assigned", "registrationState": assigned_state(device_files)}),
    )
    assert not result.failed
    out = result.result
    assert out["changed"] is True
    assert (out["status"], out["assigned_hub"], out["device_id"], out["operation_id"]) == (
        "assigned",
        "hub.example",
        "pi-0042",
        "op-1",
    )
    assert out["requests"] == 3
    assert [call["method"] for call in harness.calls] == ["POST", "PUT", "GET"]
    assert harness.transport_options["client_cert"] == device_files["chain"]
    assert harness.transport_options["validate_certs"] is True
    assert harness.sleeps == [2.0]


def test_already_assigned_same_certificate_is_unchanged(harness, device_files):
    result = register(harness, x509_args(device_files), reply(200, assigned_state(device_files)))
    assert result.result["changed"] is False
    assert result.result["assigned_hub"] == "hub.example"
    assert len(harness.calls) == 1


def test_force_registers_again(harness, device_files):
    result = register(
        harness,
        x509_args(device_files, force=True),
        reply(200, assigned_state(device_files)),
        reply(200, {"operationId": "op-2", "status": "assigned", "registrationState": assigned_state(device_files)}),
    )
    assert result.result["changed"] is True


def test_assigned_with_other_certificate_registers_again(harness, device_files):
    other = assigned_state(x509={"certificateInfo": {"sha1Thumbprint": "00" * 20}})
    result = register(
        harness,
        x509_args(device_files),
        reply(200, other),
        reply(200, {"operationId": "op-3", "status": "assigned", "registrationState": assigned_state(device_files)}),
    )
    assert result.result["changed"] is True


def test_check_mode_stops_after_lookup(harness, device_files):
    result = register(harness, x509_args(device_files, _ansible_check_mode=True), reply(404, {"errorCode": 404201}))
    assert result.result["changed"] is True
    assert [call["method"] for call in harness.calls] == ["POST"]


def test_leaf_only_chain_message(harness, device_files):
    result = register(
        harness,
        x509_args(device_files, client_cert=device_files["leaf"]),
        reply(401, {"errorCode": 401002, "message": "CA certificate not found", "trackingId": "t"}),
    )
    assert result.failed
    assert result.result["msg"] == (
        "pi-0042: DPS refused the certificate (401002): the chain you sent stops at the device certificate; "
        "send the full chain (device + intermediate) in client_cert"
    )
    assert (result.result["http_status"], result.result["error_code"]) == (401, 401002)


def test_cn_mismatch_fails_before_any_request(harness, device_files):
    result = register(harness, x509_args(device_files, registration_id="pi-0099"))
    assert result.failed
    assert "registration id 'pi-0099' does not match certificate CN 'pi-0042'" in result.result["msg"]
    assert harness.calls == []


def test_missing_key_file(harness, device_files):
    result = register(harness, x509_args(device_files, client_key="/nonexistent/key.pem"))
    assert result.result["msg"] == "pi-0042: client_key /nonexistent/key.pem does not exist"


def test_invalid_registration_id(harness, device_files):
    result = register(harness, x509_args(device_files, registration_id="pi 42"))
    assert result.failed
    assert result.result["msg"] == "registration id 'pi 42' contains ' '; DPS allows only letters, digits and - . _ :"
    assert harness.calls == []


def test_registration_id_up_to_128_characters_64_when_it_is_the_certificate_cn(harness, device_files):
    long_id = "s" * 128
    args = dict(id_scope="0ne00000A1B", registration_id=long_id, attestation="symmetric_key", group_key=GROUP_KEY)
    state = {"registrationId": long_id, "status": "assigned", "assignedHub": "h", "symmetricKey": {}}
    assert register(harness, args, reply(200, state)).result["changed"] is False
    refused = register(harness, x509_args(device_files, registration_id="x" * 65))
    assert refused.result["msg"].endswith(
        "is 65 characters long; DPS allows at most 64 when it is an X.509 certificate CN"
    )
    assert harness.calls == []


def test_symmetric_key_group_derives_device_key(harness):
    args = dict(id_scope="0ne00000A1B", registration_id="sym-1", attestation="symmetric_key", group_key=GROUP_KEY)
    state = {"registrationId": "sym-1", "status": "assigned", "assignedHub": "h", "symmetricKey": {}}
    result = register(harness, args, reply(200, state))
    assert result.result["changed"] is False
    device_key = _dps.derive_device_key(GROUP_KEY, "sym-1")
    authorization = harness.calls[0]["headers"]["Authorization"]
    expiry = int(authorization.rsplit("&se=", 1)[1].split("&")[0])
    assert authorization == _dps.sas_token("0ne00000A1B", "sym-1", device_key, expiry)
    assert harness.transport_options["client_cert"] is None
    assert harness.calls[0]["url"].startswith("https://global.azure-devices-provisioning.net/0ne00000A1B/")


def test_symmetric_key_needs_a_key(harness):
    args = dict(id_scope="0ne00000A1B", registration_id="sym-1", attestation="symmetric_key")
    result = register(harness, args)
    assert result.failed
    assert "symmetric_key" in result.result["msg"]
    assert "group_key" in result.result["msg"]


def test_bad_symmetric_key(harness):
    args = dict(id_scope="s", registration_id="sym-1", attestation="symmetric_key", symmetric_key="%%%")
    assert register(harness, args).result["msg"] == (
        "sym-1: symmetric_key is not valid base64 (copy the key exactly as DPS shows it)"
    )


def test_disabled_and_failed_results(harness, device_files):
    disabled = {"operationId": "o", "status": "disabled", "registrationState": {"status": "disabled"}}
    result = register(harness, x509_args(device_files), reply(404, {}), reply(200, disabled))
    assert result.failed
    assert result.result["msg"].startswith("pi-0042: enrollment is disabled in DPS")
    failed = {
        "operationId": "o",
        "status": "failed",
        "registrationState": {"status": "failed", "errorCode": 400209, "errorMessage": "hub not linked"},
    }
    result = register(harness, x509_args(device_files), reply(404, {}), reply(200, failed))
    assert result.result["msg"] == "pi-0042: DPS registration failed (errorCode 400209): hub not linked"


def test_disabled_is_final_at_once(harness, device_files):
    """Fault 4 of issue 19 ("a registration refused as disabled is retried three times"): a disabled answer, in the
    operation result or as an HTTP refusal, ends the run at once - the three requests are the status lookup, the
    register and one operation poll, none of them a retry."""
    disabled = {"status": "disabled", "errorMessage": "individual enrollment 'pi-0042' is disabled"}
    result = register(
        harness,
        x509_args(device_files),
        reply(200, disabled),  # the status lookup shows the last attempt; the enrollment may be enabled since
        reply(202, {"operationId": "o", "status": "assigning"}, Retry_After=3),
        reply(200, {"operationId": "o", "status": "disabled", "registrationState": disabled}),
    )
    assert result.failed
    assert harness.methods() == [
        "POST 0ne00000A1B/registrations/pi-0042",
        "PUT 0ne00000A1B/registrations/pi-0042/register",
        "GET 0ne00000A1B/registrations/pi-0042/operations/o",
    ]
    assert (result.result["requests"], result.result["retried_requests"], harness.sleeps) == (3, 0, [3.0])
    assert result.result["msg"] == (
        "pi-0042: enrollment is disabled in DPS (individual enrollment 'pi-0042' is disabled); enable the enrollment "
        "(or this device's registration) in DPS and run again"
    )
    refused = reply(401, {"errorCode": 401003, "message": "Enrollment is disabled"})
    result = register(harness, x509_args(device_files), reply(404, {}), refused)
    assert (result.result["requests"], result.result["retried_requests"], harness.sleeps) == (2, 0, [])
    assert result.result["msg"].startswith("pi-0042: enrollment is disabled in DPS (401003): Enrollment is disabled")


def test_validate_certs_false_warns(harness, device_files):
    register(harness, x509_args(device_files, validate_certs=False), reply(200, assigned_state(device_files)))
    assert harness.transport_options["validate_certs"] is False
    assert any("validate_certs=false" in text for text in harness.warnings)


def test_timeout_message(harness, device_files):
    result = register(
        harness,
        x509_args(device_files, timeout=3),
        *[reply(503, {}, Retry_After=1) for _ in range(3)],
    )
    assert harness.sleeps == [1.0, 1.0]
    assert result.failed
    assert "DPS did not finish within timeout=3s" in result.result["msg"]
    assert "HTTP 503" in result.result["msg"]
