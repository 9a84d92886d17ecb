"""Unit tests for the dps_enrollment module: against the DPS emulator (`dps_module`: the real transport over TLS, a
fake clock), or with scripted replies (`service_module`) for what the emulator cannot produce."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import struct
import textwrap
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from ansible_collections.iotfleet.aziot.plugins.module_utils._dps_enrollment import tpm_key_bytes
from ansible_collections.iotfleet.aziot.plugins.module_utils._dps_service import ENROLLMENT_GROUPS, ENROLLMENTS
from ansible_collections.iotfleet.aziot.plugins.modules import dps_enrollment
from tests.support.dps_fakes import EMULATED_HUB, OWNER_POLICY, policy_key, reply
from tests.support.pki import distinguished_name, issue

POLICY_KEY = base64.b64encode(b"policy-key-material-0123456789ab").decode()
HOST = "contoso-dps.azure-devices-provisioning.net"
CONNECTION_STRING = f"HostName={HOST};SharedAccessKeyName=provisioningserviceowner;SharedAccessKey={POLICY_KEY}"
GIVEN_KEY = base64.b64encode(b"given-primary-key-0123456789abcd").decode()
HUB = EMULATED_HUB


@pytest.fixture
def pki(tmp_path):
    files = {}
    for name, cn in (("ca", "Fleet CA"), ("ca2", "Fleet CA 2027"), ("device", "pi-0042")):
        made = issue(cn, ca=name != "device")
        path = tmp_path / f"{name}.pem"
        path.write_bytes(made.pem)
        files[name] = {"certificate": made.cert, "key": made.key, "path": str(path)}
    key_pem = files["ca"]["key"].private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    (tmp_path / "ca-with-key.pem").write_bytes((tmp_path / "ca.pem").read_bytes() + key_pem)
    files["with_key"] = str(tmp_path / "ca-with-key.pem")
    return files


def group_args(harness, pki, group_id, **extra) -> dict:
    """An X.509 group on `pki`'s CA: the emulator's connection options (the scripted harness: a made-up DPS)."""
    connection = harness.service_args() if harness.emulator else {"connection_string": CONNECTION_STRING}
    args = dict(
        connection,
        enrollment_group_id=group_id,
        attestation="x509",
        primary_certificate=pki["ca"]["path"],
        iot_hubs=[HUB],
        initial_twin={"tags": {"site": "plant-3"}},
    )
    args.update(extra)
    return args


def run(harness, args, *script):
    return harness.run(dps_enrollment, args, *script)


def create(harness, args) -> dict:
    """Run the task once so that the enrollment exists: its result."""
    out = run(harness, args).result
    assert out["changed"] is True and not out.get("failed"), out
    return out


# --- create, no change, update ----------------------------------------------------------------------------------


def test_creates_a_group(dps_module, pki):
    result = run(dps_module, group_args(dps_module, pki, "unit-create"))
    assert not result.failed, result.result
    out = result.result
    assert out["changed"] is True
    assert out["differences"] == ["attestation", "iotHubs", "initialTwin.tags"]
    assert out["etag"] and out["etag"] == dps_module.service_client().get(ENROLLMENT_GROUPS, "unit-create")["etag"]
    assert out["enrollment"]["enrollmentGroupId"] == "unit-create"
    assert "generated_keys" not in out
    assert dps_module.methods() == ["GET enrollmentGroups/unit-create", "PUT enrollmentGroups/unit-create"]
    put = dps_module.calls[1]
    assert "If-Match" not in put["headers"]
    assert put["body"]["enrollmentGroupId"] == "unit-create"
    assert put["body"]["iotHubs"] == [HUB]
    assert put["body"]["initialTwin"] == {"tags": {"site": "plant-3"}}
    sent = put["body"]["attestation"]["x509"]["signingCertificates"]["primary"]["certificate"]
    assert x509.load_pem_x509_certificate(sent.encode()) == pki["ca"]["certificate"]
    assert dps_module.transport_options["validate_certs"] is True
    assert put["headers"]["Authorization"].startswith(
        f"SharedAccessSignature sr={quote(dps_module.address, safe='')}&sig="
    )


def test_same_enrollment_is_not_changed(dps_module, pki):
    # DPS reports the CA by thumbprint only; hub names differ in case; the record has fields the task does not set.
    create(dps_module, group_args(dps_module, pki, "unit-same", allocation_policy="hashed"))
    result = run(dps_module, group_args(dps_module, pki, "unit-same", iot_hubs=[HUB.upper()]))
    assert result.result["changed"] is False
    assert result.result["differences"] == []
    assert dps_module.methods() == ["GET enrollmentGroups/unit-same"]


def test_update_sends_if_match_and_keeps_unset_fields(dps_module, pki):
    before = create(
        dps_module,
        group_args(dps_module, pki, "unit-update", allocation_policy="geoLatency", initial_twin={"tags": {"s": "2"}}),
    )
    result = run(dps_module, group_args(dps_module, pki, "unit-update"))
    out = result.result
    assert (out["changed"], out["differences"]) == (True, ["initialTwin.tags"])
    assert out["etag"] not in (None, before["etag"])
    put = dps_module.calls[1]
    assert put["headers"]["If-Match"] == before["etag"]
    assert put["body"]["allocationPolicy"] == "geoLatency"
    for server_field in ("etag", "createdDateTimeUtc", "lastUpdatedDateTimeUtc"):
        assert server_field not in put["body"]
    assert dps_module.service_client().get(ENROLLMENT_GROUPS, "unit-update")["allocationPolicy"] == "geoLatency"


def test_ca_rollover_adds_a_secondary(dps_module, pki):
    create(dps_module, group_args(dps_module, pki, "unit-rollover"))
    result = run(dps_module, group_args(dps_module, pki, "unit-rollover", secondary_certificate=pki["ca2"]["path"]))
    assert result.result["differences"] == ["attestation.x509.signingCertificates.secondary"]
    certificates = dps_module.calls[1]["body"]["attestation"]["x509"]["signingCertificates"]
    assert set(certificates) == {"primary", "secondary"}
    assert run(dps_module, group_args(dps_module, pki, "unit-rollover", secondary_certificate=pki["ca2"]["path"]))
    assert dps_module.last.result["changed"] is False


# --- check mode and diff --------------------------------------------------------------------------------------


def test_check_mode_sends_no_put(dps_module, pki):
    create(dps_module, group_args(dps_module, pki, "unit-check", initial_twin={"tags": {"site": "plant-2"}}))
    args = group_args(dps_module, pki, "unit-check", _ansible_check_mode=True, _ansible_diff=True)
    out = run(dps_module, args).result
    assert out["changed"] is True
    assert out["differences"] == ["initialTwin.tags"]
    assert dps_module.methods() == ["GET enrollmentGroups/unit-check"]
    before, after = json.loads(out["diff"]["before"]), json.loads(out["diff"]["after"])
    assert before["initialTwin"]["tags"] == {"site": "plant-2"}
    assert after["initialTwin"]["tags"] == {"site": "plant-3"}
    assert "etag" not in before
    assert "BEGIN CERTIFICATE" not in out["diff"]["after"]
    stored = dps_module.service_client().get(ENROLLMENT_GROUPS, "unit-check")
    assert stored["initialTwin"]["tags"] == {"site": "plant-2"}


def test_check_mode_on_a_missing_enrollment(dps_module, pki):
    result = run(dps_module, group_args(dps_module, pki, "unit-check-missing", _ansible_check_mode=True))
    assert (result.result["changed"], result.result["enrollment"], result.result["etag"]) == (True, {}, None)
    assert "diff" not in result.result  # diff only when asked
    assert len(dps_module.calls) == 1
    assert dps_module.service_client().get(ENROLLMENT_GROUPS, "unit-check-missing") is None


# --- symmetric keys -------------------------------------------------------------------------------------------


def sym_args(harness, group_id, **extra) -> dict:
    return harness.service_args(enrollment_group_id=group_id, attestation="symmetric_key", **extra)


def keys_in_dps(harness, group_id) -> dict:
    return harness.service_client().attestation_mechanism(ENROLLMENT_GROUPS, group_id)["symmetricKey"]


def test_generated_keys_are_returned_once_on_create_and_never_in_the_diff(dps_module):
    out = run(dps_module, sym_args(dps_module, "unit-sym-generated", _ansible_diff=True)).result
    keys = keys_in_dps(dps_module, "unit-sym-generated")
    assert out["generated_keys"] == {"primary_key": keys["primaryKey"], "secondary_key": keys["secondaryKey"]}
    assert out["enrollment"]["attestation"]["symmetricKey"] == {"primaryKey": "********", "secondaryKey": "********"}
    assert keys["primaryKey"] not in json.dumps(out["diff"])
    assert json.loads(out["diff"]["after"])["attestation"]["symmetricKey"]["primaryKey"] == "(generated by DPS)"
    assert dps_module.calls[1]["body"]["attestation"] == {"type": "symmetricKey", "symmetricKey": {}}


def test_generated_keys_read_from_the_attestation_when_the_put_answer_lacks_them(service_module):
    # Scripted: the emulator's PUT answer always carries the keys (as DPS's does); this guards an answer without them.
    generated = base64.b64encode(b"generated-secondary-0123456789ab").decode()
    sym_record = {"enrollmentGroupId": "sensors", "attestation": {"type": "symmetricKey", "symmetricKey": {}}}
    result = run(
        service_module,
        dict(connection_string=CONNECTION_STRING, enrollment_group_id="sensors", attestation="symmetric_key")
        | {"primary_key": GIVEN_KEY},
        reply(404, {}),
        reply(200, dict(sym_record, etag='"s1"')),
        reply(200, {"type": "symmetricKey", "symmetricKey": {"primaryKey": GIVEN_KEY, "secondaryKey": generated}}),
    )
    assert result.result["generated_keys"] == {"secondary_key": generated}  # not the one given
    assert service_module.methods()[-1] == "POST enrollmentGroups/sensors/attestationmechanism"


def test_existing_symmetric_enrollment_returns_no_keys(dps_module):
    # a later run (or a run after someone else created it): unchanged, nothing generated, nothing returned
    create(dps_module, sym_args(dps_module, "unit-sym-existing"))
    out = run(dps_module, sym_args(dps_module, "unit-sym-existing")).result
    assert (out["changed"], "generated_keys" in out) == (False, False)
    assert dps_module.methods() == ["GET enrollmentGroups/unit-sym-existing"]


def test_update_of_a_symmetric_enrollment_carries_its_keys(dps_module):
    create(dps_module, sym_args(dps_module, "unit-sym-update"))
    keys = keys_in_dps(dps_module, "unit-sym-update")
    out = run(dps_module, sym_args(dps_module, "unit-sym-update", provisioning_status="disabled")).result
    assert out["changed"] is True
    assert "generated_keys" not in out
    assert dps_module.methods() == [
        "GET enrollmentGroups/unit-sym-update",  # a plain GET has no keys
        "POST enrollmentGroups/unit-sym-update/attestationmechanism",
        "PUT enrollmentGroups/unit-sym-update",
    ]
    put = dps_module.calls[2]
    assert put["body"]["attestation"]["symmetricKey"] == keys  # a PUT without them would rotate them
    assert put["headers"]["If-Match"]
    assert keys_in_dps(dps_module, "unit-sym-update") == keys


def test_given_key_that_differs_is_changed_and_never_shown(dps_module):
    create(dps_module, sym_args(dps_module, "unit-sym-given"))
    keys = keys_in_dps(dps_module, "unit-sym-given")
    args = sym_args(dps_module, "unit-sym-given", primary_key=GIVEN_KEY, _ansible_diff=True, _ansible_check_mode=True)
    out = run(dps_module, args).result
    assert out["differences"] == ["attestation.symmetricKey.primaryKey"]
    text = json.dumps(out)
    for secret in (GIVEN_KEY, keys["primaryKey"], keys["secondaryKey"], policy_key(OWNER_POLICY)):
        assert secret not in text
    assert json.loads(out["diff"]["after"])["attestation"]["symmetricKey"]["primaryKey"] == "******** (changed)"


# --- concurrency and retries ----------------------------------------------------------------------------------


def another_writer(harness, collection, record_id, change, method="PUT", times=1):
    """Before each of the module's first `times` requests `method`, someone else writes the record (`change(record)`
    edits the stored record in place; None: creates it from `change(None)`)."""
    writes = []

    def before(call):
        if call["method"] != method or len(writes) >= times:
            return
        client = harness.service_client()
        record = client.get(collection, record_id)
        body = change(record)
        if record is None:
            client.put(collection, record_id, body, None)
        elif body is None:
            client.delete(collection, record_id, None)
        else:
            client.put(collection, record_id, body, "*")
        writes.append(call)

    harness.before_request(before)
    return writes


def test_412_is_read_again_compared_again_and_retried(dps_module, pki):
    first = create(dps_module, group_args(dps_module, pki, "unit-412", initial_twin={"tags": {"site": "plant-2"}}))

    def newer(record):
        record["initialTwin"] = {"tags": {"site": "plant-9"}}
        return record

    writes = another_writer(dps_module, ENROLLMENT_GROUPS, "unit-412", newer)
    out = run(dps_module, group_args(dps_module, pki, "unit-412")).result
    assert len(writes) == 1
    assert out["changed"] is True
    assert out["differences"] == ["initialTwin.tags"]  # compared against the newer record
    if_match = [call["headers"].get("If-Match") for call in dps_module.calls if call["method"] == "PUT"]
    assert len(if_match) == 2 and if_match[0] == first["etag"] and if_match[1] != first["etag"]
    assert any("HTTP 412 on write" in line and "reading it again (1/3)" in line for line in dps_module.logs)
    stored = dps_module.service_client().get(ENROLLMENT_GROUPS, "unit-412")
    assert stored["initialTwin"]["tags"] == {"site": "plant-3"}


def test_412_retries_are_bounded(dps_module, pki):
    create(dps_module, group_args(dps_module, pki, "unit-412-bounded", initial_twin={"tags": {}}))
    another_writer(dps_module, ENROLLMENT_GROUPS, "unit-412-bounded", lambda record: record, times=4)
    result = run(dps_module, group_args(dps_module, pki, "unit-412-bounded"))
    assert result.failed
    assert result.result["msg"] == (
        "enrollment group unit-412-bounded: the enrollment changed in DPS while this task was writing it, 4 times in "
        "a row (HTTP 412); this task changed nothing, run it again"
    )
    assert [call["method"] for call in dps_module.calls].count("PUT") == 4


def test_create_race_409_is_read_again(dps_module, pki):
    args = group_args(dps_module, pki, "unit-409")
    body = {
        "enrollmentGroupId": "unit-409",
        "attestation": {
            "type": "x509",
            "x509": {"signingCertificates": {"primary": {"certificate": Path(pki["ca"]["path"]).read_text()}}},
        },
        "iotHubs": [HUB],
        "initialTwin": {"tags": {"site": "plant-3"}},
    }
    writes = another_writer(dps_module, ENROLLMENT_GROUPS, "unit-409", lambda record: body)
    out = run(dps_module, args).result
    # someone else created the same thing: the 409 is read again, nothing left to do
    assert (len(writes), out["changed"], out["differences"]) == (1, False, [])
    assert dps_module.methods() == [
        "GET enrollmentGroups/unit-409",
        "PUT enrollmentGroups/unit-409",
        "GET enrollmentGroups/unit-409",
    ]


def test_429_retry_after_is_honoured(dps_module, pki):
    create(dps_module, group_args(dps_module, pki, "unit-429"))
    dps_module.emulator.set_faults(
        [
            {"type": "throttle", "count": 1, "retry_after": 5, "registration_id": "unit-429"},
            {"type": "error", "status": 503, "count": 1, "registration_id": "unit-429"},
        ]
    )
    result = run(dps_module, group_args(dps_module, pki, "unit-429"))
    assert result.result["changed"] is False
    assert dps_module.sleeps == [5.0, 2.0]
    assert (result.result["requests"], result.result["retried_requests"]) == (3, 2)


def test_throttling_past_the_deadline_fails_with_the_timeout(dps_module, pki):
    dps_module.emulator.set_faults([{"type": "throttle", "retry_after": 10, "registration_id": "unit-throttled"}])
    result = run(dps_module, group_args(dps_module, pki, "unit-throttled", timeout=12))
    assert result.failed
    assert result.result["msg"].startswith("enrollment group unit-throttled: DPS did not finish within timeout=12s")
    assert dps_module.sleeps == [10.0]


# --- errors the user can act on -------------------------------------------------------------------------------


def test_wrong_key(dps_module, pki):
    args = group_args(dps_module, pki, "unit-wrong-key")
    args["connection_string"] = dps_module.connection_string(OWNER_POLICY, key=POLICY_KEY)
    result = run(dps_module, args)
    assert result.failed
    assert result.result["msg"].startswith(
        "enrollment group unit-wrong-key: the DPS refused the shared access signature: check SharedAccessKey of "
        "policy provisioningserviceowner and the controller clock, and that the policy has EnrollmentRead "
        "(HTTP 401 (401002): "
    )
    assert (result.result["http_status"], result.result["error_code"]) == (401, 401002)
    assert POLICY_KEY not in json.dumps(result.result)


def test_policy_without_enrollment_write(dps_module, pki):
    create(dps_module, group_args(dps_module, pki, "unit-no-write", initial_twin={}))
    args = group_args(dps_module, pki, "unit-no-write")
    args["connection_string"] = dps_module.connection_string("enrollmentread")
    result = run(dps_module, args)
    assert result.result["msg"].startswith(
        "enrollment group unit-no-write: policy enrollmentread may not update enrollment group unit-no-write: give it "
        "the EnrollmentWrite permission"
    )


def test_unknown_hub(dps_module, pki):
    result = run(dps_module, group_args(dps_module, pki, "unit-bad-hub", iot_hubs=["nope.azure-devices.net"]))
    assert result.result["msg"].startswith(
        "enrollment group unit-bad-hub: DPS does not accept iot_hubs nope.azure-devices.net: every hub must be linked"
    )
    assert dps_module.service_client().get(ENROLLMENT_GROUPS, "unit-bad-hub") is None


def test_malformed_connection_string_fails_before_any_request(service_module, pki):
    bad = f"HostName={HOST};SharedAccessKey={POLICY_KEY}"
    result = run(service_module, group_args(service_module, pki, "fleet", connection_string=bad))
    assert result.failed
    assert result.result["msg"].startswith("enrollment group fleet: connection_string has no SharedAccessKeyName;")
    assert service_module.calls == []


PRIVATE_KEY_REFUSED = "holds a private key; give a file with the certificate only (a private key never goes to DPS)"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("primary_certificate", "/nonexistent/ca.pem", "primary_certificate /nonexistent/ca.pem does not exist"),
        ("primary_certificate", "WITH_KEY", f"primary_certificate WITH_KEY {PRIVATE_KEY_REFUSED}"),
        ("secondary_certificate", "WITH_KEY", f"secondary_certificate WITH_KEY {PRIVATE_KEY_REFUSED}"),
        ("primary_key", GIVEN_KEY, "primary_key is for attestation=symmetric_key, not x509"),
        ("primary_certificate", None, "attestation=x509 needs primary_certificate or primary_ca_reference"),
    ],
)
def test_input_errors_before_any_request(service_module, pki, option, value, message):
    value = pki["with_key"] if value == "WITH_KEY" else value
    result = run(service_module, group_args(service_module, pki, "fleet", **{option: value}))
    assert result.failed
    assert result.result["msg"] == "enrollment group fleet: " + message.replace("WITH_KEY", pki["with_key"])
    assert service_module.calls == []


def test_individual_x509_checks_the_cn(service_module, pki):
    args = dict(connection_string=CONNECTION_STRING, registration_id="pi-0099", attestation="x509")
    result = run(service_module, dict(args, primary_certificate=pki["device"]["path"]))
    assert result.result["msg"] == (
        f"individual enrollment pi-0099: registration_id 'pi-0099' does not match the CN 'pi-0042' of "
        f"primary_certificate {pki['device']['path']}; DPS requires them to be equal"
    )
    assert service_module.calls == []


def test_individual_x509_needs_a_cn(service_module, tmp_path):
    path = tmp_path / "no-cn.pem"
    path.write_bytes(issue(distinguished_name(organisation="no cn")).pem)
    args = dict(connection_string=CONNECTION_STRING, registration_id="pi-1", attestation="x509")
    result = run(service_module, dict(args, primary_certificate=str(path)))
    assert result.result["msg"] == (
        f"individual enrollment pi-1: primary_certificate {path} has no subject CN; an individual X.509 enrollment "
        "needs the device certificate, whose CN is the registration id"
    )


def test_individual_enrollment_with_device_id(dps_module, pki):
    args = dps_module.service_args(
        registration_id="pi-0042",
        attestation="x509",
        primary_certificate=pki["device"]["path"],
        device_id="pi-0042-edge",
        provisioning_status="disabled",
    )
    result = run(dps_module, args)
    put = dps_module.calls[1]
    assert put["url"].startswith(f"https://{dps_module.address}/enrollments/pi-0042?api-version=2021-10-01")
    assert put["body"]["deviceId"] == "pi-0042-edge"
    assert "clientCertificates" in put["body"]["attestation"]["x509"]
    assert result.result["changed"] is True
    stored = dps_module.service_client().get(ENROLLMENTS, "pi-0042")
    assert (stored["deviceId"], stored["provisioningStatus"]) == ("pi-0042-edge", "disabled")
    assert run(dps_module, args).result["changed"] is False


def test_separate_policy_options_and_validate_certs(dps_module, pki):
    args = group_args(dps_module, pki, "unit-policy-options", validate_certs=False)
    del args["connection_string"]
    args.update(service_host=dps_module.address, policy_name="enrollmentread", policy_key=policy_key("enrollmentread"))
    assert not run(dps_module, dict(args, _ansible_check_mode=True)).failed
    assert dps_module.calls[0]["url"].startswith(f"https://{dps_module.address}/enrollmentGroups/unit-policy-options?")
    assert "&skn=enrollmentread" in dps_module.calls[0]["headers"]["Authorization"]
    assert (dps_module.transport_options["validate_certs"], dps_module.transport_options["ca_path"]) == (
        False,
        dps_module.emulator.ca_cert,
    )
    assert any("validate_certs=false" in warning for warning in dps_module.warnings)


def test_leftover_difference_after_the_write_is_warned(service_module, pki):
    # Scripted: the emulator stores what it is sent; this is a DPS that answers the PUT with other hubs (a
    # server-side rule), so that the next run would change again.
    args = group_args(service_module, pki, "fleet")
    answer = {
        "enrollmentGroupId": "fleet",
        "attestation": {
            "type": "x509",
            "x509": {"signingCertificates": {"primary": {"info": info(pki["ca"]["certificate"])}}},
        },
        "initialTwin": {"tags": {"site": "plant-3"}, "properties": {"desired": {}}},
        "etag": '"e1"',
    }
    result = run(
        service_module,
        args,
        reply(200, dict(answer, iotHubs=[HUB], initialTwin={})),
        reply(200, dict(answer, iotHubs=["hub-z.azure-devices.net"])),
    )
    assert result.result["changed"] is True
    assert service_module.warnings == [
        "enrollment group fleet: DPS answered the write with iotHubs still different from what was sent; the next "
        "run will report a change again"
    ]


def info(certificate) -> dict:
    return {
        "subjectName": f"CN={certificate.subject.rfc4514_string()[3:]}",
        "sha1Thumbprint": certificate.fingerprint(hashes.SHA1()).hex().upper(),
        "sha256Thumbprint": certificate.fingerprint(hashes.SHA256()).hex().upper(),
    }


# --- state absent ---------------------------------------------------------------------------------------------


def test_absent_deletes_with_if_match(dps_module, pki):
    etag = create(dps_module, group_args(dps_module, pki, "unit-absent"))["etag"]
    args = dps_module.service_args(enrollment_group_id="unit-absent", state="absent")
    result = run(dps_module, args)
    assert (result.result["changed"], result.result["differences"]) == (True, ["enrollment"])
    assert dps_module.calls[1]["method"] == "DELETE"
    assert dps_module.calls[1]["headers"]["If-Match"] == etag
    assert dps_module.service_client().get(ENROLLMENT_GROUPS, "unit-absent") is None


def test_absent_when_already_absent_and_in_check_mode(dps_module, pki):
    args = dps_module.service_args(enrollment_group_id="unit-absent-check", state="absent")
    assert run(dps_module, args).result["changed"] is False
    create(dps_module, group_args(dps_module, pki, "unit-absent-check"))
    result = run(dps_module, dict(args, _ansible_check_mode=True))
    assert result.result["changed"] is True
    assert [call["method"] for call in dps_module.calls] == ["GET"]
    assert dps_module.service_client().get(ENROLLMENT_GROUPS, "unit-absent-check") is not None


def test_absent_412_then_deleted(dps_module, pki):
    first = create(
        dps_module,
        dps_module.service_args(
            registration_id="pi-0042", attestation="x509", primary_certificate=pki["device"]["path"]
        ),
    )
    writes = another_writer(dps_module, ENROLLMENTS, "pi-0042", lambda record: record, method="DELETE")
    result = run(dps_module, dps_module.service_args(registration_id="pi-0042", state="absent"))
    assert (len(writes), result.result["changed"]) == (1, True)
    if_match = [call["headers"].get("If-Match") for call in dps_module.calls if call["method"] == "DELETE"]
    assert len(if_match) == 2 and if_match[0] == first["etag"] and if_match[1] != first["etag"]
    assert dps_module.service_client().get(ENROLLMENTS, "pi-0042") is None


# --- the argument spec ----------------------------------------------------------------------------------------


def test_every_secret_option_is_no_log():
    spec = dps_enrollment.argument_spec()
    assert spec["connection_string"]["no_log"] is True
    assert spec["policy_key"]["no_log"] is True
    assert spec["primary_key"]["no_log"] is True
    assert spec["secondary_key"]["no_log"] is True
    assert spec["custom_allocation"]["options"]["webhook_url"]["no_log"] is True
    assert spec["validate_certs"]["default"] is True


# --- TPM attestation (individual enrollments) -----------------------------------------------------------------

EK_POLICY = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")  # the EK template's


def tpm_public(seed: int) -> bytes:
    """A marshalled TPM2B_PUBLIC of an RSA-2048 restricted decryption key (the EK template's fields) with a made-up
    modulus: what tpm2_readpublic -o writes, as far as DPS and the emulator look at it."""
    modulus = bytearray(random.Random(seed).randbytes(256))
    modulus[0] |= 0x80
    tpmt = (
        struct.pack(">HHI", 0x0001, 0x000B, 0x000300B2)
        + struct.pack(">H", len(EK_POLICY))
        + EK_POLICY
        + struct.pack(">HHHHHI", 0x0006, 128, 0x0043, 0x0010, 2048, 0)
        + struct.pack(">H", 256)
        + bytes(modulus)
    )
    return struct.pack(">H", len(tpmt)) + tpmt


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


EK_1, SRK_1, EK_2 = tpm_public(1), tpm_public(2), tpm_public(3)


def tpm_args(harness, registration_id, endorsement_key=EK_1, **extra) -> dict:
    connection = harness.service_args() if harness.emulator else {"connection_string": CONNECTION_STRING}
    return dict(
        connection, registration_id=registration_id, attestation="tpm", endorsement_key=b64(endorsement_key), **extra
    )


def stored_tpm(harness, registration_id) -> dict:
    return harness.service_client().get(ENROLLMENTS, registration_id)["attestation"]["tpm"]


def test_tpm_enrollment_is_created_then_not_changed(dps_module):
    args = tpm_args(dps_module, "pi-tpm-create", storage_root_key=b64(SRK_1), iot_hubs=[HUB])
    out = run(dps_module, args).result
    assert (out["changed"], out["differences"]) == (True, ["attestation", "iotHubs"])
    put = dps_module.calls[1]
    assert put["body"]["attestation"] == {
        "type": "tpm",
        "tpm": {"endorsementKey": b64(EK_1), "storageRootKey": b64(SRK_1)},
    }
    assert out["enrollment"]["attestation"]["tpm"]["endorsementKey"] == b64(EK_1)  # public: returned as it is
    again = run(dps_module, args).result
    assert (again["changed"], again["differences"]) == (False, [])
    assert dps_module.methods() == ["GET enrollments/pi-tpm-create"]


def test_a_new_endorsement_key_updates_the_enrollment_with_its_etag(dps_module):
    before = create(dps_module, tpm_args(dps_module, "pi-tpm-new", storage_root_key=b64(SRK_1)))
    replaced = tpm_args(dps_module, "pi-tpm-new", endorsement_key=EK_2)
    check = run(dps_module, dict(replaced, _ansible_check_mode=True, _ansible_diff=True)).result
    assert (check["changed"], check["differences"]) == (True, ["attestation.tpm.endorsementKey"])
    assert dps_module.methods() == ["GET enrollments/pi-tpm-new"]
    assert tpm_key_bytes(stored_tpm(dps_module, "pi-tpm-new")["endorsementKey"]) == EK_1
    diff_before, diff_after = json.loads(check["diff"]["before"]), json.loads(check["diff"]["after"])
    assert diff_before["attestation"]["tpm"]["endorsementKey"] == {
        "bytes": len(EK_1),
        "sha256": hashlib.sha256(EK_1).hexdigest().upper(),
    }
    assert diff_after["attestation"]["tpm"] == {
        "endorsementKey": {"bytes": len(EK_2), "sha256": hashlib.sha256(EK_2).hexdigest().upper()}
    }  # the SRK of the previous TPM is dropped
    assert b64(EK_2) not in json.dumps(check["diff"])

    out = run(dps_module, replaced).result
    assert (out["changed"], out["differences"]) == (True, ["attestation.tpm.endorsementKey"])
    put = dps_module.calls[1]
    assert put["headers"]["If-Match"] == before["etag"]
    assert put["body"]["attestation"] == {"type": "tpm", "tpm": {"endorsementKey": b64(EK_2)}}
    assert stored_tpm(dps_module, "pi-tpm-new") == {"endorsementKey": b64(EK_2)}
    assert run(dps_module, replaced).result["changed"] is False


def test_an_update_keeps_the_storage_root_key_of_the_same_tpm(dps_module):
    create(dps_module, tpm_args(dps_module, "pi-tpm-keep", storage_root_key=b64(SRK_1)))
    out = run(dps_module, tpm_args(dps_module, "pi-tpm-keep", provisioning_status="disabled")).result
    assert (out["changed"], out["differences"]) == (True, ["provisioningStatus"])
    assert dps_module.calls[1]["body"]["attestation"]["tpm"]["storageRootKey"] == b64(SRK_1)
    assert stored_tpm(dps_module, "pi-tpm-keep") == {"endorsementKey": b64(EK_1), "storageRootKey": b64(SRK_1)}


def test_a_different_storage_root_key_is_a_change(dps_module):
    create(dps_module, tpm_args(dps_module, "pi-tpm-srk", storage_root_key=b64(SRK_1)))
    args = tpm_args(dps_module, "pi-tpm-srk", storage_root_key=b64(EK_2))
    out = run(dps_module, args).result
    assert (out["changed"], out["differences"]) == (True, ["attestation.tpm.storageRootKey"])
    assert run(dps_module, args).result["changed"] is False


def test_tpm_keys_compare_by_bytes_not_by_base64_text(service_module):
    # Scripted: the emulator echoes the base64 as given; a DPS that re-wraps it (line breaks) holds the same key.
    wrapped = "\n".join(textwrap.wrap(b64(EK_1), 76))
    record = {
        "registrationId": "pi-tpm-text",
        "attestation": {"type": "tpm", "tpm": {"endorsementKey": wrapped, "storageRootKey": b64(SRK_1)}},
        "etag": '"t1"',
    }
    out = run(
        service_module, tpm_args(service_module, "pi-tpm-text", storage_root_key=b64(SRK_1)), reply(200, record)
    ).result
    assert (out["changed"], out["differences"]) == (False, [])


def test_switching_an_individual_enrollment_to_tpm(dps_module):
    symmetric = dps_module.service_args(registration_id="pi-tpm-switch", attestation="symmetric_key")
    create(dps_module, symmetric)
    out = run(dps_module, tpm_args(dps_module, "pi-tpm-switch")).result
    assert (out["changed"], out["differences"]) == (True, ["attestation.type", "attestation.tpm.endorsementKey"])
    assert dps_module.calls[-1]["body"]["attestation"] == {"type": "tpm", "tpm": {"endorsementKey": b64(EK_1)}}
    assert run(dps_module, tpm_args(dps_module, "pi-tpm-switch")).result["changed"] is False


def test_a_key_dps_refuses_fails_with_dps_message(dps_module):
    # A well-formed TPM2B_PUBLIC of something other than an RSA-2048 storage key: DPS's to refuse (HTTP 400).
    not_rsa = struct.pack(">H", 10) + struct.pack(">HH", 0x0023, 0x000B) + bytes(6)
    result = run(dps_module, tpm_args(dps_module, "pi-tpm-ecc", endorsement_key=not_rsa))
    assert result.failed
    assert result.result["msg"].startswith("individual enrollment pi-tpm-ecc: ")
    assert "\n" not in result.result["msg"]
    assert result.result["http_status"] == 400
    assert dps_module.service_client().get(ENROLLMENTS, "pi-tpm-ecc") is None


TPM_FIX = "read it with tpm2_readpublic -c 0x81010001 -o ek.pub and base64 -w0 ek.pub"
SRK_FIX = "read it with tpm2_readpublic -c 0x81000001 -o srk.pub and base64 -w0 srk.pub"
TPM2B = "give the base64 of the key's marshalled TPM2B_PUBLIC (not PEM or DER)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            {"endorsement_key": "-----BEGIN PUBLIC KEY-----"},
            f"endorsement_key is not base64; {TPM2B}: {TPM_FIX}",
        ),
        (
            {"endorsement_key": b64(EK_1[2:])},  # a TPMT_PUBLIC without the TPM2B size
            f"endorsement_key is not a TPM2B_PUBLIC: its size field says 1 bytes but {len(EK_1) - 4} follow; {TPM2B}: "
            f"{TPM_FIX}",
        ),
        (
            {"endorsement_key": b64(b"\x00")},
            f"endorsement_key is 1 bytes long, too short for a TPM2B_PUBLIC; {TPM2B}: {TPM_FIX}",
        ),
        (
            {"storage_root_key": b64(EK_1 + b"\x00")},
            f"storage_root_key is not a TPM2B_PUBLIC: its size field says {len(EK_1) - 2} bytes but {len(EK_1) - 1} "
            f"follow; {TPM2B}: {SRK_FIX}",
        ),
        (
            {"endorsement_key": None},
            "attestation=tpm needs endorsement_key, the base64 of the TPM's endorsement key (TPM2B_PUBLIC): read it "
            "on the device with tpm2_readpublic -c 0x81010001 -o ek.pub and base64 -w0 ek.pub",
        ),
        ({"primary_key": GIVEN_KEY}, "primary_key is for attestation=symmetric_key, not tpm"),
        ({"attestation": "x509"}, "endorsement_key is for attestation=tpm, not x509"),
    ],
)
def test_tpm_input_errors_before_any_request(service_module, args, message):
    result = run(service_module, {**tpm_args(service_module, "pi-7"), **args})
    assert result.failed
    assert result.result["msg"] == "individual enrollment pi-7: " + message
    assert service_module.calls == []


@pytest.mark.parametrize("state", ["present", "absent"])
def test_tpm_enrollment_group_is_refused_before_any_request(service_module, state):
    args = dict(connection_string=CONNECTION_STRING, enrollment_group_id="tpm-fleet", attestation="tpm", state=state)
    result = run(service_module, dict(args, endorsement_key=b64(EK_1)))
    assert result.failed
    assert result.result["msg"] == (
        "enrollment group tpm-fleet: attestation=tpm is for individual enrollments (registration_id): DPS has no TPM "
        "enrollment groups; enroll each TPM device with its endorsement key, or use x509 or symmetric_key for a group"
    )
    assert service_module.calls == []


def test_tpm_keys_are_not_secrets():
    spec = dps_enrollment.argument_spec()
    assert spec["endorsement_key"]["no_log"] is False  # a TPM2B_PUBLIC: public, and useful in the output
    assert spec["storage_root_key"]["no_log"] is False
