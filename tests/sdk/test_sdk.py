"""The DPS emulator judged by Microsoft's clients: the Node SDKs (azure-iot-provisioning-service, -device, -device-http,
azure-iot-security-x509, -symmetric-key; exact versions in package-lock.json, installed by `make sdk`) drive it, and
these tests check what the SDKs saw. The node scripts print one JSON object of step outcomes (report.js).

The SDKs take a host name and always dial port 443 (azure-iot-http-base's Http.buildRequest sets a port only from
request options that neither the service client nor the device transport passes), so the emulator listens on port
443 of a loopback address of its own (127.0.0.N), that address is the device client's provisioning host and the
connection string's HostName, and node trusts the emulator's server CA through NODE_EXTRA_CA_CERTS.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.emulator import fleet_config
from tests.support.fleet import POLICY, POLICY_KEY, POLICY_RIGHTS
from tests.support.pki import Pki

SDK_DIR = Path(__file__).resolve().parent
ID_SCOPE = "0ne00SDKJDG"
HUB = "hub-sdk.azure-devices.net"
GROUP_KEY = base64.b64encode(b"sdk-judge-symmetric-group-key-01").decode()
PORT = 443  # the only port the SDKs dial


def loopback_address() -> str:
    """A 127.0.0.N whose port 443 is free (so parallel sessions do not collide), or a one-line failure."""
    for last in range(2, 255):
        address = f"127.0.0.{last}"
        with socket.socket() as probe:
            try:
                probe.bind((address, PORT))
            except PermissionError:
                pytest.fail(
                    "tests/sdk: Microsoft's SDKs dial port 443 only: run as root or lower "
                    "net.ipv4.ip_unprivileged_port_start to 443"
                )
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise
            return address
    pytest.fail("tests/sdk: port 443 is taken on every 127.0.0.N address")


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    if not found or not (SDK_DIR / "node_modules" / "azure-iot-provisioning-service").is_dir():
        pytest.fail("tests/sdk: needs node and the SDKs: run `make sdk` (npm ci --prefix tests/sdk)")
    return found


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("sdk-pki"), label="SDK")


@pytest.fixture(scope="module")
def emulator(dps_emulator_factory, pki: Pki):
    policies = [{"name": POLICY, "primary_key": POLICY_KEY, "rights": POLICY_RIGHTS}]
    config = fleet_config(ID_SCOPE, HUB, pki.root_path, GROUP_KEY, prefix="sdk", shared_access_policies=policies)
    return dps_emulator_factory(config, "dps-sdk", host=loopback_address(), port=PORT)


def run_node(node: str, emulator, script: str, *args: str, **env: str) -> dict:
    """Run a script of tests/sdk against `emulator`; its JSON outcome."""
    environment = {
        **os.environ,
        "NODE_EXTRA_CA_CERTS": emulator.ca_cert,
        "DPS_CONNECTION_STRING": (
            f"HostName={emulator.host};SharedAccessKeyName={POLICY};SharedAccessKey={POLICY_KEY}"
        ),
        "DPS_PROVISIONING_HOST": emulator.host,
        "DPS_ID_SCOPE": ID_SCOPE,
        **env,
    }
    done = subprocess.run(
        [node, script, *args], cwd=SDK_DIR, env=environment, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"node {script} {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
    return json.loads(done.stdout)


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
