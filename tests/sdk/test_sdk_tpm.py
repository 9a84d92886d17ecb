"""DPS TPM attestation judged by Microsoft's Node TPM client: azure-iot-security-tpm's TpmSecurityClient (tss.js
inside) on a real software TPM (swtpm), azure-iot-provisioning-device over azure-iot-provisioning-device-http, and
the enrollment made with azure-iot-provisioning-service (exact versions in package-lock.json). tests/sdk/tpm.js runs
them; tpm_device.js gives tss.js the swtpm's data port (raw TPM 2.0 commands) in place of its simulator transport.

What the Node client does on the wire (azure-iot-provisioning-device 1.9.1 dist/tpm_registration.js,
azure-iot-provisioning-device-http 1.9.1 dist/http.js, azure-iot-security-tpm 1.9.3 dist/tpm.js):

- It reads (or creates, when absent) the EK at 0x81010001 and the SRK at 0x81000001, and PUTs
  {registrationId, tpm: {endorsementKey, storageRootKey}} (base64 TPM2B_PUBLIC) without Authorization.
- It needs 401 with a JSON body whose `authenticationKey` is a string (anything else: FormatError "The server did
  NOT respond with an appropriately formatted authentication blob."; any other status: InvalidOperationError).
- It activates that blob in the TPM (ActivateCredential with the EK, Import under the SRK, persist at 0x81000100),
  signs `<url-encoded idScope/registrations/id>\\n<se>` with TPM2_HMAC and PUTs again, with the same body and
  `SharedAccessSignature sr=..&sig=..&se=..&skn=registration`; it polls with the same token.
- The assigned answer must carry registrationState.tpm.authenticationKey: the client imports that key too (it
  throws without it); the key then signs for the device at its hub.

swtpm, tpm2-tools and node are needed; without them the test fails with the fix.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from tests.sdk.conftest import HUB, run_node

REGISTRATION_ID = "sdk-tpm-0001"
DEVICE_ID = "sdk-tpm-device-0001"
HUB_SIGN_DATA = "sdk-tpm-judge\n0"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def enroll(node: str, emulator, registration_id: str, device_id: str, ek: bytes, srk: bytes) -> dict:
    """tpm.js enroll: the service SDK's TPM individual enrollment; every step must succeed."""
    out = run_node(
        node,
        emulator,
        "tpm.js",
        "enroll",
        DPS_REGISTRATION_ID=registration_id,
        DPS_DEVICE_ID=device_id,
        DPS_TPM_ENDORSEMENT_KEY=b64(ek),
        DPS_TPM_STORAGE_ROOT_KEY=b64(srk),
    )
    errors = {step: outcome for step, outcome in out.items() if isinstance(outcome, dict) and "error" in outcome}
    assert not errors, errors
    return out


def register(node: str, emulator, registration_id: str, tpm) -> dict:
    """tpm.js register with the TPM client on `tpm`; node holds the swtpm's data port only while it runs."""
    return run_node(
        node,
        emulator,
        "tpm.js",
        "register",
        DPS_REGISTRATION_ID=registration_id,
        SWTPM_HOST=tpm.host,
        SWTPM_PORT=str(tpm.port),
        HUB_SIGN_DATA=HUB_SIGN_DATA,
    )


def assert_assigned(out: dict, tpm) -> dict:
    """The client sent the EK and SRK tpm2-tools read from its TPM, answered the challenge and was assigned."""
    assert (out["endorsementKey"], out["storageRootKey"]) == (b64(tpm.endorsement_key), b64(tpm.storage_root_key))
    result, wire = out["register"], out["wire"]
    assert "error" not in result, f"{result}\nwire: {wire}"
    state = result["registrationState"]
    assert (result["status"], state["registrationId"], state["assignedHub"], state["deviceId"]) == (
        "assigned",
        REGISTRATION_ID,
        HUB,
        DEVICE_ID,
    ), result
    # an unauthenticated PUT answered 401 with the activation blob, a signed PUT, polls with the same token
    challenge, signed, *polls = wire
    assert (challenge["method"], challenge["authorization"], challenge["status"]) == ("PUT", False, 401), wire
    assert challenge["answer"]["authenticationKey"].startswith("<base64:"), wire
    assert (signed["method"], signed["authorization"], signed["status"]) == ("PUT", True, 202), wire
    assert polls and all((poll["method"], poll["authorization"]) == ("GET", True) for poll in polls), wire
    return state


def test_node_tpm_client_registers(node, emulator, device_tpm):
    """The enrollment holds the EK and SRK that tpm2-tools read from the TPM; Microsoft's TPM client reads the same
    keys from the TPM, answers DPS's challenge inside it and is assigned; the key of the assigned answer, now in the
    TPM, signs as the device's IoT Hub key does. A second registration imports a new challenge and converges."""
    enrolled = enroll(
        node, emulator, REGISTRATION_ID, DEVICE_ID, device_tpm.endorsement_key, device_tpm.storage_root_key
    )
    tpm_attestation = {
        "endorsementKey": b64(device_tpm.endorsement_key),
        "storageRootKey": b64(device_tpm.storage_root_key),
    }
    assert enrolled["get"]["attestation"] == {"type": "tpm", "tpm": tpm_attestation}, enrolled["get"]
    assert enrolled["attestation"] == {"type": "tpm", "tpm": tpm_attestation}, enrolled["attestation"]
    assert enrolled["get"]["deviceId"] == DEVICE_ID

    for attempt in ("first", "again"):
        out = register(node, emulator, REGISTRATION_ID, device_tpm)
        state = assert_assigned(out, device_tpm)
        assert state["tpm"]["authenticationKey"], attempt

        hub_device = {device["deviceId"]: device for device in emulator.devices()}[DEVICE_ID]
        assert (hub_device["assignedHub"], hub_device["attestation"]) == (HUB, "tpm"), hub_device
        hub_key = base64.b64decode(hub_device["symmetricKey"]["primaryKey"])
        expected = hmac.new(hub_key, HUB_SIGN_DATA.encode(), hashlib.sha256).digest()
        assert base64.b64decode(out["hubSignature"]) == expected, attempt
        # tpm2-tools, on the same TPM once node let go of it, finds that key at 0x81000100
        assert device_tpm.hmac(HUB_SIGN_DATA.encode()) == expected, attempt
    assert hub_device["registrationCount"] == 2, hub_device


@pytest.mark.parametrize("mismatch", ["endorsement key", "storage root key"])
def test_node_tpm_client_refused_when_the_tpm_is_not_enrolled(node, emulator, device_tpm, other_tpm, mismatch):
    """The enrollment holds another TPM's EK (or SRK): the emulator answers the client's first PUT 401 without a
    challenge (401002); http.js reports a 401 without authenticationKey as a FormatError. Nothing reaches the hub."""
    registration_id = f"sdk-tpm-not-{mismatch.replace(' ', '-')}"
    ek = other_tpm.endorsement_key if mismatch == "endorsement key" else device_tpm.endorsement_key
    srk = other_tpm.storage_root_key if mismatch == "storage root key" else device_tpm.storage_root_key
    assert (ek, srk) != (device_tpm.endorsement_key, device_tpm.storage_root_key)
    enroll(node, emulator, registration_id, registration_id, ek, srk)

    out = register(node, emulator, registration_id, device_tpm)
    result, wire = out["register"], out["wire"]
    assert (result["error"], result["message"]) == (
        "FormatError",
        "The server did NOT respond with an appropriately formatted authentication blob.",
    ), f"{result}\nwire: {wire}"
    assert len(wire) == 1, wire
    refusal = wire[0]
    assert (refusal["authorization"], refusal["status"], refusal["answer"]["errorCode"]) == (False, 401, 401002), wire
    assert "authenticationKey" not in refusal["answer"], wire
    assert registration_id not in {device["deviceId"] for device in emulator.devices()}
