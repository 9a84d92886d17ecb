"""Unit tests for the DPS device client's pure parts, and scripted replies only for what the emulator cannot produce
(a 200 to a register, a failed assignment, urllib's errors); the client's exchanges with a DPS are checked against
the emulator in test_dps_against_emulator.py."""

from __future__ import annotations

import base64
import email.message
import hashlib
import hmac
import http.client
import io
import ssl
import urllib.error
import urllib.parse

import pytest

from ansible_collections.iotfleet.aziot.plugins.module_utils import _dps, _http, _x509_der
from ansible_collections.iotfleet.aziot.plugins.module_utils._dps import DpsClient, DpsError
from ansible_collections.iotfleet.aziot.plugins.module_utils._http import TransportError
from tests.support.dps_fakes import FakeClock, FakeTransport, reply

GROUP_KEY = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
SCOPE = "0ne00000A1B"
REG_ID = "pi-0042"


def make_client(transport, clock=None, **kwargs) -> DpsClient:
    clock = clock or FakeClock()
    kwargs.setdefault("timeout", 120)
    return DpsClient(
        SCOPE,
        REG_ID,
        transport,
        provisioning_host=kwargs.pop("provisioning_host", "dps.example:8443"),
        clock=clock,
        wall_clock=lambda: 1700000000.0,
        sleep=clock.sleep,
        **kwargs,
    )


ASSIGNED_STATE = {
    "registrationId": REG_ID,
    "status": "assigned",
    "substatus": "initialAssignment",
    "assignedHub": "hub.example",
    "deviceId": REG_ID,
}


# --- SAS and keys ---------------------------------------------------------------------------------------------------


def test_sas_token_known_answer():
    device_key = base64.b64encode(b"device-secret-key-material-32byt").decode()
    expiry = 1700003600
    resource = "0ne00000A1B%2Fregistrations%2Fpi%3A0042"  # url-encoded by hand, ':' and '/' escaped
    expected_sig = base64.b64encode(
        hmac.new(b"device-secret-key-material-32byt", (resource + "\n1700003600").encode(), hashlib.sha256).digest()
    ).decode()
    token = _dps.sas_token(SCOPE, "pi:0042", device_key, expiry)
    assert token == "SharedAccessSignature sr=%s&sig=%s&se=1700003600&skn=registration" % (
        resource,
        urllib.parse.quote(expected_sig, safe=""),
    )


def test_derive_device_key_known_answer():
    expected = base64.b64encode(
        hmac.new(b"0123456789abcdef0123456789abcdef", b"pi-0042", hashlib.sha256).digest()
    ).decode()
    assert _dps.derive_device_key(GROUP_KEY, "pi-0042") == expected
    assert _dps.derive_device_key(GROUP_KEY, "pi-0043") != expected


def test_bad_key_is_a_clear_error():
    with pytest.raises(ValueError, match="group_key is not valid base64"):
        _dps.derive_device_key("not base64!!", REG_ID)


# --- provisioning host ----------------------------------------------------------------------------------------------


def test_split_provisioning_host():
    assert _dps.split_provisioning_host("global.azure-devices-provisioning.net") == (
        "global.azure-devices-provisioning.net",
        443,
    )
    assert _dps.split_provisioning_host("127.0.0.1:8443") == ("127.0.0.1", 8443)
    assert _dps.split_provisioning_host("https://dps.example:9/") == ("dps.example", 9)
    with pytest.raises(ValueError, match="invalid port"):
        _dps.split_provisioning_host("dps.example:http")
    with pytest.raises(ValueError, match="host name"):
        _dps.split_provisioning_host("dps.example/path")


# --- Retry-After and backoff ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [("3", 3.0), ("0", 1.0), ("-5", 1.0), ("600", 30.0), ("2.5", 2.5), ("soon", None), (None, None)],
)
def test_retry_after_clamped(header, expected):
    assert _http.parse_retry_after(header) == expected


def test_retry_after_http_date():
    assert _http.parse_retry_after("Tue, 14 Nov 2023 22:13:25 GMT", now=1700000000.0) == 5.0


def test_backoff_exponential_and_bounded():
    assert [_http.backoff_delay(n, None) for n in (1, 2, 3, 4, 5, 6, 9)] == [1, 2, 4, 8, 16, 30, 30]
    assert _http.backoff_delay(3, 7.0) == 7.0


# --- registration and polling -------------------------------------------------------------------------------------


def test_register_200_is_final():
    transport = FakeTransport(reply(200, {"operationId": "op", "status": "assigned", "registrationState": {}}))
    assert make_client(transport).register()["status"] == "assigned"
    assert transport.calls[0]["body"] == {"registrationId": REG_ID}


def test_failed_status_is_returned_for_the_caller():
    failed = {"operationId": "op", "status": "failed", "registrationState": {"status": "failed", "errorCode": 400209}}
    transport = FakeTransport(reply(202, {"operationId": "op", "status": "assigning"}), reply(200, failed))
    assert make_client(transport).register()["registrationState"]["errorCode"] == 400209


# --- idempotence --------------------------------------------------------------------------------------------------


def test_is_already_assigned_x509_by_thumbprint():
    prints = _x509_der.thumbprints(b"leaf der")
    state = dict(ASSIGNED_STATE, x509={"certificateInfo": {"sha1Thumbprint": prints["sha1"].lower()}})
    assert _dps.is_already_assigned(state, "x509", prints)
    state256 = dict(ASSIGNED_STATE, x509={"certificateInfo": {"sha256Thumbprint": prints["sha256"]}})
    assert _dps.is_already_assigned(state256, "x509", prints)
    assert not _dps.is_already_assigned(state, "x509", _x509_der.thumbprints(b"renewed leaf"))
    assert not _dps.is_already_assigned(dict(state, status="failed"), "x509", prints)
    assert not _dps.is_already_assigned(None, "x509", prints)
    assert not _dps.is_already_assigned(state, "symmetric_key", None)


def test_is_already_assigned_symmetric_key():
    state = dict(ASSIGNED_STATE, symmetricKey={"enrollmentGroupId": "g"})
    assert _dps.is_already_assigned(state, "symmetric_key", None)
    assert not _dps.is_already_assigned(dict(state, status="assigning"), "symmetric_key", None)


# --- certificates -------------------------------------------------------------------------------------------------


def _make_chain(tmp_path, cn: str) -> tuple[str, bytes]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        )
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), cert.public_bytes(serialization.Encoding.DER)


def test_pem_parsing_cn_and_thumbprints(tmp_path):
    pem1, der1 = _make_chain(tmp_path, "pi-0042")
    pem2, der2 = _make_chain(tmp_path, "Intermediate CA")
    chain = _x509_der.pem_certificates(pem1 + "\n" + pem2)
    assert chain == [der1, der2]
    assert _x509_der.certificate_common_name(der1) == "pi-0042"
    assert _x509_der.certificate_common_name(der2) == "Intermediate CA"
    assert _x509_der.certificate_common_name(b"\x30\x03garbage") is None
    assert _x509_der.thumbprints(der1)["sha256"] == hashlib.sha256(der1).hexdigest().upper()


# --- error explanations -------------------------------------------------------------------------------------------


def test_explain_leaf_only_chain():
    error = DpsError("pi-0042: register failed: HTTP 401 (401002): CA certificate not found", 401, 401002)
    message = _dps.explain_error(error, REG_ID, "x509", chain_length=1)
    assert message == (
        "pi-0042: DPS refused the certificate (401002): the chain you sent stops at the device certificate; "
        "send the full chain (device + intermediate) in client_cert"
    )
    assert "full chain" not in _dps.explain_error(error, REG_ID, "x509", chain_length=2)


def test_explain_disabled_sas_and_timeout():
    disabled = DpsError(
        "pi-0042: register failed: HTTP 401 (401003): Enrollment is disabled",
        401,
        401003,
        detail="Enrollment is disabled",
    )
    assert _dps.explain_error(disabled, REG_ID, "x509", 2).startswith("pi-0042: enrollment is disabled in DPS")
    sas = DpsError(
        "pi-0042: status lookup failed: HTTP 401 (401002): bad signature", 401, 401002, detail="bad signature"
    )
    assert "refused the SAS token (401002): bad signature" in _dps.explain_error(sas, REG_ID, "symmetric_key")
    timeout = DpsError("pi-0042: DPS did not finish within timeout=5s", timed_out=True)
    assert _dps.explain_error(timeout, REG_ID, "x509", 2) == timeout.message
    version = DpsError("pi-0042: register failed: HTTP 400 (400004): bad", 400, 400004)
    assert "api_version" in _dps.explain_error(version, REG_ID, "x509", 2)


# --- urls transport (ansible.module_utils.urls.Request, its open() faked) -------------------------------------------


class FakeRequest:
    def __init__(self, outcome) -> None:
        self.outcome = outcome
        self.kwargs: dict = {}

    def open(self, method, url, **kwargs):
        self.kwargs = kwargs
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def _transport_with(monkeypatch, outcome):
    fake = FakeRequest(outcome)
    created: dict = {}

    def factory(**kwargs):
        created.update(kwargs)
        return fake

    monkeypatch.setattr(_http, "Request", factory)
    send = _http.urls_transport(
        _dps.USER_AGENT, client_cert="/c.pem", client_key="/k.pem", ca_path="/ca.pem", validate_certs=True
    )
    return send, fake, created


def test_urls_transport_maps_http_errors_to_responses(monkeypatch):
    headers = email.message.Message()
    headers["Retry-After"] = "4"
    error = urllib.error.HTTPError("https://x", 429, "Too Many", headers, io.BytesIO(b'{"errorCode": 429001}'))
    send, fake, created = _transport_with(monkeypatch, error)
    response = send("PUT", "https://x/y", b"{}", {"Accept": "application/json"}, 7.0)
    assert (response.status, response.headers["retry-after"], response.json) == (429, "4", {"errorCode": 429001})
    assert fake.kwargs["timeout"] == 7.0
    assert fake.kwargs["data"] == b"{}"
    assert (created["client_cert"], created["client_key"], created["ca_path"]) == ("/c.pem", "/k.pem", "/ca.pem")
    assert created["validate_certs"] is True


@pytest.mark.parametrize(
    "outcome",
    [
        urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")),
        http.client.RemoteDisconnected("Remote end closed connection without response"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError("timed out"),
    ],
)
def test_urls_transport_connection_failures_are_retryable(monkeypatch, outcome):
    send, _fake, _created = _transport_with(monkeypatch, outcome)
    with pytest.raises(TransportError):
        send("GET", "https://x/y", None, {}, 5.0)


def test_urls_transport_certificate_failure_is_not_retried(monkeypatch):
    failure = ssl.SSLCertVerificationError(1, "certificate verify failed")
    failure.verify_message = "self-signed certificate"
    send, _fake, _created = _transport_with(monkeypatch, urllib.error.URLError(failure))
    client = make_client(send)
    with pytest.raises(DpsError, match="server certificate did not verify \\(self-signed certificate\\); set ca_path"):
        client.status_lookup()
    assert client.retries == 0
