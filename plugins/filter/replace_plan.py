# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: replace_plan
short_description: What replace.yml does to one device - new identity or nothing, individual enrollment or group
version_added: 0.3.0
author: iotfleet developers (@iotfleet)
description:
  - The device is replaced (new key and certificate, registration forced) unless it already holds the certificate
    the controller last issued for its registration id (the checksums of the device's certificate and of the
    controller's copy agree), or always with O(force).
  - A device with an individual X.509 enrollment in DPS gets the new certificate there (role
    C(iotfleet.aziot.dps_enrollment), C(tasks_from=individual.yml)); one whose individual enrollment is disabled
    (revoked, playbooks/revoke.yml) is replaced only with O(enable) - it then gets the new certificate and is enabled
    in one write, so the old hardware's certificate stays refused. Without O(enable) the filter fails with one line
    naming the device and the two ways on.
options:
  _input:
    description:
      - The device's individual enrollment as M(iotfleet.aziot.dps_enrollment_info) returns it for its registration
        id (RV(iotfleet.aziot.dps_enrollment_info#module:enrollments), empty when it has none).
    type: list
    elements: dict
    required: true
  registration_id:
    description: The device's registration id.
    type: str
    required: true
  device_cert:
    description: M(ansible.builtin.stat) of the certificate on the device (with its checksum).
    type: dict
    required: true
  issued_copy:
    description: M(ansible.builtin.stat) of the controller's copy of the certificate last issued for it.
    type: dict
    required: true
  force:
    description: Replace even a device that holds the last certificate issued (C(replace_force)).
    type: bool
    default: false
  enable:
    description: Enable a disabled (revoked) individual enrollment with the new certificate (C(replace_enable)).
    type: bool
    default: false
  group:
    description: The device's enrollment group (for the message).
    type: str
    default: fleet
"""

EXAMPLES = r"""
---
- name: Say what happens to the device
  ansible.builtin.debug:
    msg: >-
      {{ (lookup.enrollments | iotfleet.aziot.replace_plan('pi-0042', device_cert.stat, issued_copy.stat)).message }}
"""

RETURN = r"""
---
_value:
  description: What replace.yml does to the device - a new identity or nothing, and its individual enrollment.
  type: dict
  contains:
    replace:
      description: Whether the device gets a new key and certificate and registers again (forced).
      type: bool
    individual:
      description: Whether the device has an individual X.509 enrollment (it gets the new certificate).
      type: bool
    enable:
      description:
        - V(enabled) when the individual enrollment is to be enabled in the same write as its certificate (with
          O(enable)), else empty.
      type: str
    message:
      description: One line saying what happens to the device.
      type: str
"""

from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import boolean


def _checksum(stat) -> str | None:
    if isinstance(stat, dict) and stat.get("exists"):
        return stat.get("checksum") or None
    return None


def replace_plan(
    enrollments: list,
    registration_id: str,
    device_cert: dict,
    issued_copy: dict,
    force=False,
    enable=False,
    group: str = "fleet",
) -> dict:
    force, enable = boolean(force, strict=False), boolean(enable, strict=False)
    on_device, on_controller = _checksum(device_cert), _checksum(issued_copy)
    replace = force or on_device is None or on_device != on_controller
    enrollment = next(
        (
            record
            for record in enrollments or []
            if isinstance(record, dict) and str(record.get("registrationId", "")).lower() == registration_id.lower()
        ),
        None,
    )
    attestation = (enrollment or {}).get("attestation") or {}
    individual = str(attestation.get("type", "")).lower() == "x509"
    disabled = individual and str(enrollment.get("provisioningStatus") or "enabled").lower() == "disabled"
    if replace and disabled and not enable:
        raise AnsibleFilterError(
            f"{registration_id}: its individual enrollment in DPS is disabled (revoked, playbooks/revoke.yml); run "
            "replace.yml with -e replace_enable=true to give it the new certificate and enable it (the old "
            "certificate stays refused), or run playbooks/reinstate.yml first if the old hardware is not stolen"
        )
    if not replace:
        message = "already holds the certificate last issued for it: nothing to replace"
    else:
        where = "individual enrollment updated" if individual else f"enrollment group {group}"
        message = f"new key and certificate, {where}{' and enabled' if disabled else ''}, registration forced"
    return {
        "replace": replace,
        "individual": individual,
        # Also when the device already holds its new certificate: a run that failed before the enrollment was
        # written is put right by the next one.
        "enable": "enabled" if individual and enable else "",
        "message": f"{registration_id}: {message}",
    }


class FilterModule:
    def filters(self) -> dict:
        return {"replace_plan": replace_plan}
