# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: registration_state
short_description: What DPS knows of one device's registration, from the fleet's registration states read in bulk
version_added: 0.3.0
author: iotfleet developers (@iotfleet)
description:
  - Takes the result of M(iotfleet.aziot.dps_registration_state_info) (read once per run on the controller) and
    returns, for one device, the O(iotfleet.aziot.dps_register#module:registration_state) that spares it a status
    lookup - or V(None) when the device must look its registration up itself.
  - V({}) when DPS has no registration record for the device (never registered, or its record was deleted), so it
    registers at once.
  - C(status), C(assigned_hub), C(device_id) of its record and C(enrollment_iot_hubs), the hubs its enrollment group
    assigns to (empty - any linked hub), when DPS has a record.
  - For a device with an individual enrollment, the hubs of C(enrollment_iot_hubs) are that enrollment's.
  - V(None) when the bulk read did not run (skipped, no DPS service connection), could not read the registration
    records (RV(iotfleet.aziot.dps_registration_state_info#module:complete) false), or when the device has an
    individual enrollment that is disabled (DPS refuses it, which its own lookup tells) or whose registration
    record was not read (O(iotfleet.aziot.dps_registration_state_info#module:individual_registrations=false)).
  - Registration ids are compared case-insensitively, as DPS does.
options:
  _input:
    description:
      - The result of M(iotfleet.aziot.dps_registration_state_info); a skipped task's result or V(None) gives V(None).
    type: dict
    required: true
  registration_id:
    description: The device's registration id.
    type: str
    required: true
"""

EXAMPLES = r"""
---
- name: Register without a status lookup when the controller knows
  iotfleet.aziot.dps_register:
    id_scope: 0ne00ABCDEF
    registration_id: "{{ inventory_hostname }}"
    client_cert: /var/aziot/certs/device-id.full-chain.cert.pem
    client_key: /var/aziot/secrets/device-id.key.pem
    provisioning_marker: /var/aziot/certs/dps-registration.json
    registration_state: "{{ known | iotfleet.aziot.registration_state(inventory_hostname) | default(omit, true) }}"
"""

RETURN = r"""
---
_value:
  description: The device's registration state for M(iotfleet.aziot.dps_register), or V(None).
  type: dict
  sample: {"status": "assigned", "assigned_hub": "contoso-hub.azure-devices.net", "device_id": "pi-0042",
           "enrollment_iot_hubs": []}
"""

from ansible.errors import AnsibleFilterError


def registration_state(known, registration_id: str) -> dict | None:
    if not isinstance(registration_id, str) or not registration_id:
        raise AnsibleFilterError(f"registration_state: registration_id {registration_id!r} must be a non-empty string")
    if not isinstance(known, dict) or known.get("skipped") or known.get("failed") or not known.get("complete"):
        return None
    wanted = registration_id.lower()
    individual = (known.get("individual_enrollments") or {}).get(wanted)
    if individual is not None and (
        individual.get("provisioningStatus") != "enabled" or individual.get("registrationRead") is not True
    ):
        return None
    record = (known.get("registrations") or {}).get(wanted)
    if not isinstance(record, dict):
        return {}
    if individual is not None:
        enrollment = individual
    else:
        enrollment = (known.get("enrollment_groups") or {}).get(record.get("enrollmentGroupId")) or {}
    return {
        "status": record.get("status"),
        "assigned_hub": record.get("assignedHub"),
        "device_id": record.get("deviceId"),
        "enrollment_iot_hubs": list(enrollment.get("iotHubs") or []),
    }


class FilterModule:
    def filters(self) -> dict:
        return {"registration_state": registration_state}
