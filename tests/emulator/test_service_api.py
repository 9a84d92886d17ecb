"""The DPS service API (enrollments as code) over real TLS: auth, etags, validation, query paging, bulk, records."""

from __future__ import annotations

import base64
import time

import pytest
import requests

from .helpers import (
    OWNER_SECONDARY_KEY,
    READER_KEY,
    REGISTRATION_READER_KEY,
    SERVICE_HOST,
    Client,
    ServiceClient,
    derived_key,
    sas_token,
    service_sas,
    symmetric_group,
    symmetric_individual,
)

GROUP_KEY_B = base64.b64encode(b"service-api-group-key-0123456789abcdef").decode()


def _error(response: requests.Response, status: int, code: int, *fragments: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) >= {"errorCode", "trackingId", "message", "info", "timestampUtc"}
    assert body["errorCode"] == code, body
    for fragment in fragments:
        assert fragment in body["message"], body["message"]
    return body


# --- authentication ------------------------------------------------------------------------------------------
def test_owner_policy_signing_variants_and_hosts(emulator):
    path = "/enrollmentGroups/fleet-sym"
    for variant in ("encoded", "raw", "lower"):
        token = service_sas(
            f"{emulator.host}:{emulator.port}",
            "provisioningserviceowner",
            ServiceClient(emulator).key,
            variant=variant,
        )
        assert ServiceClient(emulator, authorization=token).get(path).status_code == 200, variant
    # the configured service host, the Host header without its port, and the secondary key are accepted too
    assert ServiceClient(emulator, resource=SERVICE_HOST).get(path).status_code == 200
    assert ServiceClient(emulator, resource=emulator.host).get(path).status_code == 200
    assert ServiceClient(emulator, key=OWNER_SECONDARY_KEY).get(path).status_code == 200
    # sr may name a path prefix (by segment) of what the token may reach
    scoped = ServiceClient(emulator, resource=f"{SERVICE_HOST}/enrollmentGroups")
    assert scoped.get(path).status_code == 200
    _error(scoped.get("/enrollments/anything"), 401, 401002, "does not name this service")


def test_refusals(emulator):
    path = "/enrollmentGroups/fleet-sym"
    no_header = requests.get(f"{emulator.url}{path}?api-version=2021-10-01", verify=emulator.ca_cert, timeout=10)
    _error(no_header, 401, 401002, "Authorization")
    _error(ServiceClient(emulator, key=READER_KEY).get(path), 401, 401002, "does not verify")
    expired = service_sas(SERVICE_HOST, "provisioningserviceowner", OWNER_SECONDARY_KEY, expiry=int(time.time()) - 5)
    _error(ServiceClient(emulator, authorization=expired).get(path), 401, 401002, "expired")
    _error(ServiceClient(emulator, policy="nosuchpolicy").get(path), 401, 401002, "no shared access policy")
    _error(ServiceClient(emulator, resource="other-dps.azure-devices-provisioning.net").get(path), 401, 401002, "sr")
    no_skn = service_sas(SERVICE_HOST, "provisioningserviceowner", OWNER_SECONDARY_KEY).rsplit("&skn=", 1)[0]
    _error(ServiceClient(emulator, authorization=no_skn).get(path), 401, 401002, "skn")
    # the device SAS of a symmetric-key device is no service credential
    device_token = sas_token("sym-individual-1", base64.b64encode(b"x" * 32).decode())
    _error(ServiceClient(emulator, authorization=device_token).get(path), 401, 401002)


def test_policy_rights(emulator):
    reader = ServiceClient(emulator, policy="enrollmentread", key=READER_KEY)
    assert reader.get("/enrollmentGroups/fleet-sym").status_code == 200
    assert reader.post("/enrollmentGroups/query", {"query": "SELECT *"}).status_code == 200
    _error(reader.put("/enrollmentGroups/reader-made", symmetric_group("reader-made")), 401, 401002, "EnrollmentWrite")
    _error(reader.delete("/enrollmentGroups/fleet-sym"), 401, 401002, "EnrollmentWrite")
    _error(reader.get("/registrations/dev-group-1"), 401, 401002, "RegistrationStatusRead")
    registrations = ServiceClient(emulator, policy="registrationread", key=REGISTRATION_READER_KEY)
    _error(registrations.get("/enrollmentGroups/fleet-sym"), 401, 401002, "EnrollmentRead")
    assert registrations.get("/registrations/never-registered").status_code == 404
    _error(registrations.delete("/registrations/never-registered"), 401, 401002, "RegistrationStatusWrite")
    assert ServiceClient(emulator).get("/enrollmentGroups/fleet-sym").status_code == 200


def test_api_versions_and_routing(emulator):
    service = ServiceClient(emulator)
    for version in ("2019-03-31", "2021-06-01", "2021-10-01"):
        assert service.get("/enrollmentGroups/fleet-sym", api_version=version).status_code == 200
    _error(service.get("/enrollmentGroups/fleet-sym", api_version=None), 400, 400004)
    _error(service.get("/enrollmentGroups/fleet-sym", api_version="2017-01-01"), 400, 400004)
    wrong = service.request("PATCH", "/enrollmentGroups/fleet-sym")
    _error(wrong, 405, 405001)
    assert set(wrong.headers["Allow"].split(", ")) == {"GET", "PUT", "DELETE"}
    _error(service.get("/enrollmentGroups/nope"), 404, 404204, "not found")


# --- records, etags, validation --------------------------------------------------------------------------------
def test_individual_lifecycle_and_etags(emulator):
    service = ServiceClient(emulator)
    path = "/enrollments/etag-dev-1"
    created = service.put(path, symmetric_individual("etag-dev-1", initialTwin={"tags": {"site": "lab"}}))
    assert created.status_code == 200, created.text
    record = created.json()
    assert record["registrationId"] == "etag-dev-1"
    generated = record["attestation"]["symmetricKey"]  # the create answer carries the keys DPS generated
    assert record["attestation"]["type"] == "symmetricKey" and set(generated) == {"primaryKey", "secondaryKey"}
    assert record["provisioningStatus"] == "enabled"
    assert record["capabilities"] == {"iotEdge": False}
    assert record["reprovisionPolicy"] == {"updateHubAssignment": True, "migrateDeviceData": True}
    assert record["allocationPolicy"] == "hashed"
    assert record["initialTwin"] == {"tags": {"site": "lab"}}
    assert record["createdDateTimeUtc"] == record["lastUpdatedDateTimeUtc"]
    etag = record["etag"]
    assert etag and not etag.startswith('"')
    # later, the keys only through attestationmechanism: a GET returns no key values
    keys = service.post(f"{path}/attestationmechanism").json()["symmetricKey"]
    assert keys == generated
    assert len(base64.b64decode(keys["primaryKey"])) == 64 and keys["primaryKey"] != keys["secondaryKey"]
    record["attestation"]["symmetricKey"] = {}
    assert service.get(path).json() == record

    update = symmetric_individual("etag-dev-1", keys["primaryKey"], provisioningStatus="disabled")
    _error(service.put(path, update), 409, 409001, "If-Match")
    _error(service.put(path, update, if_match="bm90LXRoZS1ldGFn"), 412, 412001)
    updated = service.put(path, update, if_match=f'"{etag}"')  # quoted or not: clients differ
    assert updated.status_code == 200, updated.text
    assert updated.json()["etag"] != etag
    assert updated.json()["createdDateTimeUtc"] == record["createdDateTimeUtc"]
    assert updated.json()["provisioningStatus"] == "disabled"
    _error(service.put(path, update, if_match=etag), 412, 412001)  # now stale
    wildcard = service.put(path, update, if_match="*")
    assert wildcard.status_code == 200
    current = wildcard.json()["etag"]

    _error(service.delete(path, if_match=etag), 412, 412001)
    deleted = service.delete(path, if_match=current)
    assert deleted.status_code == 204 and deleted.content == b""
    _error(service.get(path), 404, 404201)  # 404201: no such individual enrollment (404204 is for groups)
    _error(service.delete(path), 404, 404201)
    # If-Match on a record that does not exist cannot match
    _error(service.put(path, update, if_match="*"), 412, 412001, "does not exist")


def test_delete_without_if_match_and_group_etags(emulator):
    service = ServiceClient(emulator)
    first = service.put("/enrollmentGroups/etag-group", symmetric_group("etag-group"))
    assert first.status_code == 200
    _error(service.put("/enrollmentGroups/etag-group", symmetric_group("etag-group")), 409, 409001)
    second = service.put("/enrollmentGroups/etag-group", symmetric_group("etag-group"), if_match=first.json()["etag"])
    assert second.status_code == 200
    _error(service.delete("/enrollmentGroups/etag-group", if_match=first.json()["etag"]), 412, 412001)
    assert service.delete("/enrollmentGroups/etag-group").status_code == 204


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        ("/enrollments/-bad-", symmetric_individual("-bad-"), "is invalid"),
        ("/enrollments/ok-1", symmetric_individual("ok-2"), "does not match"),
        ("/enrollments/ok-1", {"registrationId": "ok-1"}, "attestation is required"),
        (
            "/enrollments/ok-1",
            {"registrationId": "ok-1", "attestation": {"type": "tpm", "tpm": {"endorsementKey": "AAAA"}}},
            "attestation.tpm.endorsementKey is not a TPM2B_PUBLIC",
        ),
        ("/enrollments/ok-1", symmetric_individual("ok-1", iotHubs=["nope.azure-devices.net"]), "not linked"),
        ("/enrollments/ok-1", symmetric_individual("ok-1", iotHubHostName="nope.azure-devices.net"), "not linked"),
        ("/enrollments/ok-1", symmetric_individual("ok-1", allocationPolicy="custom"), "custom"),
        (
            "/enrollments/ok-1",
            symmetric_individual(
                "ok-1", allocationPolicy="static", iotHubs=["hub-a.azure-devices.net", "hub-b.azure-devices.net"]
            ),
            "exactly one",
        ),
        ("/enrollments/ok-1", symmetric_individual("ok-1", "not base64!"), "base64"),
        ("/enrollments/ok-1", symmetric_individual("ok-1", base64.b64encode(b"short").decode()), "16-64 bytes"),
        ("/enrollments/ok-1", symmetric_individual("ok-1", provisioningStatus="paused"), "provisioningStatus"),
        ("/enrollments/ok-1", symmetric_individual("ok-1", capabilities={"iotEdge": "yes"}), "iotEdge"),
        ("/enrollments/ok-1", symmetric_individual("ok-1", initialTwin={"tags": []}), "initialTwin.tags"),
        ("/enrollments/ok-1", symmetric_individual("ok-1", deviceId="bad device id"), "deviceId"),
        (
            "/enrollments/ok-1",
            {"registrationId": "ok-1", "attestation": {"type": "x509", "x509": {}}},
            "clientCertificates is required",
        ),
        (
            "/enrollments/ok-1",
            {
                "registrationId": "ok-1",
                "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": "x"}}}},
            },
            "PEM",
        ),
        (
            "/enrollments/ok-1",
            {
                "registrationId": "ok-1",
                "attestation": {"type": "x509", "x509": {"caReferences": {"primary": "api-root"}}},
            },
            "for enrollment groups",
        ),
        (
            "/enrollmentGroups/ok-g",
            {
                "enrollmentGroupId": "ok-g",
                "attestation": {"type": "x509", "x509": {"caReferences": {"primary": "nope"}}},
            },
            "no CA certificate named 'nope'",
        ),
        (
            "/enrollmentGroups/ok-g",
            {"enrollmentGroupId": "ok-g", "attestation": {"type": "x509", "x509": {}}},
            "exactly one of signingCertificates or caReferences",
        ),
    ],
)
def test_validation(emulator, path, body, fragment):
    _error(ServiceClient(emulator).put(path, body), 400, 400001, fragment)


def test_bad_ids_in_paths(emulator):
    service = ServiceClient(emulator)
    for path in ("/enrollments/-bad", "/enrollmentGroups/bad_", "/enrollments/" + "x" * 129):
        _error(service.get(path), 400, 400001, "is invalid")
        _error(service.delete(path), 400, 400001, "is invalid")
    _error(service.get("/registrations/bad%20id"), 400, 400001, "is invalid")
    _error(service.post("/registrations/-group-/query"), 400, 400001, "is invalid")


def test_non_json_body_refused(emulator):
    response = requests.put(
        f"{emulator.url}/enrollments/json-dev?api-version=2021-10-01",
        data=b"{not json",
        headers={"Authorization": service_sas(SERVICE_HOST, "provisioningserviceowner", OWNER_SECONDARY_KEY)},
        verify=emulator.ca_cert,
        timeout=10,
    )
    _error(response, 400, 400001, "not valid JSON")


def test_x509_group_records_show_certificate_and_info(emulator, pki):
    service = ServiceClient(emulator)
    body = {
        "enrollmentGroupId": "view-group",
        "attestation": {
            "type": "x509",
            "x509": {"signingCertificates": {"primary": {"certificate": pki.root.pem_text}}},
        },
        "iotHubHostName": "hub-b.azure-devices.net",
        "capabilities": {"iotEdge": True},
    }
    record = service.put("/enrollmentGroups/view-group", body).json()
    primary = record["attestation"]["x509"]["signingCertificates"]["primary"]
    assert primary["certificate"] == pki.root.pem_text  # a GET can be PUT back as it is
    assert primary["info"]["subjectName"] == "CN=Test Root CA"
    assert len(primary["info"]["sha256Thumbprint"]) == 64
    assert record["allocationPolicy"] == "static" and record["iotHubHostName"] == "hub-b.azure-devices.net"
    assert record["capabilities"] == {"iotEdge": True}
    seeded = service.get("/enrollmentGroups/fleet-x509").json()
    assert seeded["attestation"]["x509"]["signingCertificates"]["primary"]["info"]["subjectName"] == "CN=Test Root CA"
    assert seeded["iotHubs"] == ["hub-a.azure-devices.net"] and seeded["allocationPolicy"] == "static"
    record["capabilities"] = {"iotEdge": False}
    again = service.put("/enrollmentGroups/view-group", record, if_match=record["etag"])
    assert again.status_code == 200, again.text
    assert again.json()["attestation"] == record["attestation"] and again.json()["capabilities"] == {"iotEdge": False}
    assert service.delete("/enrollmentGroups/view-group").status_code == 204


# --- query and bulk ----------------------------------------------------------------------------------------------
def test_query_paging_with_continuation(emulator):
    service = ServiceClient(emulator)
    names = [f"page-group-{index}" for index in range(5)]
    for name in names:
        assert service.put(f"/enrollmentGroups/{name}", symmetric_group(name)).status_code == 200
    seen: list[str] = []
    continuation = None
    pages = 0
    while True:
        headers = {"x-ms-max-item-count": "2"}
        if continuation:
            headers["x-ms-continuation"] = continuation
        page = service.post("/enrollmentGroups/query", {"query": "SELECT * FROM enrollmentGroups"}, headers=headers)
        assert page.status_code == 200, page.text
        assert page.headers["x-ms-item-type"] == "enrollmentGroup"
        assert page.headers["x-ms-max-item-count"] == "2"
        assert len(page.json()) <= 2
        assert all(item["attestation"].get("symmetricKey", {}) == {} for item in page.json())
        seen += [item["enrollmentGroupId"] for item in page.json()]
        pages += 1
        continuation = page.headers.get("x-ms-continuation")
        if not continuation:
            break
    assert set(names) <= set(seen) and len(seen) == len(set(seen))
    assert pages == (len(seen) + 1) // 2
    everything = service.post("/enrollmentGroups/query", {"query": "select *"})
    assert [item["enrollmentGroupId"] for item in everything.json()] == seen
    assert "x-ms-continuation" not in everything.headers
    bad = {"x-ms-continuation": "bm90LWEtdG9rZW4="}
    _error(service.post("/enrollmentGroups/query", {"query": "SELECT *"}, headers=bad), 400, 400001, "continuation")
    bad_size = {"x-ms-max-item-count": "0"}
    _error(service.post("/enrollmentGroups/query", {"query": "SELECT *"}, headers=bad_size), 400, 400001)
    where = {"query": "SELECT * FROM enrollmentGroups WHERE provisioningStatus = 'enabled'"}
    _error(service.post("/enrollmentGroups/query", where), 400, 400001, "SELECT *")
    individuals = service.post("/enrollments/query", {"query": "SELECT *"})
    assert individuals.headers["x-ms-item-type"] == "enrollment"
    assert "sym-individual-1" in {item["registrationId"] for item in individuals.json()}
    for name in names:
        assert service.delete(f"/enrollmentGroups/{name}").status_code == 204


def test_bulk_individual_enrollments(emulator):
    service = ServiceClient(emulator)
    items = [symmetric_individual(f"bulk-dev-{index}") for index in range(3)]
    created = service.post("/enrollments", {"mode": "create", "enrollments": items})
    assert created.status_code == 200
    assert created.json() == {"isSuccessful": True, "errors": []}
    again = service.post("/enrollments", {"mode": "create", "enrollments": items}).json()
    assert again["isSuccessful"] is False
    assert [(error["registrationId"], error["errorCode"]) for error in again["errors"]] == [
        (f"bulk-dev-{index}", 409001) for index in range(3)
    ]
    assert all(error["errorStatus"] for error in again["errors"])
    # update: unconditional; updateIfMatchETag: only with the current etag
    disabled = [dict(item, provisioningStatus="disabled") for item in items]
    assert service.post("/enrollments", {"mode": "update", "enrollments": disabled}).json()["isSuccessful"]
    assert service.get("/enrollments/bulk-dev-0").json()["provisioningStatus"] == "disabled"
    current = service.get("/enrollments/bulk-dev-1").json()["etag"]
    conditional = [dict(items[0], etag="c3RhbGU="), dict(items[1], etag=current)]
    result = service.post("/enrollments", {"mode": "updateIfMatchETag", "enrollments": conditional}).json()
    assert result["isSuccessful"] is False
    assert [(error["registrationId"], error["errorCode"]) for error in result["errors"]] == [("bulk-dev-0", 412001)]
    assert service.get("/enrollments/bulk-dev-1").json()["provisioningStatus"] == "enabled"
    # an invalid item fails alone
    mixed = [symmetric_individual("bulk-dev-3"), symmetric_individual("bulk-dev-4", iotHubs=["x.azure-devices.net"])]
    result = service.post("/enrollments", {"mode": "create", "enrollments": mixed}).json()
    assert [(error["registrationId"], error["errorCode"]) for error in result["errors"]] == [("bulk-dev-4", 400001)]
    assert service.get("/enrollments/bulk-dev-3").status_code == 200
    gone = [{"registrationId": f"bulk-dev-{index}"} for index in (0, 1, 2, 3)]
    assert service.post("/enrollments", {"mode": "delete", "enrollments": gone}).json()["isSuccessful"]
    assert service.get("/enrollments/bulk-dev-0").status_code == 404
    missing = service.post("/enrollments", {"mode": "delete", "enrollments": gone[:1]}).json()
    assert missing["errors"][0]["errorCode"] == 404201


def test_bulk_limits_and_group_shape(emulator):
    service = ServiceClient(emulator)
    eleven = [symmetric_individual(f"bulk-many-{index}") for index in range(11)]
    _error(service.post("/enrollments", {"mode": "create", "enrollments": eleven}), 400, 400001, "at most 10")
    assert service.get("/enrollments/bulk-many-0").status_code == 404  # nothing of a refused bulk is applied
    _error(service.post("/enrollments", {"mode": "merge", "enrollments": eleven[:1]}), 400, 400001, "mode")
    _error(service.post("/enrollments", {"mode": "create", "enrollments": []}), 400, 400001, "non-empty")
    groups = [symmetric_group("bulk-group-1"), symmetric_group("bulk-group-2")]
    # the spec names a group bulk's list enrollmentGroups (as the Azure SDKs send it), not enrollments
    wrong = service.post("/enrollmentGroups", {"mode": "create", "enrollments": groups})
    _error(wrong, 400, 400001, "enrollmentGroups")
    right = service.post("/enrollmentGroups", {"mode": "create", "enrollmentGroups": groups})
    assert right.json() == {"isSuccessful": True, "errors": []}
    deleted = service.post("/enrollmentGroups", {"mode": "delete", "enrollmentGroups": groups})
    assert deleted.json()["isSuccessful"]


# --- registration records ----------------------------------------------------------------------------------------
def test_registration_records_get_query_delete(emulator):
    service = ServiceClient(emulator)
    assert (
        service.put("/enrollmentGroups/records-group", symmetric_group("records-group", GROUP_KEY_B)).status_code == 200
    )
    for name in ("records-dev-1", "records-dev-2"):
        token = sas_token(name, derived_key(GROUP_KEY_B, name))
        assert Client(emulator, sas=token).provision(name)["status"] == "assigned"
    record = service.get("/registrations/records-dev-1")
    assert record.status_code == 200, record.text
    state = record.json()
    assert state["registrationId"] == "records-dev-1" and state["status"] == "assigned"
    assert state["deviceId"] == "records-dev-1" and state["substatus"] == "initialAssignment"
    assert state["assignedHub"] in ("hub-a.azure-devices.net", "hub-b.azure-devices.net")
    assert {"createdDateTimeUtc", "lastUpdatedDateTimeUtc", "etag"} <= set(state)
    assert "symmetricKey" not in state and "x509" not in state  # DeviceRegistrationState has no attestation
    # an individual enrollment's GET carries its registrationState; the group's registrations are queryable
    page = service.post("/registrations/records-group/query", headers={"x-ms-max-item-count": "1"})
    assert page.headers["x-ms-item-type"] == "deviceRegistration"
    assert len(page.json()) == 1 and page.headers.get("x-ms-continuation")
    rest = service.post(
        "/registrations/records-group/query", headers={"x-ms-continuation": page.headers["x-ms-continuation"]}
    )
    assert {item["registrationId"] for item in page.json() + rest.json()} == {"records-dev-1", "records-dev-2"}
    assert service.post("/registrations/no-such-group/query").json() == []

    _error(service.delete("/registrations/records-dev-1", if_match="c3RhbGU="), 412, 412001)
    assert service.delete("/registrations/records-dev-1", if_match=state["etag"]).status_code == 204
    _error(service.get("/registrations/records-dev-1"), 404, 404201)
    _error(service.delete("/registrations/records-dev-1"), 404, 404201)
    # the device stays in its IoT hub: deleting the DPS record does not touch IoT Hub
    assert any(device["registrationId"] == "records-dev-1" for device in emulator.devices())
    # the device lookup over the device API now finds no record either, and registering again starts afresh
    client = Client(emulator, sas=sas_token("records-dev-1", derived_key(GROUP_KEY_B, "records-dev-1")))
    assert client.status("records-dev-1").status_code == 404
    again = client.provision("records-dev-1")["registrationState"]
    assert again["createdDateTimeUtc"] != state["createdDateTimeUtc"]


def test_individual_get_carries_registration_state(emulator):
    service = ServiceClient(emulator)
    key = base64.b64encode(b"individual-with-state-key-0123456789").decode()
    assert service.put("/enrollments/state-dev-1", symmetric_individual("state-dev-1", key)).status_code == 200
    assert "registrationState" not in service.get("/enrollments/state-dev-1").json()
    Client(emulator, sas=sas_token("state-dev-1", key)).provision("state-dev-1")
    record = service.get("/enrollments/state-dev-1").json()
    assert record["registrationState"]["status"] == "assigned"
    listed = service.post("/enrollments/query", {"query": "SELECT *"}).json()
    assert all("registrationState" not in item for item in listed)  # as DPS: queries do not carry it
