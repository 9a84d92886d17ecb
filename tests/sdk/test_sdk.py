"""The DPS emulator judged by Microsoft's clients: the Node SDKs (azure-iot-provisioning-service, -device, -device-http,
azure-iot-security-x509, -symmetric-key; exact versions in package-lock.json, installed by `make sdk`) drive it, and
these tests check what the SDKs saw. The node scripts print one JSON object of step outcomes (report.js); conftest.py
starts the emulator where the SDKs can reach it (port 443 of a loopback address of its own).
"""

from __future__ import annotations

import base64
import json

from tests.sdk.conftest import GROUP_KEY, HUB, run_node


def not_found(outcome: dict, error_code: int) -> bool:
    """The service SDK's not-found error (RestApiClient.translateError: a plain Error 'Not found' for a 404 whose
    body is not IoT Hub's `{"Message": "ErrorCode:..."}`), carrying DPS's error body."""
    return (outcome["error"], outcome["message"], outcome["statusCode"]) == ("Error", "Not found", 404) and outcome[
        "body"
    ]["errorCode"] == error_code


def register(node: str, emulator, registration_id: str, **credentials: str) -> dict:
    return run_node(node, emulator, "device.js", DPS_REGISTRATION_ID=registration_id, **credentials)["register"]


def test_service_sdk_enrollments(node, emulator, pki):
    device = pki.device("sdk-x509-device")
    out = run_node(
        node,
        emulator,
        "service.js",
        "enrollments",
        DPS_SIGNING_CA_FILE=str(pki.intermediate_path),
        DPS_CLIENT_CERT_FILE=device.leaf_file,
    )
    errors = {step: outcome for step, outcome in out.items() if isinstance(outcome, dict) and "error" in outcome}
    expected_errors = {
        "group.createAgain",
        "group.updateStale",
        "missing.individual",
        "missing.group",
        "missing.attestation",
        "individual.deleteStale",
        "individual.gone",
        "group.gone",
    }
    assert set(errors) == expected_errors, json.dumps(errors, indent=1)

    # the X.509 enrollment group: create, get, update with its etag; a second create and a stale etag refused
    created, got, updated = out["group.create"], out["group.get"], out["group.update"]
    assert created["enrollmentGroupId"] == got["enrollmentGroupId"] == "sdk-group"
    assert created["etag"] == got["etag"] != updated["etag"]
    signing = got["attestation"]["x509"]["signingCertificates"]["primary"]
    assert signing["info"]["sha1Thumbprint"].upper() == pki.intermediate.sha1.upper()
    assert got["initialTwin"]["tags"] == {"site": "sdk-lab"}
    assert updated["initialTwin"]["tags"] == {"site": "sdk-lab-2"}
    assert updated["createdDateTimeUtc"] == created["createdDateTimeUtc"]
    assert (errors["group.createAgain"]["error"], errors["group.createAgain"]["statusCode"]) == (
        "DeviceAlreadyExistsError",
        409,
    )
    assert (errors["group.updateStale"]["error"], errors["group.updateStale"]["statusCode"]) == (
        "InvalidEtagError",
        412,
    )
    assert out["group.attestation"]["type"] == "x509"
    assert "signingCertificates" in out["group.attestation"]["x509"]
    assert out["group.query"] == [["sdk-group"], ["sdk-sym"], ["sdk-x509"]]  # one group a page, sorted by id

    # the X.509 individual enrollment
    individual = out["individual.get"]
    assert individual["registrationId"] == "sdk-x509-device"
    client = individual["attestation"]["x509"]["clientCertificates"]["primary"]
    assert client["info"]["sha256Thumbprint"].upper() == device.sha256.upper()
    assert out["individual.update"]["provisioningStatus"] == "disabled"
    assert out["individual.update"]["etag"] != individual["etag"]
    assert out["individual.attestation"]["type"] == "x509"
    assert errors["individual.deleteStale"]["statusCode"] == 412
    assert out["individual.delete"] == "deleted"
    assert not_found(errors["individual.gone"], 404201)

    # a symmetric-key enrollment created without keys: generated keys in the create answer, none from a GET,
    # the same keys from the attestation mechanism
    keys = out["symmetric.create"]["attestation"]["symmetricKey"]
    assert len(base64.b64decode(keys["primaryKey"])) >= 16 and len(base64.b64decode(keys["secondaryKey"])) >= 16
    assert not out["symmetric.get"]["attestation"]["symmetricKey"].get("primaryKey")
    assert out["symmetric.keysMatch"] is True
    assert out["symmetric.delete"] == "deleted"

    # bulk: create three, a second create of one is an item error, a paged query sees them, delete all
    assert out["bulk.create"] == {"isSuccessful": True, "errors": []}
    again = out["bulk.createAgain"]
    assert again["isSuccessful"] is False
    assert [(e["registrationId"], e["errorCode"]) for e in again["errors"]] == [("sdk-bulk-1", 409001)]
    pages = out["individual.query"]
    assert all(len(page) <= 2 for page in pages) and len(pages) >= 3
    listed = [item for page in pages for item in page]
    assert {"sdk-bulk-1", "sdk-bulk-2", "sdk-bulk-3", "sdk-sym-device", "sdk-x509-device"} <= set(listed)
    assert listed == sorted(listed)
    assert out["bulk.delete"] == {"isSuccessful": True, "errors": []}

    # missing records: the SDK's not-found error with DPS's codes
    assert not_found(errors["missing.individual"], 404201)
    assert not_found(errors["missing.group"], 404204)
    assert not_found(errors["missing.attestation"], 404201)
    assert out["group.delete"] == "deleted"
    assert not_found(errors["group.gone"], 404204)


def test_device_sdk_x509_group_device(node, emulator, pki):
    """A device of the X.509 group presents leaf + intermediate through azure-iot-security-x509; with its leaf
    alone it is refused as DPS refuses it (401002, CA certificate not found)."""
    device = pki.device("sdk-pi-0001")
    refused = register(node, emulator, "sdk-pi-0001", DPS_CERT_FILE=device.leaf_file, DPS_KEY_FILE=device.key_file)
    assert (refused["error"], refused["statusCode"], refused["body"]["errorCode"]) == (
        "UnauthorizedError",
        401,
        401002,
    ), refused
    state = register(node, emulator, "sdk-pi-0001", DPS_CERT_FILE=device.chain_file, DPS_KEY_FILE=device.key_file)
    assert (state["status"], state["assignedHub"], state["deviceId"]) == ("assigned", HUB, "sdk-pi-0001"), state
    assert state["x509"]["enrollmentGroupId"] == "sdk-x509"
    hub_device = {d["deviceId"]: d for d in emulator.devices()}["sdk-pi-0001"]
    assert hub_device["sha256Thumbprint"].upper() == device.sha256.upper()

    # the service SDK reads the device's registration record, pages the group's records and deletes it
    out = run_node(
        node, emulator, "service.js", "registrations", DPS_REGISTRATION_ID="sdk-pi-0001", DPS_GROUP_ID="sdk-x509"
    )
    assert (out["state"]["registrationId"], out["state"]["status"]) == ("sdk-pi-0001", "assigned"), out
    assert ["sdk-pi-0001"] in out["groupQuery"], out
    assert out["delete"] == "deleted"
    assert not_found(out["gone"], 404201), out


def test_device_sdk_symmetric_key_group_device(node, emulator):
    """A device of the symmetric-key group, its key derived (as Microsoft's samples do) from the group key the
    service SDK reads."""
    mechanism = run_node(node, emulator, "service.js", "groupKeys", DPS_GROUP_ID="sdk-sym")["attestation"]
    assert mechanism["type"] == "symmetricKey", mechanism
    group_key = mechanism["symmetricKey"]["primaryKey"]
    assert group_key == GROUP_KEY
    state = register(node, emulator, "sdk-sensor-0001", DPS_GROUP_KEY=group_key)
    assert (state["status"], state["assignedHub"], state["deviceId"]) == ("assigned", HUB, "sdk-sensor-0001"), state
    assert state["symmetricKey"]["enrollmentGroupId"] == "sdk-sym"

    wrong_key = base64.b64encode(b"not-the-group-key-of-this-device").decode()
    refused = register(node, emulator, "sdk-sensor-0002", DPS_GROUP_KEY=wrong_key)
    assert (refused["error"], refused["statusCode"]) == ("UnauthorizedError", 401), refused
    assert refused["body"]["errorCode"] == 401002


def test_device_sdk_disabled_enrollment_refused(node, emulator, pki):
    """The service SDK blocks one device of the X.509 group (a disabled individual enrollment wins over its group);
    the device SDK's registration is then refused.

    DPS answers such a registration with the status `disabled`; the Node device SDK has no case for it
    (azure-iot-provisioning-device/dist/polling_state_machine.js, responseReceived: `default:` raises
    `SyntaxError('status is ' + result.status)` with the answer in `err.result`), so that is the refusal it reports.
    """
    device = pki.device("sdk-pi-0666")
    blocked = run_node(
        node, emulator, "service.js", "block", DPS_REGISTRATION_ID="sdk-pi-0666", DPS_CLIENT_CERT_FILE=device.leaf_file
    )["block"]
    assert blocked["provisioningStatus"] == "disabled", blocked
    refused = register(node, emulator, "sdk-pi-0666", DPS_CERT_FILE=device.chain_file, DPS_KEY_FILE=device.key_file)
    assert (refused["error"], refused["message"]) == ("SyntaxError", "status is disabled"), refused
    assert refused["body"]["registrationState"]["status"] == "disabled"
    assert "sdk-pi-0666" not in {d["deviceId"] for d in emulator.devices()}
