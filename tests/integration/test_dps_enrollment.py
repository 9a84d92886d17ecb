"""dps_enrollment, dps_enrollment_info and dps_registration_record through ansible-playbook against the local DPS
emulator's service API (the dps_emulator package).

Every state-changing case runs its task four times, as community.crypto's targets do: check mode (changed), real
run (changed), check mode again (not changed), real run again (not changed). The emulator's own view of each
record is read back with dps_enrollment_info, and devices register through the device API with dps_register, so a
generated group key and an individual enrollment are shown to work, not only to exist. The TPM case enrolls the
endorsement and storage root keys of real software TPMs (swtpm, tests/support/swtpm.py), then a replacement TPM.
"""

from __future__ import annotations

import base64
import hashlib
import json
import textwrap
from pathlib import Path

import pytest
import requests

from tests.support.pki import Pki
from tests.support.playbook import assert_four, four_runs, run_playbook

ID_SCOPE = "0ne00SVCTEST"
HUB_A = "hub-a.azure-devices.net"
HUB_B = "hub-b.azure-devices.net"
OWNER_KEY = base64.b64encode(b"service-owner-key-0123456789abcd").decode()
READER_KEY = base64.b64encode(b"service-reader-key-0123456789abc").decode()
WRONG_KEY = base64.b64encode(b"not-the-owner-key-0123456789abcd").decode()
# A second intermediate under the same root, for the certificate rollover.
ROLLOVER_CA = "intermediate-2027.pem"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    made = Pki(tmp_path_factory.mktemp("pki"), label="iotfleet Service Test")
    made.ca("iotfleet intermediate-2027", issuer=made.root, filename=ROLLOVER_CA)
    return made


@pytest.fixture(scope="module")
def emulator(pki, dps_emulator_factory):
    return dps_emulator_factory(
        {
            "id_scope": ID_SCOPE,
            "linked_hubs": [HUB_A, HUB_B],
            "defaults": {"assignment_delay": 0.2, "retry_after": 1},
            "shared_access_policies": [
                {
                    "name": "provisioningserviceowner",
                    "primary_key": OWNER_KEY,
                    "rights": [
                        "EnrollmentRead",
                        "EnrollmentWrite",
                        "RegistrationStatusRead",
                        "RegistrationStatusWrite",
                    ],
                },
                {"name": "enrollmentread", "primary_key": READER_KEY, "rights": ["EnrollmentRead"]},
            ],
            "certificates": [{"name": "service-test-root", "certificate": str(pki.root_path), "verified": True}],
        }
    )


def connection_string(emulator, policy: str = "provisioningserviceowner", key: str = OWNER_KEY) -> str:
    return f"HostName={emulator.host}:{emulator.port};SharedAccessKeyName={policy};SharedAccessKey={key}"


def run_play(tmp_path: Path, emulator, tasks: list[dict]) -> dict:
    """Run `tasks` on localhost with the service connection set once (module_defaults on the action group), then
    return every registered result."""
    defaults = {"connection_string": connection_string(emulator), "ca_path": emulator.ca_cert, "timeout": 30}
    run = run_playbook(tmp_path, tasks, play={"module_defaults": {"group/iotfleet.aziot.dps_service": defaults}})
    assert run.returncode == 0, run.output()
    return run.results


def info_task(register: str, **args) -> dict:
    return {"iotfleet.aziot.dps_enrollment_info": args, "register": register}


ENROLLMENT = "iotfleet.aziot.dps_enrollment"


def test_x509_group_create_update_rollover_and_delete(emulator, pki, tmp_path):
    group = {
        "enrollment_group_id": "fleet-plant-3",
        "attestation": "x509",
        "primary_certificate": str(pki.intermediate_path),
        "iot_hubs": [HUB_A],
        "allocation_policy": "hashed",
        "iot_edge": True,
        "initial_twin": {"tags": {"site": "plant-3"}, "desired_properties": {"telemetryInterval": 30}},
        "reprovision_policy": {"migrate_device_data": False},
    }
    updated = dict(group, iot_hubs=[HUB_A, HUB_B], initial_twin={"tags": {"site": "plant-3", "ring": "beta"}})
    rollover = dict(updated, secondary_certificate=str(pki.directory / ROLLOVER_CA))
    promoted = dict(updated, primary_certificate=str(pki.directory / ROLLOVER_CA))
    tasks = [
        *four_runs(ENROLLMENT, group, "create"),
        *four_runs(ENROLLMENT, updated, "update"),
        *four_runs(ENROLLMENT, rollover, "rollover"),
        *four_runs(ENROLLMENT, promoted, "promote"),
        info_task("after", kind="enrollment_group", id="fleet-plant-3"),
        *four_runs(ENROLLMENT, {"enrollment_group_id": "fleet-plant-3", "state": "absent"}, "delete"),
        info_task("gone", kind="enrollment_group", id="fleet-plant-3"),
    ]
    results = run_play(tmp_path, emulator, tasks)
    for name in ("create", "update", "rollover", "promote", "delete"):
        assert_four(results, name)

    assert results["create_check1"]["enrollment"] == {}
    assert results["create_real1"]["differences"] == [
        "attestation",
        "iotHubs",
        "allocationPolicy",
        "capabilities.iotEdge",
        "initialTwin.tags",
        "initialTwin.properties.desired",
        "reprovisionPolicy.migrateDeviceData",
    ]
    assert results["create_real2"]["differences"] == []
    assert results["create_real2"]["requests"] == 1  # one GET, nothing written
    assert results["update_real1"]["differences"] == ["iotHubs", "initialTwin.tags"]
    assert results["rollover_real1"]["differences"] == ["attestation.x509.signingCertificates.secondary"]
    assert results["promote_real1"]["differences"] == [
        "attestation.x509.signingCertificates.primary",
        "attestation.x509.signingCertificates.secondary",
    ]
    # the diff shows certificates by subject and thumbprint, never as PEM
    after = json.loads(results["rollover_real1"]["diff"]["after"])
    secondary = after["attestation"]["x509"]["signingCertificates"]["secondary"]
    assert secondary["subject"] == "CN=iotfleet intermediate-2027"
    assert "BEGIN CERTIFICATE" not in json.dumps(results["rollover_real1"]["diff"])

    record = results["after"]["enrollment_groups"][0]
    assert sorted(record["iotHubs"]) == [HUB_A, HUB_B]
    assert record["initialTwin"]["tags"] == {"site": "plant-3", "ring": "beta"}
    assert record["initialTwin"]["properties"]["desired"] == {"telemetryInterval": 30}  # not set by update: kept
    assert record["reprovisionPolicy"] == {"updateHubAssignment": True, "migrateDeviceData": False}
    certificates = record["attestation"]["x509"]["signingCertificates"]
    assert set(certificates) == {"primary"}
    assert certificates["primary"]["info"]["subjectName"].endswith("iotfleet intermediate-2027")
    assert results["delete_real1"]["differences"] == ["enrollment"]
    assert results["gone"]["enrollment_groups"] == []


def test_symmetric_key_group_generated_keys_register_a_device_then_revoke(emulator, tmp_path):
    group = {"enrollment_group_id": "sensors", "attestation": "symmetric_key", "iot_hubs": [HUB_B]}
    register = {
        "id_scope": ID_SCOPE,
        "registration_id": "sensor-0007",
        "provisioning_host": f"{emulator.host}:{emulator.port}",
        "ca_path": emulator.ca_cert,
        "attestation": "symmetric_key",
        "group_key": "{{ sensors_real1.generated_keys.primary_key }}",
        "timeout": 30,
    }
    tasks = [
        *four_runs(ENROLLMENT, group, "sensors"),
        {"iotfleet.aziot.dps_register": register, "register": "device"},
        info_task("group_registrations", kind="registration", enrollment_group_id="sensors"),
        *four_runs(
            "iotfleet.aziot.dps_registration_record",
            {"registration_id": "sensor-0007", "state": "absent"},
            "revoke",
        ),
        info_task("after_revoke", kind="registration", id="sensor-0007"),
    ]
    results = run_play(tmp_path, emulator, tasks)
    assert_four(results, "sensors")
    assert_four(results, "revoke")

    generated = results["sensors_real1"]["generated_keys"]
    assert set(generated) == {"primary_key", "secondary_key"}
    assert len(base64.b64decode(generated["primary_key"])) >= 16
    for name in ("sensors_check1", "sensors_check2", "sensors_real2"):
        assert "generated_keys" not in results[name]  # only the run that created the group returns them
    everything_but_the_creation = json.dumps({k: v for k, v in results.items() if k != "sensors_real1"})
    assert generated["primary_key"] not in everything_but_the_creation
    assert generated["primary_key"] not in json.dumps(results["sensors_real1"]["diff"])
    # DPS returns the generated keys in its create answer (as the emulator does); the module's record masks them.
    assert set(results["sensors_real1"]["enrollment"]["attestation"]["symmetricKey"].values()) <= {"********"}

    # the generated key is the group's real key: a device derived from it is assigned
    assert results["device"]["status"] == "assigned"
    assert results["device"]["assigned_hub"] == HUB_B
    registrations = results["group_registrations"]["registrations"]
    assert [record["registrationId"] for record in registrations] == ["sensor-0007"]
    assert registrations[0]["status"] == "assigned"
    assert registrations[0]["etag"]
    assert results["group_registrations"]["status_counts"] == {"assigned": 1}
    assert results["revoke_real1"]["registration"]["assignedHub"] == HUB_B
    assert results["after_revoke"]["registrations"] == []
    # deleting DPS's record leaves the device in its hub (IoT Hub's registry is not DPS's)
    assert "sensor-0007" in {device["registrationId"] for device in emulator.devices()}


def test_individual_x509_enrollment_registers_then_is_disabled(emulator, pki, tmp_path):
    device = pki.device("pi-svc-0042")
    enrollment = {
        "registration_id": "pi-svc-0042",
        "attestation": "x509",
        "primary_certificate": device.chain_file,  # a full-chain file: its first certificate is the device's
        "device_id": "pi-svc-0042-edge",
        "iot_hubs": [HUB_A],
    }
    register = {
        "id_scope": ID_SCOPE,
        "registration_id": "pi-svc-0042",
        "provisioning_host": f"{emulator.host}:{emulator.port}",
        "ca_path": emulator.ca_cert,
        "client_cert": device.chain_file,
        "client_key": device.key_file,
        "timeout": 30,
    }
    tasks = [
        *four_runs(ENROLLMENT, enrollment, "individual"),
        {"iotfleet.aziot.dps_register": register, "register": "device"},
        info_task("record", kind="registration", id="pi-svc-0042"),
        *four_runs(ENROLLMENT, dict(enrollment, provisioning_status="disabled"), "disable"),
        info_task("enrollments", kind="enrollment"),
    ]
    results = run_play(tmp_path, emulator, tasks)
    assert_four(results, "individual")
    assert_four(results, "disable")
    assert (results["device"]["status"], results["device"]["device_id"]) == ("assigned", "pi-svc-0042-edge")
    record = results["record"]["registrations"][0]
    assert (record["status"], record["assignedHub"], record["deviceId"]) == ("assigned", HUB_A, "pi-svc-0042-edge")
    assert results["disable_real1"]["differences"] == ["provisioningStatus"]
    listed = {item["registrationId"]: item for item in results["enrollments"]["enrollments"]}
    assert listed["pi-svc-0042"]["provisioningStatus"] == "disabled"
    client = listed["pi-svc-0042"]["attestation"]["x509"]["clientCertificates"]["primary"]["info"]
    assert client["sha256Thumbprint"].replace(":", "").upper() == device.sha256


def test_group_on_a_ca_reference(emulator, tmp_path):
    group = {
        "enrollment_group_id": "fleet-by-reference",
        "attestation": "x509",
        "primary_ca_reference": "service-test-root",
    }
    results = run_play(tmp_path, emulator, four_runs(ENROLLMENT, group, "reference"))
    assert_four(results, "reference")
    x509_attestation = results["reference_real1"]["enrollment"]["attestation"]["x509"]
    assert x509_attestation["caReferences"]["primary"].lower() == "service-test-root"


def test_errors_a_user_can_act_on(emulator, pki, tmp_path):
    base = {
        "enrollment_group_id": "fleet-errors",
        "attestation": "x509",
        "primary_certificate": str(pki.intermediate_path),
    }
    failing = {"failed_when": False}
    tasks = [
        {
            ENROLLMENT: dict(base, connection_string=connection_string(emulator, key=WRONG_KEY)),
            "register": "wrong_key",
            **failing,
        },
        {
            ENROLLMENT: dict(base, connection_string=connection_string(emulator, "enrollmentread", READER_KEY)),
            "register": "read_only",
            **failing,
        },
        {ENROLLMENT: dict(base, iot_hubs=["nope.azure-devices.net"]), "register": "unknown_hub", **failing},
        {
            ENROLLMENT: dict(base, connection_string=f"HostName={emulator.host}:{emulator.port};SharedAccessKey=x"),
            "register": "malformed",
            **failing,
        },
        {ENROLLMENT: dict(base, primary_certificate=device_key_file(pki)), "register": "private_key", **failing},
        info_task("nothing_created", kind="enrollment_group", id="fleet-errors"),
    ]
    results = run_play(tmp_path, emulator, tasks)
    assert results["wrong_key"]["msg"].startswith(
        "enrollment group fleet-errors: the DPS refused the shared access signature: check SharedAccessKey of "
        "policy provisioningserviceowner and the controller clock"
    )
    assert results["read_only"]["msg"].startswith(
        "enrollment group fleet-errors: policy enrollmentread may not create enrollment group fleet-errors: give it "
        "the EnrollmentWrite permission"
    )
    assert results["unknown_hub"]["msg"].startswith(
        "enrollment group fleet-errors: DPS does not accept iot_hubs nope.azure-devices.net: every hub must be linked"
    )
    assert results["malformed"]["msg"].startswith(
        "enrollment group fleet-errors: connection_string has no SharedAccessKeyName"
    )
    assert "requests" not in results["malformed"]  # refused before any request
    assert results["private_key"]["msg"].endswith(
        "holds a private key; give a file with the certificate only (a private key never goes to DPS)"
    )
    for name in ("wrong_key", "read_only", "unknown_hub", "malformed", "private_key"):
        assert "\n" not in results[name]["msg"]
        assert OWNER_KEY not in json.dumps(results[name])
    assert results["nothing_created"]["enrollment_groups"] == []


def device_key_file(pki: Pki) -> str:
    """A PEM file holding a certificate and its private key: what must never be uploaded."""
    device = pki.device("pi-with-key")
    path = Path(device.leaf_file).with_suffix(".bundle.pem")
    path.write_bytes(Path(device.leaf_file).read_bytes() + Path(device.key_file).read_bytes())
    return str(path)


def test_individual_tpm_enrollment_then_a_replaced_tpm(emulator, software_tpm, tmp_path):
    original, replacement = software_tpm("enrollment-tpm-a"), software_tpm("enrollment-tpm-b")

    def keys_of(tpm) -> dict:
        return {
            "endorsement_key": base64.b64encode(tpm.endorsement_key).decode(),
            "storage_root_key": base64.b64encode(tpm.storage_root_key).decode(),
        }

    enrollment = {
        "registration_id": "pi-svc-tpm",
        "attestation": "tpm",
        "iot_hubs": [HUB_A],
        "initial_twin": {"tags": {"attestation": "tpm"}},
        **keys_of(original),
    }
    replaced = dict(enrollment, **keys_of(replacement))
    # base64 with line breaks (base64 without -w0) is the same key: no change
    wrapped = dict(replaced, endorsement_key="\n".join(textwrap.wrap(replaced["endorsement_key"], 76)) + "\n")
    failing = {"failed_when": False}
    tasks = [
        *four_runs(ENROLLMENT, enrollment, "tpm"),
        *four_runs(ENROLLMENT, replaced, "replaced"),
        {ENROLLMENT: wrapped, "register": "wrapped"},
        info_task("record", kind="enrollment", id="pi-svc-tpm"),
        {
            ENROLLMENT: {
                "enrollment_group_id": "tpm-fleet",
                "attestation": "tpm",
                "endorsement_key": enrollment["endorsement_key"],
            },
            "register": "tpm_group",
            **failing,
        },
        {
            ENROLLMENT: dict(enrollment, registration_id="pi-svc-tpm-bad", endorsement_key=pem_public_key(original)),
            "register": "malformed",
            **failing,
        },
        info_task("not_created", kind="enrollment", id="pi-svc-tpm-bad"),
    ]
    results = run_play(tmp_path, emulator, tasks)
    assert_four(results, "tpm")
    assert_four(results, "replaced")
    assert results["wrapped"]["changed"] is False

    assert results["tpm_real1"]["differences"] == ["attestation", "iotHubs", "initialTwin.tags"]
    assert results["tpm_real2"]["requests"] == 1  # one GET, nothing written
    assert results["replaced_real1"]["differences"] == [
        "attestation.tpm.endorsementKey",
        "attestation.tpm.storageRootKey",
    ]
    assert results["replaced_real1"]["etag"] != results["tpm_real1"]["etag"]
    # the diff shows the keys as size and SHA-256 of their TPM2B_PUBLIC, not as base64
    before = json.loads(results["replaced_real1"]["diff"]["before"])["attestation"]["tpm"]
    after = json.loads(results["replaced_real1"]["diff"]["after"])["attestation"]["tpm"]
    assert before["endorsementKey"]["sha256"] == hashlib.sha256(original.endorsement_key).hexdigest().upper()
    assert after["endorsementKey"]["sha256"] == hashlib.sha256(replacement.endorsement_key).hexdigest().upper()
    assert replaced["endorsement_key"] not in json.dumps(results["replaced_real1"]["diff"])

    record = results["record"]["enrollments"][0]
    assert record["attestation"]["type"] == "tpm"
    tpm = record["attestation"]["tpm"]
    assert base64.b64decode(tpm["endorsementKey"]) == replacement.endorsement_key
    assert base64.b64decode(tpm["storageRootKey"]) == replacement.storage_root_key
    assert record["initialTwin"]["tags"] == {"attestation": "tpm"}

    assert results["tpm_group"]["msg"] == (
        "enrollment group tpm-fleet: attestation=tpm is for individual enrollments (registration_id): DPS has no TPM "
        "enrollment groups; enroll each TPM device with its endorsement key, or use x509 or symmetric_key for a group"
    )
    assert results["malformed"]["msg"].startswith("individual enrollment pi-svc-tpm-bad: endorsement_key is not a")
    assert results["malformed"]["msg"].endswith(
        "read it with tpm2_readpublic -c 0x81010001 -o ek.pub and base64 -w0 ek.pub"
    )
    for name in ("tpm_group", "malformed"):
        assert "\n" not in results[name]["msg"]
        assert "requests" not in results[name]  # refused before any request
    assert results["not_created"]["enrollments"] == []

    # DPS's TPM challenge now goes to the replacement TPM, which can activate it; the old TPM gets no key.
    challenge = tpm_challenge(emulator, "pi-svc-tpm", replacement)
    assert challenge.status_code == 401 and challenge.json().get("authenticationKey"), challenge.text
    replacement.import_authentication_key(base64.b64decode(challenge.json()["authenticationKey"]))
    refused = tpm_challenge(emulator, "pi-svc-tpm", original)
    assert refused.status_code == 401 and "authenticationKey" not in refused.json(), refused.text


def tpm_challenge(emulator, registration_id: str, tpm) -> requests.Response:
    """The first request of DPS's TPM flow: PUT register with the TPM's EK and SRK and no credentials."""
    keys = {"endorsementKey": tpm.endorsement_key, "storageRootKey": tpm.storage_root_key}
    return requests.put(
        f"{emulator.url}/{ID_SCOPE}/registrations/{registration_id}/register?api-version=2021-06-01",
        json={
            "registrationId": registration_id,
            "tpm": {name: base64.b64encode(key).decode() for name, key in keys.items()},
        },
        verify=emulator.ca_cert,
        timeout=30,
    )


def pem_public_key(tpm) -> str:
    """The EK as tpm2_readpublic -f pem writes it, base64-encoded: a common mistake, refused before any request."""
    tpm.run("tpm2_readpublic", "-c", "0x81010001", "-f", "pem", "-o", "ek.pem")
    return base64.b64encode(tpm.file("ek.pem").read_bytes()).decode()
