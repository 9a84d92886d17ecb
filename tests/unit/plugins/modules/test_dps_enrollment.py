"""Unit tests for the dps_enrollment module (no network: scripted fake transport, fake clock)."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from ansible_collections.iotfleet.aziot.plugins.modules import dps_enrollment
from tests.support.dps_fakes import reply
from tests.support.pki import distinguished_name, issue

POLICY_KEY = base64.b64encode(b"policy-key-material-0123456789ab").decode()
HOST = "contoso-dps.azure-devices-provisioning.net"
CONNECTION_STRING = f"HostName={HOST};SharedAccessKeyName=provisioningserviceowner;SharedAccessKey={POLICY_KEY}"
GENERATED_PRIMARY = base64.b64encode(b"generated-primary-0123456789abcd").decode()
GENERATED_SECONDARY = base64.b64encode(b"generated-secondary-0123456789ab").decode()
GIVEN_KEY = base64.b64encode(b"given-primary-key-0123456789abcd").decode()
HUB = "hub-a.azure-devices.net"


def info(certificate) -> dict:
    return {
        "subjectName": f"CN={certificate.subject.rfc4514_string()[3:]}",
        "sha1Thumbprint": certificate.fingerprint(hashes.SHA1()).hex().upper(),
        "sha256Thumbprint": certificate.fingerprint(hashes.SHA256()).hex().upper(),
        "notAfterUtc": "2027-01-01T00:00:00Z",
    }


@pytest.fixture
def pki(tmp_path):
    files = {}
    for name, cn in (("ca", "Fleet CA"), ("ca2", "Fleet CA 2027"), ("device", "pi-0042")):
        made = issue(cn)
        path = tmp_path / f"{name}.pem"
        path.write_bytes(made.pem)
        files[name] = {"certificate": made.cert, "key": made.key, "path": str(path)}
    key_pem = files["ca"]["key"].private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    (tmp_path / "ca-with-key.pem").write_bytes((tmp_path / "ca.pem").read_bytes() + key_pem)
    files["with_key"] = str(tmp_path / "ca-with-key.pem")
    return files


def group_args(pki, **extra) -> dict:
    args = dict(
        connection_string=CONNECTION_STRING,
        enrollment_group_id="fleet",
        attestation="x509",
        primary_certificate=pki["ca"]["path"],
        iot_hubs=[HUB],
        initial_twin={"tags": {"site": "plant-3"}},
    )
    args.update(extra)
    return args


def group_record(pki, etag='"e1"', **fields) -> dict:
    record = {
        "enrollmentGroupId": "fleet",
        "attestation": {
            "type": "x509",
            "x509": {"signingCertificates": {"primary": {"info": info(pki["ca"]["certificate"])}}},
        },
        "iotHubs": [HUB],
        "initialTwin": {"tags": {"site": "plant-3"}, "properties": {"desired": {}}},
        "provisioningStatus": "enabled",
        "capabilities": {"iotEdge": False},
        "etag": etag,
        "createdDateTimeUtc": "2026-01-01T00:00:00Z",
        "lastUpdatedDateTimeUtc": "2026-01-01T00:00:00Z",
    }
    record.update(fields)
    return record


def run(harness, args, *script):
    return harness.run(dps_enrollment, args, *script)


# --- create, no change, update ----------------------------------------------------------------------------------


def test_creates_a_group(service_module, pki):
    result = run(
        service_module,
        group_args(pki),
        reply(404, {"errorCode": 404201, "message": "not found"}),
        reply(200, group_record(pki)),
    )
    assert not result.failed, result.result
    out = result.result
    assert out["changed"] is True
    assert out["differences"] == ["attestation", "iotHubs", "initialTwin.tags"]
    assert out["etag"] == '"e1"'
    assert out["enrollment"]["enrollmentGroupId"] == "fleet"
    assert "generated_keys" not in out
    assert service_module.methods() == ["GET enrollmentGroups/fleet", "PUT enrollmentGroups/fleet"]
    put = service_module.calls[1]
    assert "If-Match" not in put["headers"]
    assert put["body"]["enrollmentGroupId"] == "fleet"
    assert put["body"]["iotHubs"] == [HUB]
    assert put["body"]["initialTwin"] == {"tags": {"site": "plant-3"}}
    sent = put["body"]["attestation"]["x509"]["signingCertificates"]["primary"]["certificate"]
    assert x509.load_pem_x509_certificate(sent.encode()) == pki["ca"]["certificate"]
    assert service_module.transport_options["validate_certs"] is True
    assert put["headers"]["Authorization"].startswith(f"SharedAccessSignature sr={HOST}&sig=")


def test_same_enrollment_is_not_changed(service_module, pki):
    # DPS reports the CA by thumbprint only; hub names differ in case; the record has fields the task does not set.
    record = group_record(pki, iotHubs=[HUB.upper()], allocationPolicy="hashed")
    result = run(service_module, group_args(pki), reply(200, record))
    assert result.result["changed"] is False
    assert result.result["differences"] == []
    assert service_module.methods() == ["GET enrollmentGroups/fleet"]


def test_update_sends_if_match_and_keeps_unset_fields(service_module, pki):
    record = group_record(pki, allocationPolicy="geoLatency", initialTwin={"tags": {"site": "plant-2"}})
    result = run(
        service_module,
        group_args(pki),
        reply(200, record),
        reply(200, group_record(pki, etag='"e2"', allocationPolicy="geoLatency")),
    )
    out = result.result
    assert (out["changed"], out["differences"], out["etag"]) == (True, ["initialTwin.tags"], '"e2"')
    put = service_module.calls[1]
    assert put["headers"]["If-Match"] == '"e1"'
    assert put["body"]["allocationPolicy"] == "geoLatency"
    for server_field in ("etag", "createdDateTimeUtc", "lastUpdatedDateTimeUtc"):
        assert server_field not in put["body"]


def test_ca_rollover_adds_a_secondary(service_module, pki):
    result = run(
        service_module,
        group_args(pki, secondary_certificate=pki["ca2"]["path"]),
        reply(200, group_record(pki)),
        reply(200, group_record(pki, etag='"e2"')),
    )
    assert result.result["differences"] == ["attestation.x509.signingCertificates.secondary"]
    certificates = service_module.calls[1]["body"]["attestation"]["x509"]["signingCertificates"]
    assert set(certificates) == {"primary", "secondary"}


# --- check mode and diff --------------------------------------------------------------------------------------


def test_check_mode_sends_no_put(service_module, pki):
    record = group_record(pki, initialTwin={"tags": {"site": "plant-2"}})
    result = run(service_module, group_args(pki, _ansible_check_mode=True, _ansible_diff=True), reply(200, record))
    out = result.result
    assert out["changed"] is True
    assert out["differences"] == ["initialTwin.tags"]
    assert service_module.methods() == ["GET enrollmentGroups/fleet"]
    before, after = json.loads(out["diff"]["before"]), json.loads(out["diff"]["after"])
    assert before["initialTwin"]["tags"] == {"site": "plant-2"}
    assert after["initialTwin"]["tags"] == {"site": "plant-3"}
    assert "etag" not in before
    assert "BEGIN CERTIFICATE" not in out["diff"]["after"]


def test_check_mode_on_a_missing_enrollment(service_module, pki):
    result = run(service_module, group_args(pki, _ansible_check_mode=True), reply(404, {}))
    assert (result.result["changed"], result.result["enrollment"], result.result["etag"]) == (True, {}, None)
    assert "diff" not in result.result  # diff only when asked
    assert len(service_module.calls) == 1


# --- symmetric keys -------------------------------------------------------------------------------------------


def sym_record(**keys) -> dict:
    return {
        "enrollmentGroupId": "sensors",
        "attestation": {"type": "symmetricKey", "symmetricKey": keys},
        "etag": '"s1"',
    }


def sym_args(**extra) -> dict:
    args = dict(connection_string=CONNECTION_STRING, enrollment_group_id="sensors", attestation="symmetric_key")
    args.update(extra)
    return args


def test_generated_keys_are_returned_once_on_create_and_never_in_the_diff(service_module):
    generated = {"primaryKey": GENERATED_PRIMARY, "secondaryKey": GENERATED_SECONDARY}
    result = run(service_module, sym_args(_ansible_diff=True), reply(404, {}), reply(200, sym_record(**generated)))
    out = result.result
    assert out["generated_keys"] == {"primary_key": GENERATED_PRIMARY, "secondary_key": GENERATED_SECONDARY}
    assert out["enrollment"]["attestation"]["symmetricKey"] == {"primaryKey": "********", "secondaryKey": "********"}
    assert GENERATED_PRIMARY not in json.dumps(out["diff"])
    assert json.loads(out["diff"]["after"])["attestation"]["symmetricKey"]["primaryKey"] == "(generated by DPS)"
    assert service_module.calls[1]["body"]["attestation"] == {"type": "symmetricKey", "symmetricKey": {}}


def test_generated_keys_read_from_the_attestation_when_the_put_answer_lacks_them(service_module):
    result = run(
        service_module,
        sym_args(primary_key=GIVEN_KEY),
        reply(404, {}),
        reply(200, sym_record()),
        reply(
            200,
            {"type": "symmetricKey", "symmetricKey": {"primaryKey": GIVEN_KEY, "secondaryKey": GENERATED_SECONDARY}},
        ),
    )
    assert result.result["generated_keys"] == {"secondary_key": GENERATED_SECONDARY}  # not the one given
    assert service_module.methods()[-1] == "POST enrollmentGroups/sensors/attestationmechanism"


def test_existing_symmetric_enrollment_returns_no_keys(service_module):
    # a later run (or a run after someone else created it): unchanged, nothing generated, nothing returned
    result = run(service_module, sym_args(), reply(200, sym_record(primaryKey=None, secondaryKey=None)))
    out = result.result
    assert (out["changed"], "generated_keys" in out) == (False, False)
    assert service_module.methods() == ["GET enrollmentGroups/sensors"]


def test_update_of_a_symmetric_enrollment_carries_its_keys(service_module):
    keys = {"primaryKey": GENERATED_PRIMARY, "secondaryKey": GENERATED_SECONDARY}
    result = run(
        service_module,
        sym_args(provisioning_status="disabled"),
        reply(200, sym_record()),  # a plain GET has no keys
        reply(200, {"type": "symmetricKey", "symmetricKey": keys}),
        reply(200, dict(sym_record(), provisioningStatus="disabled", etag='"s2"')),
    )
    out = result.result
    assert out["changed"] is True
    assert "generated_keys" not in out
    put = service_module.calls[2]
    assert put["body"]["attestation"]["symmetricKey"] == keys  # a PUT without them would rotate them
    assert put["headers"]["If-Match"] == '"s1"'


def test_given_key_that_differs_is_changed_and_never_shown(service_module):
    keys = {"primaryKey": GENERATED_PRIMARY, "secondaryKey": GENERATED_SECONDARY}
    result = run(
        service_module,
        sym_args(primary_key=GIVEN_KEY, _ansible_diff=True, _ansible_check_mode=True),
        reply(200, sym_record()),
        reply(200, {"type": "symmetricKey", "symmetricKey": keys}),
    )
    out = result.result
    assert out["differences"] == ["attestation.symmetricKey.primaryKey"]
    text = json.dumps(out)
    for secret in (GIVEN_KEY, GENERATED_PRIMARY, GENERATED_SECONDARY, POLICY_KEY):
        assert secret not in text
    assert json.loads(out["diff"]["after"])["attestation"]["symmetricKey"]["primaryKey"] == "******** (changed)"


# --- concurrency and retries ----------------------------------------------------------------------------------


def test_412_is_read_again_compared_again_and_retried(service_module, pki):
    stale = group_record(pki, initialTwin={"tags": {"site": "plant-2"}})
    newer = group_record(pki, etag='"e7"', initialTwin={"tags": {"site": "plant-9"}}, iotHubs=[HUB, "hub-b.x"])
    result = run(
        service_module,
        group_args(pki),
        reply(200, stale),
        reply(412, {"errorCode": 412002, "message": "etag mismatch"}),
        reply(200, newer),
        reply(200, group_record(pki, etag='"e8"')),
    )
    out = result.result
    assert out["changed"] is True
    assert out["differences"] == ["iotHubs", "initialTwin.tags"]  # compared against the newer record
    assert [call["headers"].get("If-Match") for call in service_module.calls if call["method"] == "PUT"] == [
        '"e1"',
        '"e7"',
    ]
    assert any("HTTP 412 on write" in line and "reading it again (1/3)" in line for line in service_module.logs)


def test_412_retries_are_bounded(service_module, pki):
    stale = group_record(pki, initialTwin={"tags": {}})
    script = []
    for _ in range(4):
        script += [reply(200, stale), reply(412, {"errorCode": 412002})]
    result = run(service_module, group_args(pki), *script)
    assert result.failed
    assert result.result["msg"] == (
        "enrollment group fleet: the enrollment changed in DPS while this task was writing it, 4 times in a row "
        "(HTTP 412); this task changed nothing, run it again"
    )
    assert [call["method"] for call in service_module.calls].count("PUT") == 4


def test_create_race_409_is_read_again(service_module, pki):
    result = run(
        service_module,
        group_args(pki),
        reply(404, {}),
        reply(409, {"errorCode": 409201, "message": "exists"}),
        reply(200, group_record(pki)),  # someone else created the same thing: nothing left to do
    )
    assert (result.result["changed"], result.result["differences"]) == (False, [])


def test_429_retry_after_is_honoured(service_module, pki):
    result = run(
        service_module,
        group_args(pki),
        reply(429, {"errorCode": 429001}, Retry_After=5),
        reply(503, {}),
        reply(200, group_record(pki)),
    )
    assert result.result["changed"] is False
    assert service_module.sleeps == [5.0, 2.0]
    assert (result.result["requests"], result.result["retried_requests"]) == (3, 2)


def test_throttling_past_the_deadline_fails_with_the_timeout(service_module, pki):
    result = run(
        service_module,
        group_args(pki, timeout=12),
        reply(429, {}, Retry_After=10),
        reply(429, {}, Retry_After=10),
    )
    assert result.failed
    assert result.result["msg"].startswith("enrollment group fleet: DPS did not finish within timeout=12s")
    assert service_module.sleeps == [10.0]


# --- errors the user can act on -------------------------------------------------------------------------------


def test_wrong_key(service_module, pki):
    result = run(service_module, group_args(pki), reply(401, {"errorCode": 401002, "message": "Unauthorized"}))
    assert result.failed
    assert result.result["msg"] == (
        "enrollment group fleet: the DPS refused the shared access signature: check SharedAccessKey of policy "
        "provisioningserviceowner and the controller clock, and that the policy has EnrollmentRead "
        "(HTTP 401 (401002): Unauthorized)"
    )
    assert (result.result["http_status"], result.result["error_code"]) == (401, 401002)
    assert POLICY_KEY not in json.dumps(result.result)


def test_policy_without_enrollment_write(service_module, pki):
    result = run(
        service_module,
        group_args(pki),
        reply(200, group_record(pki, initialTwin={})),
        reply(401, {"errorCode": 401002, "message": "Unauthorized"}),
    )
    assert result.result["msg"].startswith(
        "enrollment group fleet: policy provisioningserviceowner may not update enrollment group fleet: give it the "
        "EnrollmentWrite permission"
    )


def test_unknown_hub(service_module, pki):
    result = run(
        service_module,
        group_args(pki, iot_hubs=["nope.azure-devices.net"]),
        reply(404, {}),
        reply(400, {"errorCode": 400208, "message": "The linked IoT hub nope.azure-devices.net was not found"}),
    )
    assert result.result["msg"].startswith(
        "enrollment group fleet: DPS does not accept iot_hubs nope.azure-devices.net: every hub must be linked"
    )


def test_malformed_connection_string_fails_before_any_request(service_module, pki):
    bad = f"HostName={HOST};SharedAccessKey={POLICY_KEY}"
    result = run(service_module, group_args(pki, connection_string=bad))
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
    result = run(service_module, group_args(pki, **{option: value}))
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


def test_individual_enrollment_with_device_id(service_module, pki):
    args = dict(
        connection_string=CONNECTION_STRING,
        registration_id="pi-0042",
        attestation="x509",
        primary_certificate=pki["device"]["path"],
        device_id="pi-0042-edge",
        provisioning_status="disabled",
    )
    answer = {"registrationId": "pi-0042", "deviceId": "pi-0042-edge", "provisioningStatus": "disabled", "etag": "x"}
    result = run(service_module, args, reply(404, {}), reply(200, answer))
    put = service_module.calls[1]
    assert put["url"].startswith(f"https://{HOST}/enrollments/pi-0042?api-version=2021-10-01")
    assert put["body"]["deviceId"] == "pi-0042-edge"
    assert "clientCertificates" in put["body"]["attestation"]["x509"]
    assert result.result["changed"] is True


def test_separate_policy_options_and_validate_certs(service_module, pki):
    args = group_args(pki, validate_certs=False, ca_path="/etc/ca.pem")
    del args["connection_string"]
    args.update(service_host="127.0.0.1:8443", policy_name="writer", policy_key=POLICY_KEY)
    run(service_module, args, reply(200, group_record(pki)))
    assert service_module.calls[0]["url"].startswith("https://127.0.0.1:8443/enrollmentGroups/fleet?")
    assert "&skn=writer" in service_module.calls[0]["headers"]["Authorization"]
    assert (service_module.transport_options["validate_certs"], service_module.transport_options["ca_path"]) == (
        False,
        "/etc/ca.pem",
    )
    assert any("validate_certs=false" in warning for warning in service_module.warnings)


def test_leftover_difference_after_the_write_is_warned(service_module, pki):
    # DPS answers the PUT with hubs other than those sent (a server-side rule): the next run would change again
    result = run(
        service_module,
        group_args(pki),
        reply(200, group_record(pki, initialTwin={})),
        reply(200, group_record(pki, iotHubs=["hub-z.azure-devices.net"])),
    )
    assert result.result["changed"] is True
    assert service_module.warnings == [
        "enrollment group fleet: DPS answered the write with iotHubs still different from what was sent; the next "
        "run will report a change again"
    ]


# --- state absent ---------------------------------------------------------------------------------------------


def test_absent_deletes_with_if_match(service_module, pki):
    args = dict(connection_string=CONNECTION_STRING, enrollment_group_id="fleet", state="absent")
    result = run(service_module, args, reply(200, group_record(pki)), reply(204))
    assert (result.result["changed"], result.result["differences"]) == (True, ["enrollment"])
    assert service_module.calls[1]["method"] == "DELETE"
    assert service_module.calls[1]["headers"]["If-Match"] == '"e1"'


def test_absent_when_already_absent_and_in_check_mode(service_module, pki):
    args = dict(connection_string=CONNECTION_STRING, enrollment_group_id="fleet", state="absent")
    assert run(service_module, args, reply(404, {})).result["changed"] is False
    result = run(service_module, dict(args, _ansible_check_mode=True), reply(200, group_record(pki)))
    assert result.result["changed"] is True
    assert [call["method"] for call in service_module.calls] == ["GET"]


def test_absent_412_then_deleted(service_module, pki):
    args = dict(connection_string=CONNECTION_STRING, registration_id="pi-0042", state="absent")
    record = {"registrationId": "pi-0042", "etag": '"a"'}
    result = run(
        service_module,
        args,
        reply(200, record),
        reply(412, {}),
        reply(200, dict(record, etag='"b"')),
        reply(204),
    )
    assert result.result["changed"] is True
    assert [call["headers"].get("If-Match") for call in service_module.calls if call["method"] == "DELETE"] == [
        '"a"',
        '"b"',
    ]


# --- the argument spec ----------------------------------------------------------------------------------------


def test_every_secret_option_is_no_log():
    spec = dps_enrollment.argument_spec()
    assert spec["connection_string"]["no_log"] is True
    assert spec["policy_key"]["no_log"] is True
    assert spec["primary_key"]["no_log"] is True
    assert spec["secondary_key"]["no_log"] is True
    assert spec["custom_allocation"]["options"]["webhook_url"]["no_log"] is True
    assert spec["validate_certs"]["default"] is True
