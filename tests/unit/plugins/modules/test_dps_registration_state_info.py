"""Unit tests for the dps_registration_state_info module, against the DPS emulator (`dps_module`: the real transport
over TLS): what DPS knows of a fleet's registrations, in one request per enrollment kind and per group page."""

from __future__ import annotations

from ansible_collections.iotfleet.aziot.plugins.filter.registration_state import registration_state
from ansible_collections.iotfleet.aziot.plugins.module_utils._dps_service import ENROLLMENT_GROUPS
from ansible_collections.iotfleet.aziot.plugins.modules import dps_registration_state_info
from tests.support.dps_fakes import EMULATED_HUB, individual_enrollment


def run(harness, policy="provisioningserviceowner", **args):
    return harness.run(dps_registration_state_info, harness.service_args(policy, **args))


def group_of_its_own(harness, emulator_pki, group_id: str, devices: list[str]) -> dict:
    client = harness.service_client()
    group = {
        "enrollmentGroupId": group_id,
        "attestation": {
            "type": "x509",
            "x509": {"signingCertificates": {"primary": {"certificate": emulator_pki.intermediate.pem_text}}},
        },
    }
    created = client.put(ENROLLMENT_GROUPS, group_id, group, None)
    for name in devices:
        assert harness.device_client(name, cert=emulator_pki.device(name).full()).register()["status"] == "assigned"
    return created


def test_every_group_every_individual_and_the_records_of_the_enabled_groups(dps_module, emulator_pki):
    created = group_of_its_own(dps_module, emulator_pki, "unit-states", ["pi-states-1", "Pi-States-2", "pi-states-3"])
    dps_module.calls.clear()
    out = run(dps_module, page_size=2).result
    assert out["changed"] is False and out["complete"] is True
    assert out["enrollment_groups"]["unit-states"] == {"provisioningStatus": "enabled", "iotHubs": []}
    assert out["registrations"]["pi-states-2"] == {
        "registrationId": "Pi-States-2",
        "status": "assigned",
        "assignedHub": EMULATED_HUB,
        "deviceId": "Pi-States-2",
        "enrollmentGroupId": "unit-states",
    }
    assert {"pi-states-1", "pi-states-3"} <= set(out["registrations"])
    methods = dps_module.methods()
    # every group and every individual enrollment (pages of two: other tests' groups too), then the records
    assert methods[0] == "POST enrollmentGroups/query" and "POST enrollments/query" in methods
    # queries, and a GET of the record of each enabled individual enrollment (other tests' ones)
    assert all(
        (method.startswith("POST ") and method.endswith("/query")) or method.startswith("GET registrations/")
        for method in methods
    )
    assert methods.count("POST registrations/unit-states/query") == 2  # three records, two a page
    assert out["requests"] == len(methods)
    assert dps_module.calls[0]["headers"]["x-ms-max-item-count"] == "2"

    # A disabled group's records are not read: its devices register, and DPS refuses them.
    client = dps_module.service_client()
    client.put(ENROLLMENT_GROUPS, "unit-states", dict(created, provisioningStatus="disabled"), created["etag"])
    dps_module.calls.clear()
    out = run(dps_module).result
    assert out["enrollment_groups"]["unit-states"]["provisioningStatus"] == "disabled"
    assert "pi-states-1" not in out["registrations"]
    assert "POST registrations/unit-states/query" not in dps_module.methods()


def test_the_default_page_is_a_thousand_records(dps_module):
    run(dps_module)
    assert {call["headers"]["x-ms-max-item-count"] for call in dps_module.calls} == {"1000"}


def test_a_policy_that_may_not_read_registrations_warns_and_gives_nothing(dps_module):
    result = run(dps_module, policy="enrollmentread")
    assert not result.failed, result.result
    assert result.result["complete"] is False and result.result["registrations"] == {}
    assert any("may not read registration records (RegistrationStatusRead)" in line for line in dps_module.warnings)


def test_a_policy_that_may_not_read_enrollments_fails_in_one_line(dps_module):
    result = run(dps_module, policy="registrationstatusread")
    assert result.failed
    assert result.result["msg"].startswith("registration states: the DPS refused the shared access signature")
    assert "EnrollmentRead" in result.result["msg"]


def test_page_size_must_be_positive(dps_module):
    result = run(dps_module, page_size=0)
    assert result.failed and result.result["msg"] == "registration states: page_size must be a positive number"
    assert dps_module.calls == []


def test_the_records_of_enabled_individual_enrollments_are_read_one_by_one(dps_module, emulator_pki):
    """The group query does not list them; one GET each gives the devices what a lookup of their own would."""
    device = individual_enrollment(dps_module, emulator_pki, "pi-indiv-on", "enabled", [EMULATED_HUB])
    assert dps_module.device_client("pi-indiv-on", cert=device.full()).register()["status"] == "assigned"
    individual_enrollment(dps_module, emulator_pki, "pi-indiv-new", "enabled", [])  # never registered
    individual_enrollment(dps_module, emulator_pki, "pi-indiv-off", "disabled", [])
    dps_module.calls.clear()
    out = run(dps_module).result
    methods = dps_module.methods()
    assert "GET registrations/pi-indiv-on" in methods and "GET registrations/pi-indiv-new" in methods
    assert "GET registrations/pi-indiv-off" not in methods  # DPS refuses it: the device's own lookup says so
    assert out["individual_enrollments"]["pi-indiv-on"] == {
        "provisioningStatus": "enabled",
        "iotHubs": [EMULATED_HUB],
        "registrationRead": True,
    }
    assert registration_state(out, "pi-indiv-on") == {
        "status": "assigned",
        "assigned_hub": EMULATED_HUB,
        "device_id": "pi-indiv-on",
        "enrollment_iot_hubs": [EMULATED_HUB],
    }
    assert registration_state(out, "pi-indiv-new") == {}  # no record: it registers without a lookup
    assert registration_state(out, "pi-indiv-off") is None

    dps_module.calls.clear()
    without = run(dps_module, individual_registrations=False).result
    assert not [method for method in dps_module.methods() if method.startswith("GET ")]
    assert registration_state(without, "pi-indiv-on") is None and "pi-indiv-on" not in without["registrations"]
