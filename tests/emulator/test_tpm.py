"""TPM attestation: individual enrollments with a TPM's endorsement key, DPS's challenge, and a real software TPM.

The device side runs inside swtpm with tpm2-tools (tests/support/swtpm.py): it activates the emulator's
authenticationKey (ActivateCredential with the EK, Import under the SRK), signs its SAS token with TPM2_HMAC, and
after assignment imports the second authenticationKey; the IoT Hub key then signs inside the TPM. The tests never
hold a TPM key in Python: what the TPM signs is compared with an HMAC by the key the emulator's IoT Hub API shows.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import time

import pytest
from dps_emulator.config import DEFAULT_TPM_CHALLENGE_LIFETIME, ConfigError, load_config

from tests.support.emulator import HUB_POLICY, HUB_POLICY_KEY, hub_settings

from .helpers import (
    ID_SCOPE,
    OWNER_KEY,
    SERVICE_HOST,
    Client,
    ServiceClient,
    sas_token,
    signed_sas_token,
    symmetric_individual,
)

HUB = "hub-tpm.azure-devices.net"
HUB_API_VERSION = "2021-04-12"
OWNER_RIGHTS = [
    "ServiceConfig",
    "EnrollmentRead",
    "EnrollmentWrite",
    "RegistrationStatusRead",
    "RegistrationStatusWrite",
]
SIGNED_DATA = b"hub-tpm.azure-devices.net%2Fdevices%2Ftpm-device\n1999999999"


def tpm_config(challenge_lifetime: int) -> dict:
    return {
        "id_scope": ID_SCOPE,
        "linked_hubs": [HUB],
        "defaults": {"assignment_delay": 0.2, "retry_after": 1, "tpm_challenge_lifetime": challenge_lifetime},
        "service_host": SERVICE_HOST,
        "shared_access_policies": [
            {"name": "provisioningserviceowner", "primary_key": OWNER_KEY, "rights": OWNER_RIGHTS}
        ],
        "iot_hub": hub_settings(),
    }


@pytest.fixture(scope="module")
def emulator(dps_emulator_factory):
    return dps_emulator_factory(tpm_config(challenge_lifetime=120), "dps-tpm")


@pytest.fixture(scope="module")
def short_challenge_emulator(dps_emulator_factory):
    """Challenges valid for 1 s: long enough to be answered at once, short enough to expire in a test."""
    return dps_emulator_factory(tpm_config(challenge_lifetime=1), "dps-tpm-short")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def tpm_keys(tpm, srk: bool = True) -> dict:
    """The `tpm` of a register request and of an enrollment: the TPM's EK (and SRK) as base64 TPM2B_PUBLIC."""
    keys = {"endorsementKey": b64(tpm.endorsement_key)}
    if srk:
        keys["storageRootKey"] = b64(tpm.storage_root_key)
    return keys


def tpm_enrollment(registration_id: str, tpm_attestation: dict, **fields) -> dict:
    return {"registrationId": registration_id, "attestation": {"type": "tpm", "tpm": tpm_attestation}, **fields}


def enroll(emulator, registration_id: str, tpm_attestation: dict, **fields) -> dict:
    service = ServiceClient(emulator)
    response = service.put(
        f"/enrollments/{registration_id}", tpm_enrollment(registration_id, tpm_attestation, **fields)
    )
    if response.status_code == 409:
        response = service.put(
            f"/enrollments/{registration_id}", tpm_enrollment(registration_id, tpm_attestation, **fields), if_match="*"
        )
    assert response.status_code == 200, response.text
    return response.json()


def refused(response, *fragments: str, status: int = 401, code: int = 401002) -> str:
    """A DPS error answer (no challenge in it); its message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["errorCode"] == code, body
    assert "authenticationKey" not in body, body
    for fragment in fragments:
        assert fragment in body["message"], body["message"]
    return body["message"]


def challenge(emulator, registration_id: str, tpm) -> bytes:
    """The unauthenticated register request of a TPM device: 401 with the authenticationKey (decoded)."""
    response = Client(emulator).register(registration_id, tpm=tpm_keys(tpm))
    assert response.status_code == 401, response.text
    body = response.json()
    assert set(body) == {"authenticationKey", "keyName", "message"}, body
    assert body["keyName"] == "registration"
    return base64.b64decode(body["authenticationKey"], validate=True)


def tpm_sas(registration_id: str, tpm, expiry: int | None = None) -> str:
    """A SAS token signed inside the TPM by the key at 0x81000100."""
    return signed_sas_token(registration_id, tpm.hmac, expiry)


def activate_and_sign(emulator, registration_id: str, tpm) -> str:
    tpm.import_authentication_key(challenge(emulator, registration_id, tpm))
    return tpm_sas(registration_id, tpm)


def hub_device(emulator, device_id: str) -> dict:
    hub = ServiceClient(emulator, HUB_POLICY, HUB_POLICY_KEY, resource=HUB)
    response = hub.get(f"/devices/{device_id}", api_version=HUB_API_VERSION)
    assert response.status_code == 200, response.text
    return response.json()


def hub_hmac(emulator, device_id: str, data: bytes) -> bytes:
    key = base64.b64decode(hub_device(emulator, device_id)["authentication"]["symmetricKey"]["primaryKey"])
    return hmac.new(key, data, hashlib.sha256).digest()


def billed_registers(emulator) -> int:
    return emulator.operations()["by_kind"].get("register", 0)


# --- the flow ------------------------------------------------------------------------------------------------------
def test_tpm_device_is_assigned_and_its_tpm_holds_its_hub_key(emulator, device_tpm):
    created = enroll(emulator, "tpm-device-1", tpm_keys(device_tpm), deviceId="tpm-device")
    assert created["attestation"] == {"type": "tpm", "tpm": tpm_keys(device_tpm)}
    read = ServiceClient(emulator).get("/enrollments/tpm-device-1")
    assert read.json()["attestation"] == created["attestation"]
    before = billed_registers(emulator)

    token = activate_and_sign(emulator, "tpm-device-1", device_tpm)
    # aziot-identityd's form: the signed PUT without tpm; the polls with the same token
    result = Client(emulator, sas=token).provision("tpm-device-1")
    assert result["status"] == "assigned", result
    state = result["registrationState"]
    assert (state["assignedHub"], state["deviceId"], state["substatus"]) == (HUB, "tpm-device", "initialAssignment")
    # the challenge and the signed PUT are two register operations, as DPS bills them; polls are not billed
    assert billed_registers(emulator) - before == 2

    identity = hub_device(emulator, "tpm-device")
    assert identity["authentication"]["type"] == "sas"
    # the challenge key is not the hub key ...
    assert device_tpm.hmac(SIGNED_DATA) != hub_hmac(emulator, "tpm-device", SIGNED_DATA)
    # ... the assigned answer's authenticationKey is: imported, it signs as the hub's key does
    device_tpm.import_authentication_key(base64.b64decode(state["tpm"]["authenticationKey"]))
    assert device_tpm.hmac(SIGNED_DATA) == hub_hmac(emulator, "tpm-device", SIGNED_DATA)
    assert emulator.registrations()["tpm-device-1"]["attestation"] == "tpm"


def test_node_style_reregistration_keeps_the_hub_key(emulator, device_tpm):
    """The Node client sends tpm again with the signed PUT; a second registration keeps the hub identity's key."""
    enroll(emulator, "tpm-device-2", tpm_keys(device_tpm), deviceId="tpm-device-2")
    results = []
    for _ in range(2):
        token = activate_and_sign(emulator, "tpm-device-2", device_tpm)
        result = Client(emulator, sas=token).provision("tpm-device-2", tpm=tpm_keys(device_tpm))
        assert result["status"] == "assigned", result
        device_tpm.import_authentication_key(base64.b64decode(result["registrationState"]["tpm"]["authenticationKey"]))
        results.append(device_tpm.hmac(SIGNED_DATA))
    assert results[0] == results[1] == hub_hmac(emulator, "tpm-device-2", SIGNED_DATA)


def test_enrollment_without_srk_takes_the_device_srk(emulator, device_tpm):
    enroll(emulator, "tpm-no-srk", tpm_keys(device_tpm, srk=False))
    token = activate_and_sign(emulator, "tpm-no-srk", device_tpm)
    assert Client(emulator, sas=token).provision("tpm-no-srk")["status"] == "assigned"


def test_the_endorsement_key_is_compared_as_a_key_not_as_bytes(emulator, device_tpm):
    """The enrollment's EK spelled with its exponent (65537) instead of 0 (the default): the same key and template."""
    exponent_at = 2 + 2 + 2 + 4 + 34 + 6 + 2 + 2  # size, type, nameAlg, attributes, authPolicy, symmetric, scheme, bits
    assert device_tpm.endorsement_key[exponent_at : exponent_at + 4] == b"\x00\x00\x00\x00"
    spelled = _mutated(device_tpm.endorsement_key, exponent_at, struct.pack(">I", 65537))
    enroll(emulator, "tpm-exponent", {"endorsementKey": b64(spelled)})
    token = activate_and_sign(emulator, "tpm-exponent", device_tpm)
    assert Client(emulator, sas=token).provision("tpm-exponent")["status"] == "assigned"


def test_enrollment_lifecycle_through_the_service_api(emulator, device_tpm, other_tpm):
    service = ServiceClient(emulator)
    created = enroll(emulator, "tpm-crud", tpm_keys(device_tpm))
    updated = service.put(
        "/enrollments/tpm-crud", tpm_enrollment("tpm-crud", tpm_keys(other_tpm)), if_match=created["etag"]
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["attestation"]["tpm"]["endorsementKey"] == b64(other_tpm.endorsement_key)
    mechanism = service.post("/enrollments/tpm-crud/attestationmechanism")
    assert mechanism.json() == {"type": "tpm", "tpm": tpm_keys(other_tpm)}
    listed = service.post("/enrollments/query", {"query": "SELECT *"})
    assert any(item["registrationId"] == "tpm-crud" for item in listed.json())
    # the old TPM no longer matches, the new one does
    refused(Client(emulator).register("tpm-crud", tpm=tpm_keys(device_tpm)), "endorsement key")
    challenge(emulator, "tpm-crud", other_tpm)
    assert service.delete("/enrollments/tpm-crud").status_code == 204
    refused(Client(emulator).register("tpm-crud", tpm=tpm_keys(other_tpm)), "no individual enrollment")


# --- refusals --------------------------------------------------------------------------------------------------------
def test_an_endorsement_key_other_than_the_enrolled_one_is_refused(emulator, device_tpm, other_tpm):
    enroll(emulator, "tpm-ek-mismatch", tpm_keys(device_tpm, srk=False))
    response = Client(emulator).register("tpm-ek-mismatch", tpm=tpm_keys(other_tpm))
    refused(response, "endorsement key", "does not match")


def test_a_storage_root_key_other_than_the_enrolled_one_is_refused(emulator, device_tpm, other_tpm):
    keys = {"endorsementKey": b64(device_tpm.endorsement_key), "storageRootKey": b64(other_tpm.storage_root_key)}
    enroll(emulator, "tpm-srk-mismatch", keys)
    response = Client(emulator).register("tpm-srk-mismatch", tpm=tpm_keys(device_tpm))
    refused(response, "storage root key", "does not match")


def test_a_sas_signed_by_another_key_is_refused(emulator, device_tpm):
    enroll(emulator, "tpm-forged", tpm_keys(device_tpm))
    # no challenge yet: nothing can verify a token
    forged_key = b64(secrets.token_bytes(32))
    refused(Client(emulator, sas=sas_token("tpm-forged", forged_key)).register("tpm-forged"), "no TPM challenge")
    challenge(emulator, "tpm-forged", device_tpm)
    refused(Client(emulator, sas=sas_token("tpm-forged", forged_key)).register("tpm-forged"), "does not verify")
    # a key from an older challenge: the TPM signs with what it imported, then asks again without importing
    token = activate_and_sign(emulator, "tpm-forged", device_tpm)
    challenge(emulator, "tpm-forged", device_tpm)
    refused(Client(emulator, sas=token).register("tpm-forged"), "older challenge")


def test_a_challenge_registers_once(emulator, device_tpm):
    """A token signed with a challenge's key is good for one register request (and its polls): a replay is refused."""
    enroll(emulator, "tpm-replay", tpm_keys(device_tpm))
    token = activate_and_sign(emulator, "tpm-replay", device_tpm)
    assert Client(emulator, sas=token).provision("tpm-replay")["status"] == "assigned"
    refused(Client(emulator, sas=token).register("tpm-replay"), "replayed token")
    token = activate_and_sign(emulator, "tpm-replay", device_tpm)
    assert Client(emulator, sas=token).provision("tpm-replay")["status"] == "assigned"


def test_polls_need_the_token_of_the_registration(emulator, device_tpm):
    enroll(emulator, "tpm-polls", tpm_keys(device_tpm))
    token = activate_and_sign(emulator, "tpm-polls", device_tpm)
    response = Client(emulator, sas=token).register("tpm-polls")
    assert response.status_code == 202, response.text
    operation_id = response.json()["operationId"]
    forged = sas_token("tpm-polls", b64(secrets.token_bytes(32)))
    refused(Client(emulator, sas=forged).operation("tpm-polls", operation_id), "this operation was registered with")
    deadline = time.monotonic() + 10
    while (polled := Client(emulator, sas=token).operation("tpm-polls", operation_id)).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert polled.status_code == 200 and polled.json()["status"] == "assigned", polled.text


def test_an_expired_sas_token_is_refused(emulator, device_tpm):
    enroll(emulator, "tpm-late-token", tpm_keys(device_tpm))
    device_tpm.import_authentication_key(challenge(emulator, "tpm-late-token", device_tpm))
    token = tpm_sas("tpm-late-token", device_tpm, expiry=int(time.time()) - 5)
    refused(Client(emulator, sas=token).register("tpm-late-token"), "expired")


def test_an_expired_challenge_is_refused(short_challenge_emulator, device_tpm):
    emulator = short_challenge_emulator
    enroll(emulator, "tpm-stale", tpm_keys(device_tpm))
    token = activate_and_sign(emulator, "tpm-stale", device_tpm)
    time.sleep(1.5)
    refused(Client(emulator, sas=token).register("tpm-stale"), "challenge key expired")
    # a new challenge answered at once is accepted
    token = activate_and_sign(emulator, "tpm-stale", device_tpm)
    assert Client(emulator, sas=token).register("tpm-stale").status_code == 202


def test_a_disabled_enrollment_is_refused(emulator, device_tpm):
    enroll(emulator, "tpm-disabled", tpm_keys(device_tpm), provisioningStatus="disabled")
    refused(Client(emulator).register("tpm-disabled", tpm=tpm_keys(device_tpm)), "is disabled")
    # disabled between the challenge and the signed request
    enroll(emulator, "tpm-disabled-later", tpm_keys(device_tpm))
    token = activate_and_sign(emulator, "tpm-disabled-later", device_tpm)
    enroll(emulator, "tpm-disabled-later", tpm_keys(device_tpm), provisioningStatus="disabled")
    refused(Client(emulator, sas=token).register("tpm-disabled-later"), "is disabled")


def test_registrations_that_are_not_tpm_enrollments_are_refused(emulator, device_tpm):
    refused(Client(emulator).register("tpm-unknown", tpm=tpm_keys(device_tpm)), "no individual enrollment")
    service = ServiceClient(emulator)
    assert service.put("/enrollments/sym-not-tpm", symmetric_individual("sym-not-tpm")).status_code in (200, 409)
    refused(Client(emulator).register("sym-not-tpm", tpm=tpm_keys(device_tpm)), "symmetric key attestation, not TPM")


def test_a_tpm_enrollment_group_is_refused(emulator, device_tpm):
    group = {"enrollmentGroupId": "tpm-group", "attestation": {"type": "tpm", "tpm": tpm_keys(device_tpm)}}
    response = ServiceClient(emulator).put("/enrollmentGroups/tpm-group", group)
    refused(response, "not supported for enrollment groups", status=400, code=400001)
    assert ServiceClient(emulator).get("/enrollmentGroups/tpm-group").status_code == 404


def _mutated(key: bytes, offset: int, value: bytes) -> bytes:
    return key[:offset] + value + key[offset + len(value) :]


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda ek: b"not base64!", "not valid base64"),
        (lambda ek: ek[:100], "not a TPM2B_PUBLIC"),
        (lambda ek: ek + b"\x00", "not a TPM2B_PUBLIC"),
        (lambda ek: _mutated(ek, 2, b"\x00\x23"), "not an RSA key"),
        (lambda ek: _mutated(ek, 4, b"\x00\x0c"), "nameAlg"),
        # keyBits follows type, nameAlg, attributes, authPolicy (2 + 32), symmetric (6), scheme (2)
        (lambda ek: _mutated(ek, 2 + 2 + 2 + 4 + 34 + 6 + 2, b"\x04\x00"), "RSA-1024"),
        (lambda ek: _mutated(ek, 2 + 2 + 2, struct.pack(">I", 0x00040072)), "not a restricted decryption"),
    ],
)
def test_a_malformed_endorsement_key_is_refused(emulator, device_tpm, mutate, fragment):
    bad = mutate(device_tpm.endorsement_key)
    value = bad.decode() if bad == b"not base64!" else b64(bad)
    response = ServiceClient(emulator).put(
        "/enrollments/tpm-malformed", tpm_enrollment("tpm-malformed", {"endorsementKey": value})
    )
    refused(response, "attestation.tpm.endorsementKey", fragment, status=400, code=400001)
    # the same key in a device's register request
    enroll(emulator, "tpm-malformed-request", tpm_keys(device_tpm))
    response = Client(emulator).register("tpm-malformed-request", tpm={"endorsementKey": value})
    refused(response, "tpm.endorsementKey", status=400, code=400001)


def test_an_enrollment_needs_an_endorsement_key(emulator, device_tpm):
    response = ServiceClient(emulator).put(
        "/enrollments/tpm-no-ek", tpm_enrollment("tpm-no-ek", {"storageRootKey": b64(device_tpm.storage_root_key)})
    )
    refused(response, "endorsementKey is required", status=400, code=400001)


@pytest.mark.parametrize("lifetime", [0, -1, "60", True, 86401])
def test_the_challenge_lifetime_must_be_seconds(config_file, lifetime):
    text = config_file.read_text(encoding="utf-8")
    bad = config_file.with_name("tpm-lifetime-bad.yml")
    bad.write_text(text.replace("  retry_after: 1\n", f"  retry_after: 1\n  tpm_challenge_lifetime: {lifetime!r}\n"))
    with pytest.raises(ConfigError, match="tpm_challenge_lifetime must be an integer number of seconds"):
        load_config(bad)
    assert load_config(config_file).tpm_challenge_lifetime == DEFAULT_TPM_CHALLENGE_LIFETIME == 300
