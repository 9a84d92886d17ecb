"""The collection's DPS clients (`_dps.DpsClient`, `_dps_service.DpsServiceClient`) against the local DPS emulator,
over real TLS.

What a DPS answers (statuses, error codes, Retry-After, operations, etags, continuation tokens, 429/5xx/dropped
connections) comes from the emulator (tests/support's fixture factory), not from replies scripted here, so the
clients and the emulator cannot drift apart. test_dps.py and test_dps_service.py keep scripted replies only for
what the emulator cannot produce (a 200 to a register, a failed assignment, a reset mid-body, a 403, a repeated
continuation token, odd headers). The clock is fake where only the clients' arithmetic matters, so no test waits
for a Retry-After.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import urllib.parse

import pytest

from ansible_collections.iotfleet.aziot.plugins.module_utils import _dps_service
from ansible_collections.iotfleet.aziot.plugins.module_utils._dps import DpsClient, DpsError
from ansible_collections.iotfleet.aziot.plugins.module_utils._dps_service import (
    ENROLLMENT_GROUPS,
    ENROLLMENTS,
    REGISTRATIONS,
    DpsServiceClient,
    PreconditionFailed,
    ServiceError,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._http import urls_transport
from tests.support.dps_fakes import FakeClock
from tests.support.emulator import fleet_config
from tests.support.pki import Pki

ID_SCOPE = "0ne00UNIT01"
HUB = "hub-unit.azure-devices.net"
GROUP_KEY = base64.b64encode(b"unit-tests-group-key-0123456789ab").decode()
OWNER_KEY = base64.b64encode(b"unit-owner-policy-key-0123456789abcdef").decode()
READER_KEY = base64.b64encode(b"unit-reader-policy-key-0123456789abcde").decode()
POLICIES = [
    {
        "name": "provisioningserviceowner",
        "primary_key": OWNER_KEY,
        "rights": [
            "ServiceConfig",
            "EnrollmentRead",
            "EnrollmentWrite",
            "RegistrationStatusRead",
            "RegistrationStatusWrite",
        ],
    },
    {"name": "enrollmentread", "primary_key": READER_KEY, "rights": ["EnrollmentRead"]},
]


def device_key(registration_id: str, group_key: str = GROUP_KEY) -> str:
    """Group enrollment device key, from the Azure docs (not the collection's derive_device_key)."""
    digest = hmac.new(base64.b64decode(group_key), registration_id.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class Recorder:
    """A real transport that also keeps each request (method, url, headers, timeout) for the test to read."""

    def __init__(self, transport) -> None:
        self.transport = transport
        self.calls: list[dict] = []

    def __call__(self, method, url, data, headers, timeout):
        self.calls.append(dict(method=method, url=url, data=data, headers=dict(headers), timeout=timeout))
        return self.transport(method, url, data, headers, timeout)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def emulator(dps_emulator_factory, pki):
    config = fleet_config(ID_SCOPE, HUB, pki.root_path, GROUP_KEY, prefix="unit", shared_access_policies=POLICIES)
    return dps_emulator_factory(config)


@pytest.fixture
def faults(emulator):
    emulator.clear_faults()
    yield emulator
    emulator.clear_faults()


def device_client(emulator, registration_id: str, cert=None, **kwargs) -> tuple[DpsClient, Recorder]:
    client_cert, client_key = cert if cert else (None, None)
    recorder = Recorder(
        urls_transport("iotfleet.aziot-tests", client_cert=client_cert, client_key=client_key, ca_path=emulator.ca_cert)
    )
    kwargs.setdefault("timeout", 60)
    if cert is None:
        kwargs.setdefault("device_key", device_key(registration_id))
    client = DpsClient(
        ID_SCOPE, registration_id, recorder, provisioning_host=f"{emulator.host}:{emulator.port}", **kwargs
    )
    return client, recorder


def test_status_lookup_of_a_new_device_is_none_with_a_valid_sas(emulator):
    client, recorder = device_client(emulator, "unit-new-1", sas_ttl=60)
    before = int(time.time())
    assert client.status_lookup() is None  # DPS: 404, the device never registered
    call = recorder.calls[0]
    assert call["method"] == "POST"
    assert call["url"] == (
        f"https://{emulator.host}:{emulator.port}/{ID_SCOPE}/registrations/unit-new-1?api-version=2021-06-01"
    )
    assert call["data"] == b'{"registrationId": "unit-new-1"}'
    assert call["headers"]["Content-Type"] == "application/json; charset=utf-8"
    assert call["headers"]["Accept"] == "application/json"
    assert "iotfleet.aziot" in call["headers"]["User-Agent"]
    # the emulator accepted the SAS (else 401); its expiry is the ttl from now
    token = urllib.parse.parse_qs(call["headers"]["Authorization"].split(" ", 1)[1])
    assert before + 60 <= int(token["se"][0]) <= int(time.time()) + 60
    assert token["skn"] == ["registration"]


def test_refusal_becomes_dps_error_with_dps_fields(emulator):
    client, _ = device_client(emulator, "unit-wrong-key", device_key=device_key("someone-else"))
    with pytest.raises(DpsError) as caught:
        client.status_lookup()
    error = caught.value
    assert (error.status, error.error_code) == (401, 401002)
    assert error.tracking_id
    assert "unit-wrong-key" in error.message
    assert not error.timed_out


def test_register_polls_until_assigned_honouring_retry_after(faults):
    faults.set_faults([{"type": "drop", "count": 1, "endpoint": "operation", "registration_id": "unit-reg-1"}])
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    client, recorder = device_client(faults, "unit-reg-1", sleep=sleep)
    operation = client.register({"site": "lab"})
    assert operation["status"] == "assigned"
    state = operation["registrationState"]
    assert (state["assignedHub"], state["deviceId"], state["substatus"]) == (HUB, "unit-reg-1", "initialAssignment")
    assert recorder.calls[0]["method"] == "PUT"
    assert recorder.calls[0]["url"].split("?")[0].endswith(f"/{ID_SCOPE}/registrations/unit-reg-1/register")
    assert recorder.calls[0]["data"] == b'{"registrationId": "unit-reg-1", "payload": {"site": "lab"}}'
    # the emulator's Retry-After (1 s), then the dropped poll backed off 1 s, then the answer
    assert [call["method"] for call in recorder.calls[1:]] == ["GET", "GET"]
    assert "/registrations/unit-reg-1/operations/" in recorder.calls[1]["url"]
    assert slept == [1.0, 1.0]
    assert any(device["registrationId"] == "unit-reg-1" for device in faults.devices())
    assert client.status_lookup()["status"] == "assigned"


def test_register_x509_group_device(emulator, pki):
    device = pki.device("unit-x509-1")
    client, recorder = device_client(emulator, "unit-x509-1", cert=device.full(), sleep=FakeClock().sleep)
    assert client.register()["registrationState"]["assignedHub"] == HUB
    assert "Authorization" not in recorder.calls[0]["headers"]
    leaf_only, _ = device_client(emulator, "unit-x509-1", cert=device.leaf_only())
    with pytest.raises(DpsError) as caught:
        leaf_only.status_lookup()
    assert (caught.value.status, caught.value.error_code) == (401, 401002)


def test_retries_429_500_and_dropped_connections(faults):
    for fault in ({"type": "throttle", "retry_after": 7}, {"type": "error"}, {"type": "drop"}):
        faults.set_faults([dict(fault, count=1, endpoint="status", registration_id="unit-retry-1")])
    clock = FakeClock()
    logged: list[str] = []
    client, _ = device_client(faults, "unit-retry-1", clock=clock, sleep=clock.sleep, log=logged.append)
    assert client.status_lookup() is None
    assert clock.sleeps == [7.0, 2.0, 4.0]
    assert (client.attempts, client.retries) == (4, 3)
    assert len(logged) == 3
    assert "HTTP 429" in logged[0] and "HTTP 500" in logged[1]


def test_retries_stop_at_the_deadline(faults):
    faults.set_faults([{"type": "throttle", "retry_after": 30, "endpoint": "status"}])
    clock = FakeClock()
    client, _ = device_client(faults, "unit-deadline-1", clock=clock, sleep=clock.sleep, timeout=70)
    with pytest.raises(DpsError) as caught:
        client.status_lookup()
    assert caught.value.timed_out
    assert "within timeout=70s" in str(caught.value)
    assert "HTTP 429" in str(caught.value)
    assert clock.now - 1000.0 <= 70
    assert client.attempts == 3


def test_request_timeout_never_exceeds_remaining_time(faults):
    faults.set_faults([{"type": "error", "count": 1, "endpoint": "status"}])
    clock = FakeClock()
    client, recorder = device_client(
        faults, "unit-timeout-1", clock=clock, sleep=clock.sleep, timeout=10, request_timeout=30
    )
    assert client.status_lookup() is None
    assert [call["timeout"] for call in recorder.calls] == [10, 9]


def test_polling_times_out_with_last_status(dps_emulator_factory, pki):
    slow = fleet_config(ID_SCOPE, HUB, pki.root_path, GROUP_KEY, prefix="unit")
    slow["defaults"] = {"assignment_delay": 600, "retry_after": 5}
    emulator = dps_emulator_factory(slow, name="dps-slow")
    clock = FakeClock()
    client, _ = device_client(emulator, "unit-slow-1", clock=clock, sleep=clock.sleep, timeout=12)
    with pytest.raises(DpsError) as caught:
        client.register()
    message = str(caught.value)
    assert "within timeout=12s" in message
    assert "still assigning" in message
    assert clock.now - 1000.0 <= 12


# --- the service client ---------------------------------------------------------------------------------------
def service_client(emulator, policy="provisioningserviceowner", key=OWNER_KEY, **kwargs):
    connection_string = f"HostName={emulator.host}:{emulator.port};SharedAccessKeyName={policy};SharedAccessKey={key}"
    recorder = Recorder(urls_transport("iotfleet.aziot-tests", ca_path=emulator.ca_cert))
    client = DpsServiceClient(
        _dps_service.parse_connection_string(connection_string), recorder, "enrollment group fleet", **kwargs
    )
    return client, recorder


def symmetric_group(group_id: str, **fields) -> dict:
    return {"enrollmentGroupId": group_id, "attestation": {"type": "symmetricKey"}, **fields}


def test_get_shape_and_404(emulator):
    client, recorder = service_client(emulator)
    record = client.get(ENROLLMENT_GROUPS, "unit-sym")
    assert record["enrollmentGroupId"] == "unit-sym" and record["etag"]
    assert client.get(ENROLLMENTS, "unit-svc-nobody") is None  # 404201
    assert client.get(ENROLLMENT_GROUPS, "unit-svc-no-group") is None  # 404204
    first = recorder.calls[0]
    assert first["method"] == "GET"
    assert first["url"] == f"{emulator.url}/enrollmentGroups/unit-sym?api-version=2021-10-01"
    assert first["headers"]["Accept"] == "application/json"
    assert "Content-Type" not in first["headers"] and "If-Match" not in first["headers"]


def test_put_create_update_and_etags(emulator):
    client, recorder = service_client(emulator)
    created = client.put(ENROLLMENT_GROUPS, "unit-svc-put-1", symmetric_group("unit-svc-put-1"), None)
    assert "If-Match" not in recorder.calls[-1]["headers"]
    assert recorder.calls[-1]["headers"]["Content-Type"] == "application/json; charset=utf-8"
    keys = created["attestation"]["symmetricKey"]  # the create answer carries the keys DPS generated
    assert set(keys) == {"primaryKey", "secondaryKey"}
    body = symmetric_group("unit-svc-put-1", provisioningStatus="disabled")
    body["attestation"]["symmetricKey"] = keys
    updated = client.put(ENROLLMENT_GROUPS, "unit-svc-put-1", body, f'"{created["etag"]}"')
    assert updated["provisioningStatus"] == "disabled" and updated["etag"] != created["etag"]
    assert recorder.calls[-1]["headers"]["If-Match"] == f'"{created["etag"]}"'
    # a stale etag, and a create that finds the record already there (a race), are precondition failures
    with pytest.raises(PreconditionFailed):
        client.put(ENROLLMENT_GROUPS, "unit-svc-put-1", body, created["etag"])
    with pytest.raises(PreconditionFailed):
        client.put(ENROLLMENT_GROUPS, "unit-svc-put-1", body, None)
    assert client.attestation_mechanism(ENROLLMENT_GROUPS, "unit-svc-put-1") == {
        "type": "symmetricKey",
        "symmetricKey": keys,
    }
    assert recorder.calls[-1]["method"] == "POST"
    assert recorder.calls[-1]["url"] == (
        f"{emulator.url}/enrollmentGroups/unit-svc-put-1/attestationmechanism?api-version=2021-10-01"
    )


def test_delete(emulator):
    client, recorder = service_client(emulator)
    created = client.put(
        ENROLLMENTS,
        "unit-svc-del-1",
        {"registrationId": "unit-svc-del-1", "attestation": {"type": "symmetricKey"}},
        None,
    )
    with pytest.raises(PreconditionFailed):
        client.delete(ENROLLMENTS, "unit-svc-del-1", '"c3RhbGU="')
    assert client.delete(ENROLLMENTS, "unit-svc-del-1", f'"{created["etag"]}"') is True
    assert recorder.calls[-1]["method"] == "DELETE"
    assert recorder.calls[-1]["headers"]["If-Match"] == f'"{created["etag"]}"'
    assert recorder.calls[-1]["url"] == f"{emulator.url}/enrollments/unit-svc-del-1?api-version=2021-10-01"
    assert client.delete(ENROLLMENTS, "unit-svc-del-1", None) is False  # already gone: 404
    assert client.delete(REGISTRATIONS, "unit-svc-never-registered", None) is False


def test_query_follows_continuation_tokens(emulator):
    for name in ("unit-svc-q-a", "unit-svc-q-b", "unit-svc-q-c"):
        device, _ = device_client(emulator, name, device_key=device_key(name), sleep=FakeClock().sleep)
        assert device.register()["status"] == "assigned"
    client, recorder = service_client(emulator)
    records = client.query_registrations("unit-sym", page_size=2)
    assert {"unit-svc-q-a", "unit-svc-q-b", "unit-svc-q-c"} <= {record["registrationId"] for record in records}
    pages = recorder.calls
    assert len(pages) >= 2 and all(call["method"] == "POST" for call in pages)
    assert pages[0]["url"] == f"{emulator.url}/registrations/unit-sym/query?api-version=2021-10-01"
    assert pages[0]["headers"].get("x-ms-continuation") is None and pages[1]["headers"]["x-ms-continuation"]
    assert {call["headers"]["x-ms-max-item-count"] for call in pages} == {"2"}
    assert pages[0]["data"] is None  # service.json: this query takes no body
    groups = client.query_enrollments(ENROLLMENT_GROUPS)
    assert {"unit-sym", "unit-x509"} <= {group["enrollmentGroupId"] for group in groups}
    assert recorder.calls[-1]["url"] == f"{emulator.url}/enrollmentGroups/query?api-version=2021-10-01"


def test_429_and_dropped_connection_are_retried_within_the_deadline(faults):
    faults.set_faults([{"type": "throttle", "count": 1, "retry_after": 7, "endpoint": "enrollmentGroups"}])
    faults.set_faults([{"type": "drop", "count": 1, "endpoint": "enrollmentGroups"}])
    clock = FakeClock(500.0)
    logged: list[str] = []
    client, _ = service_client(faults, clock=clock, sleep=clock.sleep, log=logged.append)
    assert client.get(ENROLLMENT_GROUPS, "unit-sym")["enrollmentGroupId"] == "unit-sym"
    assert clock.sleeps == [7.0, 2.0]
    assert (client.attempts, client.retries) == (3, 2)
    assert (
        logged[0]
        == "dps_enrollment enrollment group fleet: read enrollment group unit-sym got HTTP 429; retry 1 in 7.0s"
    )


def test_retry_after_beyond_the_deadline_is_not_waited_for(faults):
    faults.set_faults([{"type": "throttle", "retry_after": 20, "endpoint": "service"}])
    clock = FakeClock(500.0)
    client, _ = service_client(faults, clock=clock, sleep=clock.sleep, timeout=30)
    with pytest.raises(DpsError) as caught:
        client.get(ENROLLMENT_GROUPS, "unit-sym")
    assert caught.value.timed_out
    assert clock.sleeps == [20.0]  # the second 20 s wait would end after the 30 s deadline
    assert "enrollment group fleet: DPS did not finish within timeout=30s" in str(caught.value)
    assert "HTTP 429" in str(caught.value)


def test_4xx_is_returned_not_retried(emulator):
    client, _ = service_client(emulator)
    with pytest.raises(ServiceError) as caught:
        client.put(ENROLLMENT_GROUPS, "unit-svc-bad", {"enrollmentGroupId": "unit-svc-bad"}, None)  # no attestation
    assert (caught.value.status, caught.value.error_code, client.retries) == (400, 400001, 0)


def _explain(client, error, iot_hubs=None):
    return _dps_service.explain_service_error(error, "enrollment group fleet", client.credentials, iot_hubs)


def test_401_on_the_first_request_is_the_key_or_the_clock(emulator):
    client, _ = service_client(emulator, key=READER_KEY)  # the owner policy, the wrong key
    with pytest.raises(ServiceError) as caught:
        client.get(ENROLLMENT_GROUPS, "unit-sym")
    assert caught.value.error_code == 401002 and caught.value.tracking_id
    assert _explain(client, caught.value).startswith(
        "enrollment group fleet: the DPS refused the shared access signature: check SharedAccessKey of policy "
        "provisioningserviceowner and the controller clock, and that the policy has EnrollmentRead (HTTP 401 (401002): "
    )


def test_401_after_a_successful_read_is_a_missing_permission(emulator):
    client, _ = service_client(emulator, policy="enrollmentread", key=READER_KEY)
    record = client.get(ENROLLMENT_GROUPS, "unit-sym")
    with pytest.raises(ServiceError) as caught:
        client.put(ENROLLMENT_GROUPS, "unit-sym", record, record["etag"])
    assert _explain(client, caught.value).startswith(
        "enrollment group fleet: policy enrollmentread may not update enrollment group unit-sym: give it the "
        "EnrollmentWrite permission (DPS > Shared access policies) or use a policy that has it (HTTP 401 (401002): "
    )


def test_400_about_a_hub_names_iot_hubs(emulator):
    client, _ = service_client(emulator)
    body = symmetric_group("unit-svc-hub", iotHubs=["nope.azure-devices.net"])
    with pytest.raises(ServiceError) as caught:
        client.put(ENROLLMENT_GROUPS, "unit-svc-hub", body, None)
    assert _explain(client, caught.value, ["nope.azure-devices.net"]).startswith(
        "enrollment group fleet: DPS does not accept iot_hubs nope.azure-devices.net: every hub must be linked to "
        "this DPS (portal: Linked IoT hubs; az iot dps linked-hub list) (HTTP 400 (400001): "
    )
    assert "iot_hubs" not in _explain(client, caught.value, None)
