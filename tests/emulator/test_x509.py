"""X.509 attestation over real mutual TLS."""

from __future__ import annotations

from pathlib import Path

from .helpers import Client


def test_group_x509_assigned(emulator, devices):
    client = Client(emulator, cert=devices["group"].full())
    result = client.provision("dev-group-1", payload={"model": "rpi4"})
    assert result["status"] == "assigned"
    state = result["registrationState"]
    assert state["assignedHub"] == "hub-a.azure-devices.net"
    assert state["deviceId"] == "dev-group-1"
    assert state["substatus"] == "initialAssignment"
    assert state["payload"] == {"model": "rpi4"}
    info = state["x509"]["certificateInfo"]
    assert info["subjectName"] == "CN=dev-group-1"
    assert info["issuerName"] == "CN=Test Intermediate CA"
    assert info["sha1Thumbprint"] == info["sha1Thumbprint"].upper() and len(info["sha1Thumbprint"]) == 40
    assert state["x509"]["enrollmentGroupId"] == "fleet-x509"
    assert state["x509"]["signingCertificateInfo"]["subjectName"] == "CN=Test Intermediate CA"
    assert any(device["deviceId"] == "dev-group-1" for device in emulator.devices())


def _refused(response, *fragments: str) -> dict:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["errorCode"] == 401002
    assert set(body) >= {"errorCode", "trackingId", "message", "info", "timestampUtc"}
    for fragment in fragments:
        assert fragment in body["message"], body["message"]
    return body


def test_leaf_only_chain_refused(emulator, devices):
    response = Client(emulator, cert=devices["group2"].leaf_only()).register("dev-group-2")
    _refused(response, "CA certificate not found", "full chain")
    # the same device with its full chain is fine
    assert Client(emulator, cert=devices["group2"].full()).provision("dev-group-2")["status"] == "assigned"


def test_chain_including_root_accepted(emulator, devices, pki, tmp_path):
    chain = tmp_path / "with-root.pem"
    chain.write_bytes(Path(devices["group2"].chain_file).read_bytes() + (pki.directory / "root.pem").read_bytes())
    result = Client(emulator, cert=(str(chain), devices["group2"].key_file)).provision("dev-group-2")
    assert result["registrationState"]["x509"]["enrollmentGroupId"] == "fleet-x509"


def test_cn_mismatch_refused(emulator, devices):
    response = Client(emulator, cert=devices["group"].full()).register("dev-someone-else")
    _refused(response, "CN 'dev-group-1' does not match")


def test_unknown_ca_refused(emulator, devices):
    _refused(Client(emulator, cert=devices["unknown"].full()).register("dev-unknown"), "CA certificate not found")


def test_unverified_ca_refused(emulator, devices):
    _refused(Client(emulator, cert=devices["unverified"].full()).register("dev-unverified"), "is not verified")


def test_forged_signature_refused(emulator, devices):
    _refused(Client(emulator, cert=devices["forged"].full()).register("dev-forged"), "does not verify")


def test_expired_and_not_yet_valid_refused(emulator, devices):
    _refused(Client(emulator, cert=devices["expired"].full()).register("dev-expired"), "expired")
    _refused(Client(emulator, cert=devices["future"].full()).register("dev-future"), "not valid before")


def test_no_credentials_refused(emulator):
    _refused(Client(emulator).register("dev-group-1"), "no client certificate")


def test_individual_enrollment_wins_over_group(emulator, devices):
    # dev-individual-1 is signed by the group's CA too, but its individual enrollment pins hub-b
    result = Client(emulator, cert=devices["individual"].full()).provision("dev-individual-1")
    state = result["registrationState"]
    assert state["assignedHub"] == "hub-b.azure-devices.net"
    assert state["x509"]["enrollmentGroupId"] is None


def test_disabled_individual_enrollment(emulator, devices):
    result = Client(emulator, cert=devices["disabled"].full()).provision("dev-disabled")
    assert result["status"] == "disabled"
    assert "assignedHub" not in result["registrationState"]
    assert all(device["registrationId"] != "dev-disabled" for device in emulator.devices())


def test_reregistration_keeps_created_time_and_counts(emulator, devices):
    client = Client(emulator, cert=devices["group"].full())
    first = client.provision("dev-group-1")["registrationState"]
    second = client.provision("dev-group-1")["registrationState"]
    assert second["createdDateTimeUtc"] == first["createdDateTimeUtc"]
    assert second["etag"] != first["etag"]
    assert second["substatus"] == "initialAssignment"
    (device,) = [device for device in emulator.devices() if device["registrationId"] == "dev-group-1"]
    assert device["registrationCount"] >= 2
