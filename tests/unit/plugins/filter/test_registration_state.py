"""What DPS knows of one device's registration, from the fleet's registration states read in bulk (filter
iotfleet.aziot.registration_state, role dps_registration's register.yml)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.iotfleet.aziot.plugins.filter.registration_state import FilterModule, registration_state

HUB = "contoso-hub.azure-devices.net"


def known(**extra) -> dict:
    """A dps_registration_state_info result: group plant-3 on one hub, pi-0042 assigned in it, pi-0007 individual."""
    result = {
        "changed": False,
        "complete": True,
        "enrollment_groups": {
            "plant-3": {"provisioningStatus": "enabled", "iotHubs": [HUB]},
            "anywhere": {"provisioningStatus": "enabled", "iotHubs": []},
        },
        "individual_enrollments": {"pi-0007": {"provisioningStatus": "disabled"}},
        "registrations": {
            "pi-0042": {
                "registrationId": "pi-0042",
                "status": "assigned",
                "assignedHub": HUB,
                "deviceId": "pi-0042",
                "enrollmentGroupId": "plant-3",
            },
            "pi-0043": {"registrationId": "pi-0043", "status": "failed", "enrollmentGroupId": "anywhere"},
        },
    }
    result.update(extra)
    return result


def test_a_device_dps_shows_assigned_gets_its_record_and_its_groups_hubs() -> None:
    assert registration_state(known(), "pi-0042") == {
        "status": "assigned",
        "assigned_hub": HUB,
        "device_id": "pi-0042",
        "enrollment_iot_hubs": [HUB],
    }


def test_registration_ids_are_case_insensitive() -> None:
    assert registration_state(known(), "PI-0042")["device_id"] == "pi-0042"
    assert registration_state(known(), "Pi-0007") is None


def test_a_device_dps_has_no_record_of_registers_at_once() -> None:
    assert registration_state(known(), "pi-new") == {}


def test_a_record_that_is_not_assigned_keeps_its_status() -> None:
    assert registration_state(known(), "pi-0043") == {
        "status": "failed",
        "assigned_hub": None,
        "device_id": None,
        "enrollment_iot_hubs": [],
    }


def test_a_device_with_an_individual_enrollment_looks_itself_up() -> None:
    # its individual enrollment decides (disabled here): its own lookup tells, not the groups' records
    assert registration_state(known(), "pi-0007") is None


def test_an_enabled_individual_enrollment_whose_record_was_read_gives_its_record_and_its_hubs() -> None:
    individuals = {
        "pi-0007": {"provisioningStatus": "enabled", "iotHubs": ["other.azure-devices.net"], "registrationRead": True},
        "pi-0008": {"provisioningStatus": "enabled", "iotHubs": [], "registrationRead": True},
        "pi-0009": {"provisioningStatus": "enabled", "iotHubs": [], "registrationRead": False},
    }
    record = {"registrationId": "pi-0007", "status": "assigned", "assignedHub": HUB, "deviceId": "pi-0007"}
    result = known(individual_enrollments=individuals, registrations={"pi-0007": record})
    assert registration_state(result, "PI-0007") == {
        "status": "assigned",
        "assigned_hub": HUB,
        "device_id": "pi-0007",
        "enrollment_iot_hubs": ["other.azure-devices.net"],
    }
    assert registration_state(result, "pi-0008") == {}  # read, no record: registers at once
    assert registration_state(result, "pi-0009") is None  # not read: looks itself up


@pytest.mark.parametrize(
    "result",
    [
        None,
        {
            "skipped": True,
            "changed": False,
            "false_condition": "dps_registration_service_connection_string | length > 0",
        },
        known(complete=False, registrations={}),
        {"failed": True, "msg": "boom"},
    ],
    ids=["none", "skipped", "incomplete", "failed"],
)
def test_without_a_complete_bulk_read_every_device_looks_itself_up(result) -> None:
    assert registration_state(result, "pi-0042") is None
    assert registration_state(result, "pi-new") is None


def test_a_bad_registration_id_is_one_line() -> None:
    with pytest.raises(AnsibleFilterError, match="registration_state: registration_id '' must be a non-empty string"):
        registration_state(known(), "")


def test_the_filter_is_registered() -> None:
    assert FilterModule().filters() == {"registration_state": registration_state}
