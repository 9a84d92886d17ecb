"""Whether a device's individual X.509 enrollment holds the certificate the device holds (filter
iotfleet.aziot.individual_enrollment_drift, role dps_enrollment's individual.yml)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.iotfleet.aziot.plugins.filter.individual_enrollment_drift import (
    FilterModule,
    individual_enrollment_drift,
)
from tests.support.pki import Pki


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def x509_enrollment(registration_id: str, primary=None, secondary=None, status: str = "enabled") -> dict:
    """An individual enrollment as dps_enrollment_info returns it: certificates as DPS shows them ({info: ...})."""
    certificates = {}
    for slot, issued in (("primary", primary), ("secondary", secondary)):
        if issued is not None:
            certificates[slot] = {"info": {"sha1Thumbprint": issued.sha1, "sha256Thumbprint": issued.sha256}}
    return {
        "registrationId": registration_id,
        "attestation": {"type": "x509", "x509": {"clientCertificates": certificates}},
        "provisioningStatus": status,
        "etag": '"1"',
    }


def test_a_device_without_an_individual_enrollment_has_nothing_to_do(pki: Pki) -> None:
    device = pki.device("pi-1")
    others = [x509_enrollment("pi-2", pki.device("pi-2").issued)]
    assert individual_enrollment_drift(others, "pi-1", device.leaf_file) == []
    assert individual_enrollment_drift([], "pi-1", "") == []  # no copy needed either


def test_an_enrollment_holding_the_devices_certificate_is_in_step(pki: Pki) -> None:
    device = pki.device("pi-1")
    # The full chain file does too (its first certificate is the device's); registration ids ignore case.
    enrollments = [x509_enrollment("PI-1", device.issued)]
    assert individual_enrollment_drift(enrollments, "pi-1", device.chain_file) == []
    # DPS may return the PEM rather than the thumbprints.
    enrollments[0]["attestation"]["x509"]["clientCertificates"] = {"primary": {"certificate": device.issued.pem_text}}
    assert individual_enrollment_drift(enrollments, "pi-1", device.leaf_file) == []


def test_a_renewed_device_needs_its_new_certificate_in_the_enrollment(pki: Pki) -> None:
    old = pki.device("pi-1").issued
    renewed = pki.device("pi-1")  # the same files, a new certificate
    reasons = individual_enrollment_drift([x509_enrollment("pi-1", old)], "pi-1", renewed.leaf_file)
    assert reasons == [f"primary certificate {old.sha256} is not the device's {renewed.sha256}"]


def test_a_secondary_certificate_is_drift_the_old_hardware_would_register(pki: Pki) -> None:
    stolen = pki.device("pi-1").issued
    device = pki.device("pi-1")
    reasons = individual_enrollment_drift([x509_enrollment("pi-1", device.issued, stolen)], "pi-1", device.leaf_file)
    assert reasons == [f"secondary certificate {stolen.sha256} would register too"]


def test_the_provisioning_status_counts_only_when_asked_for(pki: Pki) -> None:
    device = pki.device("pi-1")
    disabled = [x509_enrollment("pi-1", device.issued, status="disabled")]
    assert individual_enrollment_drift(disabled, "pi-1", device.leaf_file) == []  # revoked stays revoked
    assert individual_enrollment_drift(disabled, "pi-1", device.leaf_file, "enabled") == [
        "provisioning status disabled, wanted enabled"
    ]
    assert individual_enrollment_drift(disabled, "pi-1", device.leaf_file, "disabled") == []
    with pytest.raises(AnsibleFilterError, match="pi-1: provisioning_status 'on' is not one of enabled, disabled"):
        individual_enrollment_drift(disabled, "pi-1", device.leaf_file, "on")


def test_symmetric_key_enrollments_are_not_ours_to_change(pki: Pki) -> None:
    enrollment = {"registrationId": "pi-1", "attestation": {"type": "symmetricKey", "symmetricKey": {}}}
    assert individual_enrollment_drift([enrollment], "pi-1", "") == []


def test_an_individual_x509_enrollment_without_a_controller_copy_is_named(pki: Pki, tmp_path: Path) -> None:
    enrollments = [x509_enrollment("pi-1", pki.device("pi-1").issued)]
    with pytest.raises(AnsibleFilterError) as error:
        individual_enrollment_drift(enrollments, "pi-1", "")
    assert str(error.value).startswith("pi-1: its individual X.509 enrollment in DPS must hold the certificate")
    assert "set device_identity_issued_dir" in str(error.value)
    missing = tmp_path / "issued" / "pi-1.cert.pem"
    with pytest.raises(AnsibleFilterError) as error:
        individual_enrollment_drift(enrollments, "pi-1", str(missing))
    message = str(error.value)
    assert message.startswith(f"pi-1: the controller's copy of its certificate {missing} does not exist")
    assert "playbooks/reissue.yml" in message and "\n" not in message


def group(**settings) -> dict:
    """A device's enrollment group as the enrollment_groups filter describes it."""
    base = {"iot_edge": False, "iot_hubs": [], "allocation_policy": "hashed", "tags": {}, "desired_properties": {}}
    return {**base, **settings}


def test_an_enrollment_carries_its_groups_settings_when_the_group_is_given(pki: Pki) -> None:
    device = pki.device("pi-1")
    enrollment = x509_enrollment("pi-1", device.issued, status="disabled")
    # What revoke.yml wrote before this rule: a certificate and a status, nothing of the group.
    cohort = group(iot_edge=True, iot_hubs=["hub-b", "hub-a"], tags={"site": "plant-3"}, desired_properties={"a": 1})
    assert individual_enrollment_drift([enrollment], "pi-1", device.leaf_file) == []  # no group: not compared
    assert individual_enrollment_drift([enrollment], "pi-1", device.leaf_file, None, cohort) == [
        "IoT Edge capability false, its group's true",
        "IoT Hubs [], its group's ['hub-a', 'hub-b']",
        "initialTwin tags {}, its group's {'site': 'plant-3'}",
        "initialTwin desired properties differ from its group's",
    ]
    # As DPS returns it once written: $metadata/$version in the twin are not the group's business.
    enrollment.update(
        capabilities={"iotEdge": True},
        iotHubs=["hub-a", "hub-b"],
        allocationPolicy="Hashed",
        initialTwin={
            "tags": {"site": "plant-3"},
            "properties": {"desired": {"a": 1, "$metadata": {"$lastUpdated": "x"}, "$version": 1}},
        },
    )
    assert individual_enrollment_drift([enrollment], "pi-1", device.leaf_file, None, cohort) == []
    # A group that names no hub leaves the enrollment's hubs alone (DPS: every linked hub).
    assert individual_enrollment_drift([enrollment], "pi-1", device.leaf_file, None, dict(cohort, iot_hubs=[])) == []
    moved = dict(cohort, allocation_policy="geoLatency", tags={"site": "plant-4"})
    assert individual_enrollment_drift([enrollment], "pi-1", device.leaf_file, None, moved) == [
        "allocation policy Hashed, its group's geoLatency",
        "initialTwin tags {'site': 'plant-3'}, its group's {'site': 'plant-4'}",
    ]


def test_the_filter_is_registered() -> None:
    assert FilterModule().filters() == {"individual_enrollment_drift": individual_enrollment_drift}
