# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: individual_enrollment_drift
short_description: Why a device's individual X.509 enrollment in DPS is not in step with its certificate
version_added: 0.3.0
author: iotfleet developers (@iotfleet)
description:
  - The rule it checks (role C(iotfleet.aziot.dps_enrollment), C(tasks_from=individual.yml)) is that a device with
    an individual X.509 enrollment in DPS has, as that enrollment's primary client certificate, the certificate the
    device holds - the controller's copy in C(device_identity_issued_dir) - and no other (a secondary certificate
    would let a replaced or stolen device's old certificate register).
  - Takes the individual enrollments read once per run (M(iotfleet.aziot.dps_enrollment_info) with
    C(kind=enrollment), every page) and returns, for one device, the reasons its enrollment must be written; an
    empty list when it is in step or when the device has no individual X.509 enrollment (its enrollment group
    applies; a symmetric-key or TPM enrollment is not ours to change).
  - Certificates are compared by thumbprint (SHA-256, else SHA-1) or by DER when DPS returns the PEM, as
    M(iotfleet.aziot.dps_enrollment) compares them; registration ids case-insensitively, as DPS does.
  - A device with an individual X.509 enrollment and no controller copy of its certificate fails with one line
    naming the device and what to set.
options:
  _input:
    description: The individual enrollments (RV(iotfleet.aziot.dps_enrollment_info#module:enrollments)).
    type: list
    elements: dict
    required: true
  registration_id:
    description: The device's registration id (C(device_identity_registration_id)).
    type: str
    required: true
  certificate_path:
    description:
      - The controller's copy of the device certificate (C(<device_identity_issued_dir>/<registration id>.cert.pem));
        empty when the controller keeps no copies.
    type: str
    required: true
  provisioning_status:
    description:
      - The provisioning status the enrollment must have (V(enabled), V(disabled)); not set leaves it as it is.
    type: str
    choices: [enabled, disabled]
  group:
    description:
      - The device's enrollment group as the inventory describes it (one entry of
        P(iotfleet.aziot.enrollment_groups#filter)'s result). When given, the enrollment must also carry its group's
        settings - IoT Edge capability, IoT Hubs (when the group names some), allocation policy and C(initialTwin)
        tags and desired properties - so that DPS assigns the device as its group would. An individual enrollment
        wins over the group; without them an IoT Edge device would come back as a plain device, or in another hub.
    type: dict
"""

EXAMPLES = r"""
---
- name: Give the device's individual enrollment the certificate it holds
  iotfleet.aziot.dps_enrollment:
    registration_id: pi-0042
    attestation: x509
    primary_certificate: pki/issued/pi-0042.cert.pem
  when: >-
    enrollments.enrollments | iotfleet.aziot.individual_enrollment_drift('pi-0042', 'pki/issued/pi-0042.cert.pem')
    | length > 0
  delegate_to: localhost
"""

RETURN = r"""
---
_value:
  description:
    - Why the enrollment must be written, one line each (for the task's label); empty when nothing is to be done.
  type: list
  elements: str
  sample:
    - "primary certificate 1F2E... is not the device's 9A8B..."
    - "provisioning status disabled, wanted enabled"
    - "IoT Edge capability false, its group's true"
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.iotfleet.aziot.plugins.module_utils._dps_enrollment import (
    EnrollmentInputError,
    certificate_matches,
    load_certificate,
)

STATUSES = ("enabled", "disabled")


def _thumbprint_of(entry) -> str:
    """What DPS shows of an enrollment's certificate entry (for the reason line)."""
    info = entry.get("info") if isinstance(entry, dict) and isinstance(entry.get("info"), dict) else {}
    return str(info.get("sha256Thumbprint") or info.get("sha1Thumbprint") or "(a certificate without thumbprint)")


def _enrollment_of(enrollments, registration_id: str) -> dict | None:
    wanted = registration_id.lower()
    for enrollment in enrollments or []:
        if isinstance(enrollment, dict) and str(enrollment.get("registrationId", "")).lower() == wanted:
            return enrollment
    return None


def _group_drift(enrollment: dict, group: dict) -> list[str]:
    """Where the enrollment's settings differ from its enrollment group's (the inventory's cohort)."""
    reasons = []
    iot_edge = bool((enrollment.get("capabilities") or {}).get("iotEdge", False))
    wanted = bool(group.get("iot_edge", False))
    if iot_edge != wanted:
        reasons.append(f"IoT Edge capability {str(iot_edge).lower()}, its group's {str(wanted).lower()}")
    hubs = sorted(group.get("iot_hubs") or [])
    if hubs and sorted(enrollment.get("iotHubs") or []) != hubs:
        reasons.append(f"IoT Hubs {sorted(enrollment.get('iotHubs') or [])}, its group's {hubs}")
    policy = str(enrollment.get("allocationPolicy") or "hashed")
    if policy.lower() != str(group.get("allocation_policy") or "hashed").lower():
        reasons.append(f"allocation policy {policy}, its group's {group['allocation_policy']}")
    twin = enrollment.get("initialTwin") or {}
    tags = {key: value for key, value in (twin.get("tags") or {}).items() if not key.startswith("$")}
    if tags != (group.get("tags") or {}):
        reasons.append(f"initialTwin tags {tags}, its group's {group.get('tags') or {}}")
    desired = (twin.get("properties") or {}).get("desired") or {}
    desired = {key: value for key, value in desired.items() if not key.startswith("$")}
    if desired != (group.get("desired_properties") or {}):
        reasons.append("initialTwin desired properties differ from its group's")
    return reasons


def individual_enrollment_drift(
    enrollments: list,
    registration_id: str,
    certificate_path: str,
    provisioning_status: str | None = None,
    group: dict | None = None,
) -> list[str]:
    if provisioning_status not in (None, "", *STATUSES):
        raise AnsibleFilterError(
            f"{registration_id}: provisioning_status {provisioning_status!r} is not one of {', '.join(STATUSES)}"
        )
    enrollment = _enrollment_of(enrollments, registration_id)
    attestation = enrollment.get("attestation") if enrollment else None
    if not isinstance(attestation, dict) or str(attestation.get("type", "")).lower() != "x509":
        return []
    if not certificate_path:
        raise AnsibleFilterError(
            f"{registration_id}: its individual X.509 enrollment in DPS must hold the certificate the device holds, "
            "but the controller keeps no copy of device certificates (device_identity_issued_dir is empty); set "
            "device_identity_issued_dir"
        )
    try:
        certificate = load_certificate(registration_id, "the controller's copy of its certificate", certificate_path)
    except EnrollmentInputError as error:
        raise AnsibleFilterError(
            f"{error}; its individual X.509 enrollment in DPS must hold the certificate the device holds - run "
            "playbooks/reissue.yml for the device (it writes the copy)"
        ) from None
    certificates = (attestation.get("x509") or {}).get("clientCertificates") or {}
    reasons = []
    primary = certificates.get("primary")
    if not certificate_matches(certificate, primary):
        shown = _thumbprint_of(primary) if primary else "(none)"
        reasons.append(f"primary certificate {shown} is not the device's {certificate.sha256}")
    secondary = certificates.get("secondary")
    if not certificate_matches(None, secondary):
        reasons.append(f"secondary certificate {_thumbprint_of(secondary)} would register too")
    status = str(enrollment.get("provisioningStatus") or "enabled").lower()
    if provisioning_status and status != provisioning_status:
        reasons.append(f"provisioning status {status}, wanted {provisioning_status}")
    if group:
        reasons.extend(_group_drift(enrollment, group))
    return reasons


class FilterModule:
    def filters(self) -> dict:
        return {"individual_enrollment_drift": individual_enrollment_drift}
