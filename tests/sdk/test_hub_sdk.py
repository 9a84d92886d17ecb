"""The emulator's IoT Hub service API judged by Microsoft's IoT Hub service SDK (azure-iothub's Registry, exact
version in package-lock.json, installed by `make sdk`): tests/sdk/hub.js drives it, these tests check what it saw.

What the SDK does on the wire that mattered (azure-iothub 1.16.6, dist/registry.js, common-http/rest_api_client.js):

- It dials the connection string's HostName on port 443 and signs that name: sr = HostName exactly as written (not
  url-encoded, not lower-cased), string to sign = sr + "\\n" + se, skn = the policy, se re-extended to an hour from
  now before every request. The emulator picks the hub from sr, so HostName must be the hub's name; the test gives
  the emulator port 443 of a loopback address of its own (as test_sdk.py) and resolve.js, preloaded with `node -r`,
  answers the hub's name with that address. TLS then verifies the hub's name, which the emulator's server
  certificate carries as a SAN (every linked hub's name).
- api-version=2021-04-12 on every request; JSON bodies are parsed only when Content-Type says application/json.
- Registry.create = PUT /devices/{id} with no If-Match and, when the caller gives none, authentication
  {"type": "sas", "symmetricKey": {"primaryKey": "", "secondaryKey": ""}}; Registry.update = PUT with the whole
  device and If-Match "*" (quoted); Registry.delete = DELETE with If-Match "*"; Registry.list = GET /devices.
- updateTwin = PATCH /twins/{id} with If-Match "<etag>" (the SDK adds the quotes when the etag has none).
- createQuery(sql, pageSize) = POST /devices/query {"query": sql} with x-ms-max-item-count: pageSize and, after the
  first page, x-ms-continuation: <the previous answer's x-ms-continuation>; hasMoreResults is "the answer carried an
  x-ms-continuation header", so the last page must carry none.
- addConfiguration = PUT /configurations/{id} with no If-Match, schemaVersion "1.0" filled in;
  updateConfiguration = PUT with If-Match "<etag>" (or "*" when forced); removeConfiguration = DELETE without
  If-Match; getConfigurations = GET /configurations.
- Errors: translateError reads body.Message as "ErrorCode:<code>;<text>" and picks the class by HTTP status: 400
  ArgumentError, 404 DeviceNotFoundError only for code DeviceNotFound (any other 404 is a plain Error
  'Not found'), 409 DeviceAlreadyExistsError whatever the code (also for a configuration), 412 InvalidEtagError.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import subprocess

import pytest

from tests.sdk.conftest import PORT, SDK_DIR, loopback_address
from tests.support.emulator import fleet_config
from tests.support.iothub_fakes import HUB_OWNER, HUB_RIGHTS, hub_connection_string, hub_policy_key
from tests.support.pki import Pki

ID_SCOPE = "0ne00SDKHUB"
HUB = "hub-sdk-judge.azure-devices.net"
GROUP_KEY = base64.b64encode(b"sdk-hub-judge-symmetric-group-key").decode()
CANARY, EDGE, CONFIG = "sdk-hub-canary", "sdk-hub-edge", "sdk-hub-config"


@pytest.fixture(scope="module")
def emulator(dps_emulator_factory, tmp_path_factory: pytest.TempPathFactory):
    pki = Pki(tmp_path_factory.mktemp("sdk-hub-pki"), label="SDK hub")
    hub_policies = [{"name": HUB_OWNER, "primary_key": hub_policy_key(HUB_OWNER), "rights": HUB_RIGHTS}]
    config = fleet_config(
        ID_SCOPE, HUB, pki.root_path, GROUP_KEY, prefix="sdkhub", iot_hub={"shared_access_policies": hub_policies}
    )
    return dps_emulator_factory(config, "dps-sdk-hub", host=loopback_address(), port=PORT)


@pytest.fixture(scope="module")
def outcome(node, emulator) -> dict:
    """hub.js's steps, run once: the SDK reaches the emulator by the hub's name (resolve.js)."""
    environment = {
        **os.environ,
        "NODE_EXTRA_CA_CERTS": emulator.ca_cert,
        "IOTHUB_CONNECTION_STRING": hub_connection_string(hub=HUB),
        "SDK_RESOLVE": f"{HUB}={emulator.host}",
    }
    done = subprocess.run(
        [node, "-r", "./resolve.js", "hub.js"],
        cwd=SDK_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"node hub.js exited {done.returncode}:\n{done.stderr}"
    return json.loads(done.stdout)


def refused(outcome: dict, step: str, error: str, status: int, code: str | None = None) -> None:
    """`step` failed with the SDK error class `error`, HTTP `status` and IoT Hub's `ErrorCode:<code>;` body."""
    seen = outcome[step]
    assert (seen.get("error"), seen.get("statusCode")) == (error, status), f"{step}: {json.dumps(seen)}"
    message = seen["body"]["Message"]
    assert message.startswith(f"ErrorCode:{code};" if code else "ErrorCode:"), f"{step}: {message}"
    assert seen["body"]["ExceptionMessage"].startswith("Tracking ID:"), f"{step}: {json.dumps(seen)}"


def test_server_certificate_names_the_hub(emulator):
    """The SDK verifies TLS against the hub's name, so the emulator's certificate must carry it."""
    context = ssl.create_default_context(cafile=emulator.ca_cert)
    with (
        socket.create_connection((emulator.host, PORT), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=HUB) as tls,
    ):
        names = [value for kind, value in tls.getpeercert()["subjectAltName"] if kind == "DNS"]
    assert HUB in names


def test_only_the_expected_steps_fail(outcome):
    failed = {step for step, seen in outcome.items() if isinstance(seen, dict) and "error" in seen}
    assert failed == {
        "device.createAgain",
        "device.missing",
        "twin.updateStale",
        "query.malformed",
        "config.addAgain",
        "config.updateStale",
        "config.updateContent",
        "config.missing",
        "config.gone",
        "device.gone",
    }, json.dumps({step: outcome[step] for step in failed}, indent=1)


def test_device_identities(outcome):
    created, got = outcome["device.create"], outcome["device.get"]
    assert (created["deviceId"], created["status"]) == (CANARY, "enabled")
    # the SDK sent empty keys (no authentication given): the hub generates them, as IoT Hub does
    assert created["authentication"]["type"] == "sas"
    assert all(len(base64.b64decode(key)) >= 16 for key in created["authentication"]["symmetricKey"].values())
    assert got["etag"] == created["etag"]
    refused(outcome, "device.createAgain", "DeviceAlreadyExistsError", 409, "DeviceAlreadyExists")
    assert outcome["device.createEdge"]["capabilities"]["iotEdge"] is True

    disabled = outcome["device.disable"]
    assert (disabled["status"], disabled["statusReason"]) == ("disabled", "sdk judge")
    assert disabled["etag"] != got["etag"]
    assert outcome["device.getDisabled"]["status"] == "disabled"
    assert outcome["device.enable"]["status"] == "enabled"
    assert {CANARY, EDGE} <= set(outcome["device.list"])
    refused(outcome, "device.missing", "DeviceNotFoundError", 404, "DeviceNotFound")

    assert outcome["device.delete"] == "deleted"
    refused(outcome, "device.gone", "DeviceNotFoundError", 404, "DeviceNotFound")
    assert outcome["device.deleteEdge"] == "deleted"


def test_twin_tags_with_etags(outcome):
    before, updated = outcome["twin.get"], outcome["twin.update"]
    assert (before["deviceId"], before["tags"], before["configurations"]) == (CANARY, {}, {})
    assert updated["tags"] == {"ring": "canary", "site": "lab"}
    assert updated["etag"] != before["etag"]
    refused(outcome, "twin.updateStale", "InvalidEtagError", 412, "PreconditionFailed")
    assert outcome["twin.removeTag"]["tags"] == {"ring": "canary"}  # a null in the patch removes the tag
    assert outcome["twin.updateEdge"]["tags"] == {"ring": "canary"}


def test_device_query_pages(outcome):
    """One twin a page when asked for (x-ms-max-item-count: 1), and no x-ms-continuation after the last."""
    assert outcome["query.canaryPaged"] == [[CANARY], [EDGE]]
    assert outcome["query.edge"] == [[EDGE]]
    assert outcome["query.all"] == [[CANARY, EDGE]]
    refused(outcome, "query.malformed", "ArgumentError", 400)


def test_configurations(outcome):
    added, got = outcome["config.add"], outcome["config.get"]
    assert (added["id"], added["priority"], added["schemaVersion"]) == (CONFIG, 10, "1.0")
    assert added["targetCondition"] == "tags.ring = 'canary'"
    assert added["labels"] == {"owner": "sdk-judge"}
    assert added["etag"] and added["createdTimeUtc"]
    assert got["etag"] == added["etag"]
    assert got["systemMetrics"]["results"]["targetedCount"] == 2  # both devices are tagged ring=canary
    assert got["systemMetrics"]["results"]["appliedCount"] == 2
    assert got["metrics"]["results"] == {"reporting": 0}  # no device reports sdkJudge
    refused(outcome, "config.addAgain", "DeviceAlreadyExistsError", 409)
    assert CONFIG in outcome["config.list"]

    updated = outcome["config.update"]
    assert updated["priority"] == 20
    assert updated["etag"] != got["etag"]
    assert updated["createdTimeUtc"] == added["createdTimeUtc"]
    refused(outcome, "config.updateStale", "InvalidEtagError", 412, "PreconditionFailed")
    refused(outcome, "config.updateContent", "ArgumentError", 400, "ArgumentInvalid")
    final = outcome["config.getUpdated"]
    assert final["priority"] == 20
    assert final["content"]["deviceContent"] == {"properties.desired.sdkJudge": {"interval": 30}}

    # the twins' configurations map while the configuration targets them, and after it is removed
    assert outcome["twin.configurations"] == {
        CANARY: {CONFIG: {"status": "applied"}},
        EDGE: {CONFIG: {"status": "applied"}},
    }
    assert outcome["config.remove"] == "removed"
    assert not outcome["twin.configurationsAfter"]
    # any 404 but DeviceNotFound is the SDK's plain Error('Not found'); the body still names the code
    refused(outcome, "config.missing", "Error", 404, "ConfigurationNotFound")
    refused(outcome, "config.gone", "Error", 404, "ConfigurationNotFound")
