"""The devices of the enrollment group a CA rollover moves, and their CAs (filter iotfleet.aziot.ca_rollover_group,
playbooks/ca_rollover.yml)."""

from __future__ import annotations

from ansible_collections.iotfleet.aziot.plugins.filter.ca_rollover_group import FilterModule, ca_rollover_group

NEW = {
    "device_identity_ca_cert_path": "/pki/plant-3-2027-ca.cert.pem",
    "device_identity_ca_key_path": "/pki/plant-3-2027-ca.key.pem",
    "dps_enrollment_secondary_certificate": "/pki/plant-3-ca.cert.pem",
    "pki_dir": "/pki",
}


def _fleet() -> dict[str, dict]:
    return {
        "pi-1": {"dps_enrollment_group": "plant-3", **NEW},
        "pi-2": {"dps_enrollment_group": "plant-4", "device_identity_ca_cert_path": "/pki/plant-4-ca.cert.pem"},
        "pi-3": {"dps_enrollment_group": "plant-3", **NEW},
        "pi-4": {"device_identity_ca_cert_path": "/pki/fleet-ca.cert.pem"},
    }


def test_the_group_s_devices_in_inventory_order_with_their_cas() -> None:
    result = ca_rollover_group(list(_fleet()), _fleet(), "plant-3")
    assert result == {
        "members": ["pi-1", "pi-3"],
        "new_ca": "/pki/plant-3-2027-ca.cert.pem",
        "new_ca_key": "/pki/plant-3-2027-ca.key.pem",
        "old_ca": "/pki/plant-3-ca.cert.pem",
        "lab_ca": {"name": "plant-3-2027", "pki_dir": "/pki"},
        "problem": "",
    }


def test_devices_without_a_group_are_in_the_default_group_and_an_unset_old_ca_is_empty() -> None:
    result = ca_rollover_group(list(_fleet()), _fleet(), "main", default_group="main")
    assert result["members"] == ["pi-4"] and result["old_ca"] == "" and result["problem"] == ""
    assert result["lab_ca"] == {}  # the device sets no pki_dir: not a lab CA this playbook may make


def test_a_group_without_devices_is_one_line() -> None:
    result = ca_rollover_group(list(_fleet()), _fleet(), "plant-9")
    assert result["members"] == []
    assert result["problem"].startswith("ca_rollover.yml: no device of the inventory is in enrollment group plant-9")


def test_devices_that_disagree_are_named_with_the_variable() -> None:
    hostvars = _fleet()
    del hostvars["pi-3"]["dps_enrollment_secondary_certificate"]
    problem = ca_rollover_group(list(hostvars), hostvars, "plant-3")["problem"]
    assert problem == (
        "enrollment group plant-3: pi-1 and pi-3 disagree on dps_enrollment_secondary_certificate "
        "(/pki/plant-3-ca.cert.pem / unset); a rollover moves the whole group: set it in the group_vars of their "
        "inventory group"
    )


def test_a_group_without_an_issuing_ca_is_named() -> None:
    hostvars = {"pi-9": {"dps_enrollment_group": "x"}}
    problem = ca_rollover_group(["pi-9"], hostvars, "x")["problem"]
    assert problem.startswith("enrollment group x: pi-9: device_identity_ca_cert_path is not set")


def test_only_a_ca_file_of_the_devices_pki_dir_named_like_a_lab_intermediate_is_made() -> None:
    for path, pki_dir, expected in [
        ("/pki/plant-3-2027-ca.cert.pem", "/pki/", {"name": "plant-3-2027", "pki_dir": "/pki/"}),
        ("/pki/sub/plant-3-2027-ca.cert.pem", "/pki", {}),  # elsewhere: the user's own CA
        ("/pki/plant-3-2027.pem", "/pki", {}),  # not NAME-ca.cert.pem
        ("/pki/plant-3-2027-ca.cert.pem", "", {}),
    ]:
        hostvars = {"pi-1": {"device_identity_ca_cert_path": path, "pki_dir": pki_dir}}
        assert ca_rollover_group(["pi-1"], hostvars, "fleet")["lab_ca"] == expected, path


def test_the_filter_is_registered() -> None:
    assert FilterModule().filters() == {"ca_rollover_group": ca_rollover_group}
