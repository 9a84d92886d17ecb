"""The enrollment groups an inventory describes (filter iotfleet.aziot.enrollment_groups, role dps_enrollment)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.iotfleet.aziot.plugins.filter.enrollment_groups import FilterModule, enrollment_groups


def _fleet() -> dict[str, dict]:
    plant3 = {"dps_enrollment_group": "plant-3", "device_identity_ca_cert_path": "/pki/plant-3-ca.cert.pem"}
    plant3.update(site="plant-3", ring="production")
    return {
        "pi-1": dict(plant3),
        "pi-2": dict(plant3),
        "pi-3": {
            "dps_enrollment_group": "lab",
            "device_identity_ca_cert_path": "/pki/lab-ca.cert.pem",
            "site": "lab",
            "provision_aziot_edge": True,
            "dps_enrollment_iot_hubs": ["hub-b", "hub-a"],
        },
        "pi-4": {"device_identity_ca_cert_path": "/pki/fleet-ca.cert.pem"},
    }


def test_one_group_per_enrollment_group_with_its_tags_and_settings() -> None:
    groups = enrollment_groups(list(_fleet()), _fleet(), ["site", "environment", "ring"])
    assert [group["name"] for group in groups] == ["fleet", "lab", "plant-3"]
    fleet, lab, plant3 = groups
    assert plant3["hosts"] == ["pi-1", "pi-2"]
    assert plant3["tags"] == {"site": "plant-3", "ring": "production"}
    assert plant3["signing_certificate"] == "/pki/plant-3-ca.cert.pem"
    assert plant3["iot_edge"] is False and plant3["allocation_policy"] == "hashed"
    assert lab["iot_edge"] is True and lab["iot_hubs"] == ["hub-a", "hub-b"] and lab["tags"] == {"site": "lab"}
    # No dps_enrollment_group: the default group; no tag variables: no tags.
    assert fleet["hosts"] == ["pi-4"] and fleet["tags"] == {}


def test_devices_of_a_group_that_disagree_stop_with_one_line() -> None:
    hostvars = _fleet()
    hostvars["pi-2"]["site"] = "plant-4"
    with pytest.raises(AnsibleFilterError) as error:
        enrollment_groups(list(hostvars), hostvars, ["site"])
    message = str(error.value)
    assert message.startswith("enrollment group 'plant-3': pi-1 and pi-2 disagree on the tags (site)")
    assert "group_vars" in message and "\n" not in message


def test_two_groups_sharing_a_ca_are_refused() -> None:
    hostvars = _fleet()
    hostvars["pi-3"]["device_identity_ca_cert_path"] = "/pki/plant-3-ca.cert.pem"
    with pytest.raises(AnsibleFilterError, match="enrollment groups 'lab' and 'plant-3' share the signing certificate"):
        enrollment_groups(list(hostvars), hostvars)


def test_a_device_without_a_ca_is_named() -> None:
    hostvars = {"pi-9": {"dps_enrollment_group": "x"}}
    with pytest.raises(AnsibleFilterError, match="pi-9: device_identity_ca_cert_path is not set"):
        enrollment_groups(["pi-9"], hostvars)


def test_registered_as_a_filter() -> None:
    assert FilterModule().filters()["enrollment_groups"] is enrollment_groups
