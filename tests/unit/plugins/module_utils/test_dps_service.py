"""Unit tests for the DPS service API client's pure parts and the shared RetryLoop, with scripted replies only for
what the emulator cannot produce (a 403, a 409 on an update, a repeated continuation token, a 503 seen with a fake
wall clock); the client's exchanges with a DPS are checked against the emulator in test_dps_against_emulator.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import urllib.parse

import pytest

from ansible_collections.iotfleet.aziot.plugins.module_utils import _dps, _dps_service
from ansible_collections.iotfleet.aziot.plugins.module_utils._dps import DpsError
from ansible_collections.iotfleet.aziot.plugins.module_utils._dps_service import (
    ENROLLMENT_GROUPS,
    DpsServiceClient,
    PreconditionFailed,
    ServiceError,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._http import RetryLoop
from tests.support.dps_fakes import FakeClock, FakeTransport, reply

POLICY_KEY_BYTES = b"policy-key-material-0123456789ab"
POLICY_KEY = base64.b64encode(POLICY_KEY_BYTES).decode()
HOST = "contoso-dps.azure-devices-provisioning.net"
CONNECTION_STRING = f"HostName={HOST};SharedAccessKeyName=provisioningserviceowner;SharedAccessKey={POLICY_KEY}"
WALL = 1700000000.0


def make_client(transport, clock=None, wall=None, **kwargs) -> DpsServiceClient:
    clock = clock or FakeClock(500.0)
    return DpsServiceClient(
        _dps_service.parse_connection_string(CONNECTION_STRING),
        transport,
        "enrollment group fleet",
        clock=clock,
        wall_clock=wall or (lambda: WALL),
        sleep=clock.sleep,
        **kwargs,
    )


# --- SAS token ----------------------------------------------------------------------------------------------------


def test_service_sas_token_against_an_independent_computation():
    # Computed by hand: sr is the lower-cased host, url-encoded (':' -> %3A); sig is base64 HMAC-SHA256 of
    # sr + "\n" + se with the base64-decoded key, url-encoded; skn is the policy name.
    expiry = 1700000300
    resource = "my-dps.example%3A8443"
    digest = hmac.new(POLICY_KEY_BYTES, f"{resource}\n{expiry}".encode(), hashlib.sha256).digest()
    signature = base64.b64encode(digest).decode()
    expected = (
        f"SharedAccessSignature sr={resource}&sig={urllib.parse.quote(signature, safe='')}&se={expiry}"
        "&skn=provisioningserviceowner"
    )
    assert _dps_service.service_sas_token("My-DPS.example:8443", "provisioningserviceowner", POLICY_KEY, expiry) == (
        expected
    )


def test_service_sas_token_matches_the_python_sdk_algorithm():
    # azure-iot-common sastoken.py: quote_plus(uri), message uri + "\n" + expiry, quote(base64 signature).
    expiry = 1700000300
    uri = urllib.parse.quote_plus(HOST)
    sdk_signature = urllib.parse.quote(
        base64.b64encode(hmac.new(POLICY_KEY_BYTES, f"{uri}\n{expiry}".encode(), hashlib.sha256).digest())
    )
    token = _dps_service.service_sas_token(HOST, "provisioningserviceowner", POLICY_KEY, expiry)
    fields = dict(part.split("=", 1) for part in token.removeprefix("SharedAccessSignature ").split("&"))
    assert fields["sr"] == uri
    assert urllib.parse.unquote(fields["sig"]) == urllib.parse.unquote(sdk_signature)
    assert (fields["se"], fields["skn"]) == (str(expiry), "provisioningserviceowner")


def test_a_different_key_gives_a_different_signature():
    other = base64.b64encode(b"another-key-material-0123456789a").decode()
    assert _dps_service.service_sas_token(HOST, "p", POLICY_KEY, 1) != _dps_service.service_sas_token(
        HOST, "p", other, 1
    )


def test_each_attempt_gets_a_fresh_short_lived_token():
    clock = FakeClock(500.0)
    wall = iter([WALL, WALL, WALL + 7, WALL + 7])
    transport = FakeTransport(reply(503, {}, Retry_After=2), reply(200, {"enrollmentGroupId": "fleet"}))
    client = make_client(transport, clock=clock, wall=lambda: next(wall))
    client.get(ENROLLMENT_GROUPS, "fleet")
    first, second = (call["headers"]["Authorization"] for call in transport.calls)
    assert f"se={int(WALL) + 300}&" in first
    assert f"se={int(WALL) + 7 + 300}&" in second
    assert first.endswith("&skn=provisioningserviceowner")


# --- connection strings -------------------------------------------------------------------------------------------


def test_parse_connection_string():
    credentials = _dps_service.parse_connection_string(CONNECTION_STRING + ";")
    assert (credentials.host_name, credentials.base_url, credentials.policy_name, credentials.policy_key) == (
        HOST,
        f"https://{HOST}",
        "provisioningserviceowner",
        POLICY_KEY,
    )
    assert POLICY_KEY not in repr(credentials)
    emulator = _dps_service.parse_connection_string(
        f"HostName=127.0.0.1:8443;SharedAccessKeyName=p;SharedAccessKey={POLICY_KEY}"
    )
    assert (emulator.host_name, emulator.base_url) == ("127.0.0.1:8443", "https://127.0.0.1:8443")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (f"SharedAccessKeyName=p;SharedAccessKey={POLICY_KEY}", "connection_string has no HostName;"),
        (f"HostName={HOST};SharedAccessKey={POLICY_KEY}", "connection_string has no SharedAccessKeyName;"),
        (f"HostName={HOST};SharedAccessKeyName=p", "connection_string has no SharedAccessKey;"),
        (f"HostName={HOST};SharedAccessKeyName=p;SharedAccessKey=", "connection_string has no SharedAccessKey;"),
        (f"{HOST};SharedAccessKeyName=p;SharedAccessKey={POLICY_KEY}", "connection_string is malformed"),
        (f"HostName={HOST};DeviceId=pi;SharedAccessKey={POLICY_KEY}", "is a device connection string"),
        (f"Endpoint=sb://x/;SharedAccessKeyName=p;SharedAccessKey={POLICY_KEY}", "unexpected field 'Endpoint'"),
        (
            f"HostName=hub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey={POLICY_KEY}",
            "is an IoT Hub, not a DPS",
        ),
        (f"HostName={HOST};SharedAccessKeyName=p;SharedAccessKey=not*base64", "SharedAccessKey in connection_string"),
        (f"HostName={HOST}/x;SharedAccessKeyName=p;SharedAccessKey={POLICY_KEY}", "must be a host name"),
    ],
)
def test_malformed_connection_strings_are_one_line_errors_without_the_key(value, message):
    with pytest.raises(ValueError) as caught:
        _dps_service.parse_connection_string(value)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert POLICY_KEY not in str(caught.value)


def test_credentials_from_separate_options():
    params = dict(connection_string=None, service_host=f"https://{HOST}/", policy_name="reader", policy_key=POLICY_KEY)
    credentials = _dps_service.credentials_from_params(params)
    assert (credentials.host_name, credentials.policy_name, credentials.key_option) == (HOST, "reader", "policy_key")
    with pytest.raises(ValueError, match="policy_key is not valid base64"):
        _dps_service.credentials_from_params(dict(params, policy_key="%%%"))


# --- requests -----------------------------------------------------------------------------------------------------


def test_put_409_on_update_is_an_ordinary_error():
    client = make_client(FakeTransport(reply(409, {"errorCode": 409000, "message": "conflict"})))
    with pytest.raises(ServiceError) as caught:
        client.put(ENROLLMENT_GROUPS, "fleet", {}, '"e"')
    assert not isinstance(caught.value, PreconditionFailed)


def test_query_enrollments_path_and_repeated_token_stops():
    transport = FakeTransport(
        reply(200, [{"enrollmentGroupId": "a"}], x_ms_continuation="same"),
        reply(200, [{"enrollmentGroupId": "b"}], x_ms_continuation="same"),
    )
    client = make_client(transport)
    with pytest.raises(ServiceError, match="same continuation token twice"):
        client.query_enrollments(ENROLLMENT_GROUPS)
    assert transport.calls[0]["url"] == f"https://{HOST}/enrollmentGroups/query?api-version=2021-10-01"
    assert transport.calls[0]["body"] == {"query": "select * from enrollmentGroups"}


# --- the shared retry loop ----------------------------------------------------------------------------------------


def test_retry_loop_is_the_one_both_clients_use():
    assert isinstance(make_client(FakeTransport()).retry, RetryLoop)
    device = _dps.DpsClient("0ne00000001", "pi-1", FakeTransport())
    assert isinstance(device.retry, RetryLoop)


def test_retry_loop_wait_stops_at_the_deadline():
    clock = FakeClock(500.0)
    loop = RetryLoop(FakeTransport(), "x", 10, 5, clock=clock, sleep=clock.sleep, service="DPS", error_type=DpsError)
    loop.wait(4, "polling")
    with pytest.raises(DpsError, match=r"x: DPS did not finish within timeout=10s \(still polling; 0 requests"):
        loop.wait(6, "still polling")
    assert clock.sleeps == [4]


# --- error explanations -------------------------------------------------------------------------------------------


def _explain(error, iot_hubs=None, connection_string=CONNECTION_STRING):
    credentials = _dps_service.parse_connection_string(connection_string)
    return _dps_service.explain_service_error(error, "enrollment group fleet", credentials, iot_hubs)


def _refused(*script, method="get"):
    client = make_client(FakeTransport(*script))
    with pytest.raises(ServiceError) as caught:
        if method == "get":
            client.get(ENROLLMENT_GROUPS, "fleet")
        else:
            client.get(ENROLLMENT_GROUPS, "fleet")
            client.put(ENROLLMENT_GROUPS, "fleet", {}, '"e"')
    return caught.value


def test_403_is_a_missing_permission():
    error = _refused(reply(403, {"message": "Forbidden"}))
    assert _explain(error).startswith(
        "enrollment group fleet: policy provisioningserviceowner may not read enrollment group fleet: give it the "
        "EnrollmentRead permission"
    )


def test_other_errors_name_the_action():
    error = _refused(reply(400, {"errorCode": 400004, "message": "bad api-version"}))
    assert "does not support api-version 2021-10-01" in _explain(error)
    error = _refused(reply(400, {"errorCode": 400027, "message": "invalid certificate"}))
    assert _explain(error) == (
        "enrollment group fleet: DPS refused to read enrollment group fleet (HTTP 400 (400027): invalid certificate)"
    )


def test_policy_key_option_is_named_when_given_separately():
    credentials = _dps_service.credentials_from_params(
        dict(connection_string=None, service_host=HOST, policy_name="writer", policy_key=POLICY_KEY)
    )
    error = _refused(reply(401, {}))
    assert "check policy_key of policy writer" in _dps_service.explain_service_error(error, "x", credentials)


# --- masking ------------------------------------------------------------------------------------------------------


def test_mask_record():
    record = {
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "k1", "secondaryKey": "k2"}},
        "customAllocationDefinition": {"webhookUrl": "https://f.example/api/alloc?code=secret", "apiVersion": "v"},
        "registrationState": {"tpm": {"authenticationKey": "tpmsecret"}},
    }
    masked = _dps_service.mask_record(record)
    text = json.dumps(masked)
    for secret in ("k1", "k2", "code=secret", "tpmsecret"):
        assert secret not in text
    assert masked["customAllocationDefinition"]["webhookUrl"] == "https://f.example/api/alloc?********"
    assert record["attestation"]["symmetricKey"]["primaryKey"] == "k1"  # the original is left alone
