"""What replace.yml does to one device (filter iotfleet.aziot.replace_plan)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.iotfleet.aziot.plugins.filter.replace_plan import FilterModule, replace_plan

HELD = {"exists": True, "checksum": "aa"}
OTHER = {"exists": True, "checksum": "bb"}
MISSING = {"exists": False}


def individual(status: str = "enabled", attestation: str = "x509") -> list[dict]:
    return [{"registrationId": "PI-1", "attestation": {"type": attestation}, "provisioningStatus": status}]


def test_new_hardware_of_a_group_device_is_replaced() -> None:
    plan = replace_plan([], "pi-1", MISSING, HELD, group="plant-3")
    assert plan == {
        "replace": True,
        "individual": False,
        "enable": "",
        "message": "pi-1: new key and certificate, enrollment group plant-3, registration forced",
    }
    assert replace_plan([], "pi-1", OTHER, HELD)["replace"]  # another certificate: replaced
    assert replace_plan([], "pi-1", HELD, MISSING)["replace"]  # no copy on the controller: replaced


def test_a_device_holding_the_last_certificate_issued_is_left_alone_unless_forced() -> None:
    plan = replace_plan([], "pi-1", HELD, dict(HELD))
    assert not plan["replace"]
    assert plan["message"] == "pi-1: already holds the certificate last issued for it: nothing to replace"
    assert replace_plan([], "pi-1", HELD, HELD, force="true")["replace"]


def test_an_individual_enrollment_gets_the_new_certificate() -> None:
    plan = replace_plan(individual(), "pi-1", MISSING, HELD)
    assert plan["individual"] and plan["enable"] == ""
    assert plan["message"] == "pi-1: new key and certificate, individual enrollment updated, registration forced"
    # A symmetric-key individual enrollment is not one the device's certificate goes to.
    assert not replace_plan(individual(attestation="symmetricKey"), "pi-1", MISSING, HELD)["individual"]


def test_a_revoked_device_is_replaced_only_to_be_enabled() -> None:
    with pytest.raises(AnsibleFilterError) as error:
        replace_plan(individual("disabled"), "pi-1", MISSING, HELD)
    message = str(error.value)
    assert message.startswith("pi-1: its individual enrollment in DPS is disabled (revoked, playbooks/revoke.yml)")
    assert "-e replace_enable=true" in message and "\n" not in message
    plan = replace_plan(individual("disabled"), "pi-1", MISSING, HELD, enable=True)
    assert plan["enable"] == "enabled"
    assert plan["message"] == (
        "pi-1: new key and certificate, individual enrollment updated and enabled, registration forced"
    )


def test_a_rerun_after_a_failed_enrollment_write_still_enables() -> None:
    """The device got its new certificate, the run stopped before the enrollment write: the next run has nothing
    to replace but still enables the enrollment (with that certificate)."""
    plan = replace_plan(individual("disabled"), "pi-1", HELD, HELD, enable=True)
    assert not plan["replace"] and plan["enable"] == "enabled"
    assert not replace_plan(individual("disabled"), "pi-1", HELD, HELD)["replace"]  # and no error without enable


def test_the_filter_is_registered() -> None:
    assert FilterModule().filters() == {"replace_plan": replace_plan}
