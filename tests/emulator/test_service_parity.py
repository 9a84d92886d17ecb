"""Where the emulator's service API must answer as DPS does, as Microsoft's clients see it (issue 19, fault 9).

Sources: Microsoft's C# service SDK end-to-end tests (a missing individual enrollment is errorCode 404201, a
missing enrollment group 404204); the Azure CLI IoT extension (`az iot dps enrollment create` without keys reads
the generated keys from the PUT answer; `show --show-keys` reads them from attestationmechanism, so a GET has
none); Microsoft's Node service client (`getEnrollmentGroupAttestationMechanism` posts to
`/enrollmentgroups/{id}/attestationmechanism`, lower case).
"""

from __future__ import annotations

import base64

import pytest
import requests

from .helpers import ServiceClient, symmetric_group, symmetric_individual

INDIVIDUAL_NOT_FOUND = 404201
GROUP_NOT_FOUND = 404204


def _error_code(response: requests.Response, status: int) -> int:
    assert response.status_code == status, response.text
    return response.json()["errorCode"]


@pytest.mark.parametrize(
    ("collection", "code"), [("/enrollments", INDIVIDUAL_NOT_FOUND), ("/enrollmentGroups", GROUP_NOT_FOUND)]
)
def test_missing_record_error_codes(emulator, collection, code):
    service = ServiceClient(emulator)
    path = f"{collection}/parity-never-created"
    assert _error_code(service.get(path), 404) == code
    assert _error_code(service.delete(path), 404) == code
    assert _error_code(service.post(f"{path}/attestationmechanism"), 404) == code


@pytest.mark.parametrize(
    ("collection", "items", "body", "code"),
    [
        ("/enrollments", "enrollments", symmetric_individual("parity-bulk-missing"), INDIVIDUAL_NOT_FOUND),
        ("/enrollmentGroups", "enrollmentGroups", symmetric_group("parity-bulk-missing"), GROUP_NOT_FOUND),
    ],
)
def test_bulk_missing_record_error_codes(emulator, collection, items, body, code):
    service = ServiceClient(emulator)
    for mode, item in (("delete", body), ("updateIfMatchETag", dict(body, etag="c3RhbGU="))):
        result = service.post(collection, {"mode": mode, items: [item]}).json()
        assert [error["errorCode"] for error in result["errors"]] == [code], (mode, result)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/enrollments/parity-keys-dev", symmetric_individual("parity-keys-dev")),
        ("/enrollmentGroups/parity-keys-group", symmetric_group("parity-keys-group")),
    ],
)
def test_generated_keys_are_in_the_create_answer(emulator, path, body):
    service = ServiceClient(emulator)
    created = service.put(path, body)
    assert created.status_code == 200, created.text
    keys = created.json()["attestation"]["symmetricKey"]
    assert set(keys) == {"primaryKey", "secondaryKey"}
    assert len(base64.b64decode(keys["primaryKey"], validate=True)) == 64
    assert len(base64.b64decode(keys["secondaryKey"], validate=True)) == 64
    assert keys["primaryKey"] != keys["secondaryKey"]
    # kept: attestationmechanism answers the same keys, and an update answer carries them too
    mechanism = service.post(f"{path}/attestationmechanism").json()
    assert mechanism == {"type": "symmetricKey", "symmetricKey": keys}
    update = dict(body, attestation={"type": "symmetricKey", "symmetricKey": keys}, provisioningStatus="disabled")
    updated = service.put(path, update, if_match="*")
    assert updated.json()["attestation"]["symmetricKey"] == keys
    # a GET does not return key values (that is what attestationmechanism is for)
    assert service.get(path).json()["attestation"] == {"type": "symmetricKey", "symmetricKey": {}}
    assert service.delete(path).status_code == 204


def test_given_keys_are_in_the_create_answer(emulator):
    service = ServiceClient(emulator)
    key = base64.b64encode(b"parity-given-key-0123456789abcdef").decode()
    created = service.put("/enrollments/parity-given", symmetric_individual("parity-given", key)).json()
    keys = created["attestation"]["symmetricKey"]
    assert keys["primaryKey"] == key
    assert len(base64.b64decode(keys["secondaryKey"])) == 64  # the one not given is generated
    assert service.delete("/enrollments/parity-given").status_code == 204


def test_fixed_path_segments_are_case_insensitive(emulator):
    service = ServiceClient(emulator)
    created = service.put("/enrollmentgroups/parity-case-group", symmetric_group("parity-case-group"))
    assert created.status_code == 200, created.text
    keys = created.json()["attestation"]["symmetricKey"]
    assert service.get("/ENROLLMENTGROUPS/parity-case-group").json()["enrollmentGroupId"] == "parity-case-group"
    # the Node service client's getEnrollmentGroupAttestationMechanism / getIndividualEnrollmentAttestationMechanism
    for path in (
        "/enrollmentgroups/parity-case-group/attestationmechanism",
        "/enrollmentGroups/parity-case-group/attestationMechanism",
    ):
        answer = service.post(path)
        assert answer.status_code == 200, (path, answer.text)
        assert answer.json()["symmetricKey"] == keys
    assert service.put("/Enrollments/parity-case-dev", symmetric_individual("parity-case-dev")).status_code == 200
    assert service.post("/enrollments/parity-case-dev/AttestationMechanism").json()["type"] == "symmetricKey"
    assert service.post("/enrollmentgroups/query", {"query": "SELECT *"}).status_code == 200
    assert service.get("/Registrations/never-registered-case").status_code == 404
    # unknown paths are still 404 and wrong methods 405, whatever the case
    assert _error_code(service.get("/enrollmentgroupz/parity-case-group"), 404) == 404001
    wrong = service.request("PATCH", "/ENROLLMENTGROUPS/parity-case-group")
    assert wrong.status_code == 405 and set(wrong.headers["Allow"].split(", ")) == {"GET", "PUT", "DELETE"}
    assert service.delete("/enrollmentGroups/parity-case-group").status_code == 204
    assert service.delete("/enrollments/parity-case-dev").status_code == 204


def test_x509_attestation_mechanism_shape(emulator, pki):
    """AttestationMechanism (spec): {type, x509: {signingCertificates: {primary: {certificate, info}}}}."""
    service = ServiceClient(emulator)
    pem = pki.api_intermediate.pem_text
    body = {
        "enrollmentGroupId": "parity-x509-group",
        "attestation": {"type": "x509", "x509": {"signingCertificates": {"primary": {"certificate": pem}}}},
    }
    assert service.put("/enrollmentGroups/parity-x509-group", body).status_code == 200
    mechanism = service.post("/enrollmentgroups/parity-x509-group/attestationmechanism").json()
    assert mechanism["type"] == "x509"
    primary = mechanism["x509"]["signingCertificates"]["primary"]
    assert primary["certificate"] == pem
    assert {"subjectName", "sha1Thumbprint", "sha256Thumbprint", "notAfterUtc"} <= set(primary["info"])
    assert service.delete("/enrollmentGroups/parity-x509-group").status_code == 204
