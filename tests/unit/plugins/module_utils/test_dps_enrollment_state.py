"""Unit tests for what an enrollment should look like and how it is compared with what DPS has."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import textwrap
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from ansible_collections.iotfleet.aziot.plugins.module_utils import _dps_enrollment
from ansible_collections.iotfleet.aziot.plugins.module_utils._dps_enrollment import (
    GENERATED,
    DesiredEnrollment,
    EnrollmentInputError,
    build_body,
    certificate_matches,
    diff_views,
    differences,
    load_certificate,
    needs_keys,
    set_paths,
    tpm_public_key,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._dps_service import ENROLLMENT_GROUPS, ENROLLMENTS
from tests.support.pki import distinguished_name, issue

PRIMARY_KEY = base64.b64encode(b"primary-key-material-0123456789a").decode()
SECONDARY_KEY = base64.b64encode(b"secondary-key-material-012345678").decode()


def make_certificate(cn: str, organisation: str | None = None):
    made = issue(distinguished_name(cn, organisation))
    return made.cert, made.key


def pem_of(certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture
def ca(tmp_path):
    certificate, key = make_certificate("iotfleet Intermediate CA", "iotfleet")
    path = tmp_path / "ca.pem"
    path.write_text(pem_of(certificate))
    return {"certificate": certificate, "key": key, "path": str(path)}


def info_of(certificate, lower=False, colons=False) -> dict:
    def hexed(algorithm) -> str:
        text = certificate.fingerprint(algorithm).hex()
        text = text if lower else text.upper()
        return ":".join(text[i : i + 2] for i in range(0, len(text), 2)) if colons else text

    return {
        "subjectName": "CN=iotfleet Intermediate CA, O=iotfleet",
        "sha1Thumbprint": hexed(hashes.SHA1()),
        "sha256Thumbprint": hexed(hashes.SHA256()),
        "issuerName": "CN=issuer",
        "notBeforeUtc": "2026-01-01T00:00:00Z",
        "notAfterUtc": "2027-01-01T00:00:00Z",
        "serialNumber": "01",
        "version": 3,
    }


def group(certificate_path=None, **settings) -> DesiredEnrollment:
    desired = DesiredEnrollment(ENROLLMENT_GROUPS, "fleet", "x509", **settings)
    if certificate_path:
        desired.certificates = {
            "primary": load_certificate("g", "primary_certificate", certificate_path),
            "secondary": None,
        }
    return desired


def group_record(certificate, **fields) -> dict:
    record = {
        "enrollmentGroupId": "fleet",
        "attestation": {"type": "x509", "x509": {"signingCertificates": {"primary": {"info": info_of(certificate)}}}},
        "capabilities": {"iotEdge": False},
        "iotHubs": ["hub-a.azure-devices.net"],
        "allocationPolicy": "hashed",
        "provisioningStatus": "enabled",
        "reprovisionPolicy": {"updateHubAssignment": True, "migrateDeviceData": True},
        "etag": '"e1"',
        "createdDateTimeUtc": "2026-01-01T00:00:00Z",
        "lastUpdatedDateTimeUtc": "2026-01-02T00:00:00Z",
    }
    record.update(fields)
    return record


# --- certificate files ----------------------------------------------------------------------------------------------


def test_load_certificate_takes_the_first_certificate(tmp_path, ca):
    other, _ = make_certificate("Root")
    path = tmp_path / "chain.pem"
    path.write_text(pem_of(ca["certificate"]) + pem_of(other))
    certificate = load_certificate("enrollment group fleet", "primary_certificate", str(path))
    assert certificate.der == ca["certificate"].public_bytes(serialization.Encoding.DER)
    assert certificate.subject == "CN=iotfleet Intermediate CA, O=iotfleet"
    assert certificate.sha256 == ca["certificate"].fingerprint(hashes.SHA256()).hex().upper()
    assert x509.load_pem_x509_certificate(certificate.pem.encode()) == ca["certificate"]


def test_a_file_with_a_private_key_is_refused(tmp_path, ca):
    path = tmp_path / "bundle.pem"
    key_pem = ca["key"].private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_text(pem_of(ca["certificate"]) + key_pem.decode())
    with pytest.raises(EnrollmentInputError) as caught:
        load_certificate("enrollment group fleet", "secondary_certificate", str(path))
    assert str(caught.value) == (
        f"enrollment group fleet: secondary_certificate {path} holds a private key; give a file with the certificate "
        "only (a private key never goes to DPS)"
    )
    assert "BEGIN" not in str(caught.value)


def test_missing_unreadable_and_empty_files(tmp_path):
    with pytest.raises(EnrollmentInputError, match=r"^g: primary_certificate /nonexistent/ca.pem does not exist$"):
        load_certificate("g", "primary_certificate", "/nonexistent/ca.pem")
    with pytest.raises(EnrollmentInputError, match=rf"^g: cannot read primary_certificate {tmp_path}: Is a directory$"):
        load_certificate("g", "primary_certificate", str(tmp_path))
    empty = tmp_path / "empty.pem"
    empty.write_text("just text\n")
    with pytest.raises(EnrollmentInputError, match=r"holds no PEM certificate$"):
        load_certificate("g", "primary_certificate", str(empty))
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAKHHIG\n-----END CERTIFICATE-----\n")
    with pytest.raises(EnrollmentInputError, match=r"primary_certificate .*broken.pem"):
        load_certificate("g", "primary_certificate", str(broken))


# --- certificate comparison -----------------------------------------------------------------------------------------


def test_certificates_compare_by_der_not_by_pem_text(ca, tmp_path):
    desired = load_certificate("g", "primary_certificate", ca["path"])
    text = pem_of(ca["certificate"])
    body = "".join(text.splitlines()[1:-1])
    rewrapped = (
        "-----BEGIN CERTIFICATE-----\r\n"
        + "\r\n".join(body[i : i + 76] for i in range(0, len(body), 76))
        + "\r\n-----END CERTIFICATE-----"
    )
    assert rewrapped != text
    assert certificate_matches(desired, {"certificate": rewrapped})
    other, _ = make_certificate("iotfleet Intermediate CA", "iotfleet")  # same subject, other key
    assert not certificate_matches(desired, {"certificate": pem_of(other)})


def test_certificates_compare_by_thumbprint_in_info(ca):
    desired = load_certificate("g", "primary_certificate", ca["path"])
    assert certificate_matches(desired, {"info": info_of(ca["certificate"])})
    assert certificate_matches(
        desired, {"certificate": None, "info": info_of(ca["certificate"], lower=True, colons=True)}
    )
    sha1_only = {"info": {"sha1Thumbprint": info_of(ca["certificate"])["sha1Thumbprint"]}}
    assert certificate_matches(desired, sha1_only)
    other, _ = make_certificate("x")
    assert not certificate_matches(desired, {"info": info_of(other)})
    assert not certificate_matches(desired, {"info": {"subjectName": "CN=iotfleet Intermediate CA, O=iotfleet"}})
    assert not certificate_matches(desired, None)
    assert certificate_matches(None, None)
    assert certificate_matches(None, {})
    assert not certificate_matches(None, {"info": info_of(ca["certificate"])})


# --- record comparison ----------------------------------------------------------------------------------------------


def test_unset_fields_and_server_side_fields_are_ignored(ca):
    desired = group(ca["path"])
    record = group_record(
        ca["certificate"],
        initialTwin={"tags": {"site": "x"}},
        iotHubs=["other.azure-devices.net"],
        allocationPolicy="geoLatency",
        provisioningStatus="disabled",
        etag='"e9"',
        lastUpdatedDateTimeUtc="2030-01-01T00:00:00Z",
    )
    assert differences(desired, record) == []


def test_tags_compare_unordered_and_without_twin_metadata(ca):
    desired = group(ca["path"], tags={"site": "plant-3", "ring": {"a": 1, "b": [1, 2]}})
    record = group_record(
        ca["certificate"],
        initialTwin={
            "tags": {"ring": {"b": [1, 2], "a": 1}, "site": "plant-3", "$metadata": {"$lastUpdated": "t"}},
            "properties": {"desired": {"$version": 4}},
        },
    )
    assert differences(desired, record) == []
    assert differences(group(ca["path"], tags={"site": "plant-4"}), record) == ["initialTwin.tags"]
    assert differences(group(ca["path"], tags={"site": "plant-3"}), record) == ["initialTwin.tags"]  # ring removed
    assert differences(group(ca["path"], desired_properties={}), record) == []
    assert differences(group(ca["path"], desired_properties={"fw": "1.2"}), record) == [
        "initialTwin.properties.desired"
    ]


def test_hubs_enums_and_defaults(ca):
    record = group_record(ca["certificate"], iotHubs=["Hub-B.azure-devices.net", "hub-a.azure-devices.net"])
    same = group(
        ca["path"],
        iot_hubs=["hub-a.azure-devices.net", "hub-b.azure-devices.net"],
        allocation_policy="Hashed",
        provisioning_status="enabled",
        iot_edge=False,
        update_hub_assignment=True,
    )
    assert differences(same, record) == []
    bare = {"enrollmentGroupId": "fleet", "attestation": record["attestation"]}
    # DPS defaults: enabled, iotEdge false, reprovision true/true
    assert differences(same, dict(bare, iotHubs=record["iotHubs"], allocationPolicy="hashed")) == []
    changed = group(
        ca["path"],
        iot_hubs=["hub-a.azure-devices.net"],
        allocation_policy="static",
        provisioning_status="disabled",
        iot_edge=True,
        migrate_device_data=False,
    )
    assert differences(changed, record) == [
        "iotHubs",
        "allocationPolicy",
        "capabilities.iotEdge",
        "provisioningStatus",
        "reprovisionPolicy.migrateDeviceData",
    ]


def test_secondary_certificate_rollover_and_removal(ca, tmp_path):
    new_ca, _ = make_certificate("iotfleet Intermediate CA 2027")
    new_path = tmp_path / "new.pem"
    new_path.write_text(pem_of(new_ca))
    record = group_record(ca["certificate"])
    rollover = group(ca["path"])
    rollover.certificates["secondary"] = load_certificate("g", "secondary_certificate", str(new_path))
    assert differences(rollover, record) == ["attestation.x509.signingCertificates.secondary"]
    promoted = group(str(new_path))
    with_both = group_record(ca["certificate"])
    with_both["attestation"]["x509"]["signingCertificates"]["secondary"] = {"info": info_of(new_ca)}
    assert differences(promoted, with_both) == [
        "attestation.x509.signingCertificates.primary",
        "attestation.x509.signingCertificates.secondary",
    ]


def test_switching_between_ca_references_and_certificates(ca):
    by_reference = group(ca_references={"primary": "root-2026", "secondary": None})
    record = group_record(ca["certificate"])
    assert differences(by_reference, record) == [
        "attestation.x509.caReferences.primary",
        "attestation.x509.signingCertificates",
    ]
    referenced = dict(record, attestation={"type": "x509", "x509": {"caReferences": {"primary": "root-2026"}}})
    assert differences(by_reference, referenced) == []
    assert differences(group(ca["path"]), referenced) == [
        "attestation.x509.signingCertificates.primary",
        "attestation.x509.caReferences",
    ]


def test_symmetric_keys_compared_only_when_given():
    record = {
        "registrationId": "pi-1",
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": PRIMARY_KEY, "secondaryKey": "s"}},
    }
    unset = DesiredEnrollment(ENROLLMENTS, "pi-1", "symmetric_key", keys={"primaryKey": None, "secondaryKey": None})
    assert differences(unset, record) == []
    given = DesiredEnrollment(
        ENROLLMENTS, "pi-1", "symmetric_key", keys={"primaryKey": PRIMARY_KEY, "secondaryKey": SECONDARY_KEY}
    )
    assert differences(given, record) == ["attestation.symmetricKey.secondaryKey"]
    x509_record = {"registrationId": "pi-1", "attestation": {"type": "x509", "x509": {}}}
    assert differences(unset, x509_record) == ["attestation.type"]


def test_needs_keys():
    no_keys = {"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": None}}}
    unset = DesiredEnrollment(ENROLLMENTS, "pi-1", "symmetric_key", keys={"primaryKey": None, "secondaryKey": None})
    given = DesiredEnrollment(
        ENROLLMENTS, "pi-1", "symmetric_key", keys={"primaryKey": PRIMARY_KEY, "secondaryKey": None}
    )
    assert not needs_keys(unset, no_keys, will_write=False)  # nothing to compare them with
    assert needs_keys(unset, no_keys, will_write=True)  # the PUT must carry them
    assert needs_keys(given, no_keys, will_write=False)
    assert not needs_keys(given, None, will_write=True)
    with_keys = {"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "a", "secondaryKey": "b"}}}
    assert not needs_keys(given, with_keys, will_write=True)
    assert not needs_keys(given, {"attestation": {"type": "x509"}}, will_write=True)


def test_set_paths_lists_what_a_create_writes(ca):
    desired = group(ca["path"], iot_hubs=[], iot_edge=False, tags={})
    assert set_paths(desired) == ["attestation", "iotHubs", "capabilities.iotEdge", "initialTwin.tags"]


# --- the PUT body -----------------------------------------------------------------------------------------------------


def test_build_body_keeps_what_was_not_set_and_drops_server_fields(ca):
    record = group_record(
        ca["certificate"],
        iotHubHostName="old.azure-devices.net",
        initialTwin={"tags": {"a": 1, "$metadata": {}}, "properties": {"desired": {"x": 1, "$version": 2}}},
        customAllocationDefinition={"webhookUrl": "https://f/api?code=c", "apiVersion": "2021-10-01"},
    )
    body = build_body(group(ca["path"], tags={"site": "plant-3"}, iot_hubs=["hub-b.azure-devices.net"]), record)
    for name in ("etag", "createdDateTimeUtc", "lastUpdatedDateTimeUtc", "iotHubHostName"):
        assert name not in body
    assert body["initialTwin"] == {"tags": {"site": "plant-3"}, "properties": {"desired": {"x": 1}}}
    assert body["iotHubs"] == ["hub-b.azure-devices.net"]
    assert body["allocationPolicy"] == "hashed"  # not set: kept
    assert body["customAllocationDefinition"]["webhookUrl"] == "https://f/api?code=c"
    primary = body["attestation"]["x509"]["signingCertificates"]["primary"]
    assert primary == {"certificate": pem_of(ca["certificate"])}
    assert "secondary" not in body["attestation"]["x509"]["signingCertificates"]


def test_build_body_individual_certificate_and_reprovision_policy(tmp_path):
    device, _ = make_certificate("pi-1")
    path = tmp_path / "pi-1.pem"
    path.write_text(pem_of(device))
    desired = DesiredEnrollment(ENROLLMENTS, "pi-1", "x509", device_id="pi-one", migrate_device_data=False)
    desired.certificates = {"primary": load_certificate("e", "primary_certificate", str(path)), "secondary": None}
    body = build_body(desired, None)
    assert body["registrationId"] == "pi-1"
    assert body["deviceId"] == "pi-one"
    assert list(body["attestation"]["x509"]) == ["clientCertificates"]
    assert body["reprovisionPolicy"] == {"updateHubAssignment": True, "migrateDeviceData": False}


def test_build_body_carries_existing_symmetric_keys():
    record = {
        "enrollmentGroupId": "sensors",
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "old-p", "secondaryKey": "old-s"}},
    }
    desired = DesiredEnrollment(
        ENROLLMENT_GROUPS, "sensors", "symmetric_key", keys={"primaryKey": PRIMARY_KEY, "secondaryKey": None}
    )
    assert build_body(desired, record)["attestation"] == {
        "type": "symmetricKey",
        "symmetricKey": {"primaryKey": PRIMARY_KEY, "secondaryKey": "old-s"},
    }
    assert build_body(desired, None)["attestation"] == {
        "type": "symmetricKey",
        "symmetricKey": {"primaryKey": PRIMARY_KEY},
    }


# --- TPM attestation --------------------------------------------------------------------------------------------


def tpm2b(content: bytes) -> bytes:
    """A TPM2B_*: u16 size, then the bytes (a stand-in TPM2B_PUBLIC: the module only checks the framing)."""
    return struct.pack(">H", len(content)) + content


EK_A, EK_B, SRK_A = tpm2b(b"ek-of-tpm-a" * 30), tpm2b(b"ek-of-tpm-b" * 30), tpm2b(b"srk-of-tpm-a" * 25)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def tpm_desired(endorsement_key: bytes = EK_A, storage_root_key: bytes | None = None) -> DesiredEnrollment:
    return DesiredEnrollment(
        ENROLLMENTS, "pi-1", "tpm", tpm={"endorsementKey": endorsement_key, "storageRootKey": storage_root_key}
    )


def tpm_record(endorsement_key: str, storage_root_key: str | None = None) -> dict:
    tpm = {"endorsementKey": endorsement_key}
    if storage_root_key is not None:
        tpm["storageRootKey"] = storage_root_key
    return {"registrationId": "pi-1", "attestation": {"type": "tpm", "tpm": tpm}, "etag": '"e"'}


def test_tpm_public_key_takes_base64_of_a_tpm2b_public():
    assert tpm_public_key("individual enrollment pi-1", "endorsementKey", b64(EK_A)) == EK_A
    wrapped = "\n".join(textwrap.wrap(b64(EK_A), 76)) + "\n"  # base64 without -w0
    assert tpm_public_key("individual enrollment pi-1", "endorsementKey", wrapped) == EK_A


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("endorsementKey", "not base64!", "endorsement_key is not base64"),
        ("endorsementKey", " ", "endorsement_key is empty"),
        ("endorsementKey", b64(b"\x01\x00"), "endorsement_key is 2 bytes long, too short for a TPM2B_PUBLIC"),
        (
            "endorsementKey",
            b64(EK_A[2:]),
            f"endorsement_key is not a TPM2B_PUBLIC: its size field says {int.from_bytes(EK_A[2:4], 'big')} bytes "
            f"but {len(EK_A) - 4} follow",
        ),
        (
            "storageRootKey",
            b64(SRK_A + b"x"),
            f"storage_root_key is not a TPM2B_PUBLIC: its size field says "
            f"{len(SRK_A) - 2} bytes but {len(SRK_A) - 1} follow",
        ),
    ],
)
def test_tpm_public_key_refuses_what_is_not_a_tpm2b_public(name, value, problem):
    with pytest.raises(EnrollmentInputError) as raised:
        tpm_public_key("individual enrollment pi-1", name, value)
    handle, file = ("0x81010001", "ek.pub") if name == "endorsementKey" else ("0x81000001", "srk.pub")
    assert str(raised.value) == (
        f"individual enrollment pi-1: {problem}; give the base64 of the key's marshalled TPM2B_PUBLIC (not PEM or "
        f"DER): read it with tpm2_readpublic -c {handle} -o {file} and base64 -w0 {file}"
    )


def test_tpm_keys_compare_by_bytes():
    assert differences(tpm_desired(), tpm_record(b64(EK_A))) == []
    assert differences(tpm_desired(), tpm_record("\n".join(textwrap.wrap(b64(EK_A), 64)))) == []
    assert differences(tpm_desired(EK_B), tpm_record(b64(EK_A))) == ["attestation.tpm.endorsementKey"]
    assert differences(tpm_desired(), tpm_record("not base64")) == ["attestation.tpm.endorsementKey"]
    # the SRK is compared only when given
    assert differences(tpm_desired(), tpm_record(b64(EK_A), b64(SRK_A))) == []
    assert differences(tpm_desired(storage_root_key=SRK_A), tpm_record(b64(EK_A))) == ["attestation.tpm.storageRootKey"]
    x509_record = {"registrationId": "pi-1", "attestation": {"type": "x509", "x509": {}}}
    assert differences(tpm_desired(), x509_record) == ["attestation.type", "attestation.tpm.endorsementKey"]
    assert set_paths(tpm_desired()) == ["attestation"]


def test_tpm_body_keeps_the_srk_of_the_same_tpm_only():
    record = tpm_record(b64(EK_A), "SRK-AS-DPS-HAS-IT")
    same = build_body(tpm_desired(), record)
    assert same["attestation"] == {
        "type": "tpm",
        "tpm": {"endorsementKey": b64(EK_A), "storageRootKey": "SRK-AS-DPS-HAS-IT"},
    }
    assert "etag" not in same
    new_tpm = build_body(tpm_desired(EK_B), record)
    assert new_tpm["attestation"] == {"type": "tpm", "tpm": {"endorsementKey": b64(EK_B)}}
    given = build_body(tpm_desired(EK_B, SRK_A), record)
    assert given["attestation"]["tpm"] == {"endorsementKey": b64(EK_B), "storageRootKey": b64(SRK_A)}
    created = build_body(tpm_desired(), None)
    assert created == {"registrationId": "pi-1", "attestation": {"type": "tpm", "tpm": {"endorsementKey": b64(EK_A)}}}


def test_diff_shows_tpm_keys_as_size_and_sha256():
    record = tpm_record(b64(EK_A), b64(SRK_A))
    desired = tpm_desired(EK_B)
    before, after = diff_views(desired, record, build_body(desired, record))
    assert before["attestation"]["tpm"] == {
        "endorsementKey": {"bytes": len(EK_A), "sha256": hashlib.sha256(EK_A).hexdigest().upper()},
        "storageRootKey": {"bytes": len(SRK_A), "sha256": hashlib.sha256(SRK_A).hexdigest().upper()},
    }
    assert after["attestation"]["tpm"] == {
        "endorsementKey": {"bytes": len(EK_B), "sha256": hashlib.sha256(EK_B).hexdigest().upper()}
    }
    assert b64(EK_B) not in json.dumps([before, after])


# --- the diff view ----------------------------------------------------------------------------------------------------


def test_diff_never_shows_keys():
    record = {
        "registrationId": "pi-1",
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "OLD-PRIMARY", "secondaryKey": "OLD-2"}},
        "etag": '"e"',
        "customAllocationDefinition": {"webhookUrl": "https://f/api?code=HOOKSECRET", "apiVersion": "v"},
    }
    desired = DesiredEnrollment(
        ENROLLMENTS, "pi-1", "symmetric_key", keys={"primaryKey": PRIMARY_KEY, "secondaryKey": None}
    )
    body = build_body(desired, record)
    before, after = diff_views(desired, record, body)
    text = json.dumps([before, after])
    for secret in ("OLD-PRIMARY", "OLD-2", PRIMARY_KEY, "HOOKSECRET"):
        assert secret not in text
    assert after["attestation"]["symmetricKey"] == {"primaryKey": "******** (changed)", "secondaryKey": "********"}
    assert before["attestation"]["symmetricKey"] == {"primaryKey": "********", "secondaryKey": "********"}
    assert "etag" not in before


def test_diff_of_a_create_with_generated_keys():
    desired = DesiredEnrollment(
        ENROLLMENT_GROUPS, "s", "symmetric_key", keys={"primaryKey": None, "secondaryKey": None}
    )
    before, after = diff_views(desired, None, build_body(desired, None))
    assert before == {}
    assert after["attestation"]["symmetricKey"] == {"primaryKey": GENERATED, "secondaryKey": GENERATED}


def test_diff_summarises_certificates(ca, tmp_path):
    new_ca, _ = make_certificate("New CA")
    new_path = tmp_path / "new.pem"
    new_path.write_text(pem_of(new_ca))
    desired = group(ca["path"])
    desired.certificates["secondary"] = load_certificate("g", "secondary_certificate", str(new_path))
    record = group_record(ca["certificate"])
    before, after = diff_views(desired, record, build_body(desired, record))
    certificates = after["attestation"]["x509"]["signingCertificates"]
    # the unchanged primary looks exactly as DPS reports it; the new one by subject and thumbprints, no PEM
    assert certificates["primary"] == before["attestation"]["x509"]["signingCertificates"]["primary"]
    assert certificates["secondary"] == {
        "subject": "CN=New CA",
        "sha1Thumbprint": new_ca.fingerprint(hashes.SHA1()).hex().upper(),
        "sha256Thumbprint": new_ca.fingerprint(hashes.SHA256()).hex().upper(),
    }
    assert "BEGIN CERTIFICATE" not in json.dumps(after)


def test_module_utils_import_no_third_party():
    # The module_utils run in the module's Python on the controller; they must not need `cryptography`.
    source = Path(_dps_enrollment.__file__).read_text(encoding="utf-8")
    assert "cryptography" not in source
