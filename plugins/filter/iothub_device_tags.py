# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: iothub_device_tags
short_description: The IoT Hub twin tags each device should carry - its cohort's
version_added: 0.1.0
author: iotfleet developers (@iotfleet)
description:
  - For each given host, its IoT Hub device id and the twin tags of its cohort - the same tags its DPS enrollment
    group's C(initialTwin) carries (P(iotfleet.aziot.enrollment_groups#filter)), which DPS copies into a twin at the
    device's first registration only. The role C(iotfleet.aziot.iothub_deployment) gives them to
    M(iotfleet.aziot.iothub_device) in one call, so that a device moved to another cohort in the inventory gets that
    cohort's tags, and with them its deployments.
  - The device id is the host's C(dps_registration_registration_id) (default its inventory name) - a device of an X.509
    enrollment group gets its registration id as IoT Hub device id.
extends_documentation_fragment:
  - iotfleet.aziot.inventory.hostvars
options:
  _input:
    description: The inventory names of the devices (for example C(ansible_play_hosts)).
    type: list
    elements: str
    required: true
  cohorts:
    description: The cohorts, P(iotfleet.aziot.enrollment_groups#filter) over every device (at least the given ones).
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
---
- name: The twin tags of the play's devices
  ansible.builtin.debug:
    msg: >-
      {{ ansible_play_hosts | iotfleet.aziot.iothub_device_tags(
           groups['pis'] | iotfleet.aziot.enrollment_groups(hostvars), hostvars) }}
"""

RETURN = r"""
---
_value:
  description: One entry per host, in the given order - the C(devices) option of M(iotfleet.aziot.iothub_device).
  type: list
  elements: dict
  contains:
    device_id:
      description: The IoT Hub device id.
      type: str
    tags:
      description: The twin tags of its cohort.
      type: dict
"""

from ansible.errors import AnsibleFilterError
from jinja2 import Undefined


def iothub_device_tags(hosts: list, cohorts: list, hostvars) -> list[dict]:
    cohort_of = {host: cohort for cohort in cohorts for host in cohort["hosts"]}
    devices = []
    for host in hosts:
        if host not in cohort_of:
            raise AnsibleFilterError(
                f"{host}: in none of the cohorts given to iothub_device_tags; compute them over every device "
                "(groups['pis'] | iotfleet.aziot.enrollment_groups(hostvars))"
            )
        try:
            device_id = hostvars[host]["dps_registration_registration_id"]
        except KeyError:
            device_id = host
        if isinstance(device_id, Undefined):
            device_id = host
        devices.append({"device_id": str(device_id), "tags": dict(cohort_of[host]["tags"])})
    return devices


class FilterModule:
    def filters(self) -> dict:
        return {"iothub_device_tags": iothub_device_tags}
