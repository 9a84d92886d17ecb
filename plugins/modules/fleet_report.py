#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fleet_report
short_description: The fleet report - one row per device from DPS's records, its certificate and the inventory
version_added: 0.3.0
author: iotfleet developers (@iotfleet)
description:
  - Joins, per device, its DPS registration record (status, IoT hub, device id), its enrollment (its individual
    enrollment, else its enrollment group), the twin tags that enrollment gave it, whether it is blocked (a disabled
    individual enrollment, or a disabled group), and its certificate - subject, issuer, not after, days left - read
    from the controller's copy, else from what the device sent, else from its individual enrollment.
  - With O(hub_devices) (what M(iotfleet.aziot.iothub_device_info) read from the IoT hub), also its status in the
    hub (enabled, disabled - C(revoke.yml) - or absent) and the configurations and IoT Edge deployments applied to
    it; its tags are then its twin's, as the hub has them.
  - The twin tags are those of the device's individual enrollment when it gives any, else those of its enrollment
    group (its cohort). DPS copies C(initialTwin) into the twin when IoT Hub creates the device, at its first
    registration, and never after; a device that got its individual enrollment later (C(replace.yml),
    C(revoke.yml)) first registered through its cohort's group.
  - The device's cohort is the enrollment group it registered through, else the inventory's
    O(devices[].enrollment_group), else the group whose signing certificate issued the device's certificate.
  - Also returns a summary (devices per registration status, per cohort, per IoT hub), the certificate expiries in
    each of the next 12 months, and, with O(fail_within_days), the devices whose certificate expires sooner. It does
    not fail on those - the caller writes the report first and then decides.
  - Reads the records it is given (from M(iotfleet.aziot.dps_enrollment_info)) and certificate files on the host
    it runs on - the controller (delegate the task to localhost). Changes nothing.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - iotfleet.aziot.cryptography
  - iotfleet.aziot.read_only
options:
  devices:
    description: The devices to report on, one row each, in this order.
    type: list
    elements: dict
    required: true
    suboptions:
      host:
        description: The inventory name.
        type: str
        required: true
      registration_id:
        description: The DPS registration id (default O(devices[].host)).
        type: str
      enrollment_group:
        description: The enrollment group the inventory puts the device in (C(dps_enrollment_group)).
        type: str
        default: ""
      certificate_path:
        description: The controller's copy of the device certificate (read when it exists).
        type: path
        default: ""
      certificate_pem:
        description: The device certificate read from the device, base64-encoded PEM (the C(content) of
          P(ansible.builtin.slurp#module)).
        type: str
        default: ""
  enrollment_groups:
    description: The enrollment groups (C(enrollment_groups) of M(iotfleet.aziot.dps_enrollment_info)).
    type: list
    elements: dict
    default: []
  enrollments:
    description: The individual enrollments (C(enrollments) of M(iotfleet.aziot.dps_enrollment_info)).
    type: list
    elements: dict
    default: []
  group_registrations:
    description: The registration records listed for each enrollment group, by enrollment group id.
    type: dict
    default: {}
  registrations:
    description: Registration records looked up one by one (the individually enrolled devices, in no group's list).
    type: list
    elements: dict
    default: []
  hub_devices:
    description:
      - The devices read from the IoT hub (C(devices) of M(iotfleet.aziot.iothub_device_info)), matched to the rows
        by device id (the registration record's, else the registration id).
      - Not given - the hub was not read, and the rows say nothing of it (their C(hub_status) is empty). Given,
        a device it lacks is V(absent).
    type: list
    elements: dict
  warn_days:
    description: Certificates that expire in less than this many days are C(expiring).
    type: int
    default: 30
  fail_within_days:
    description: Return in RV(due) the devices whose certificate expires in less than this many days.
    type: int
seealso:
  - module: iotfleet.aziot.dps_enrollment_info
  - module: iotfleet.aziot.iothub_device_info
"""

EXAMPLES = r"""
---
- name: Build the fleet report
  iotfleet.aziot.fleet_report:
    devices:
      - host: pi-0042
        registration_id: pi-0042
        enrollment_group: plant-3
        certificate_path: /srv/pki/issued/pi-0042.cert.pem
    enrollment_groups: "{{ groups_read.enrollment_groups }}"
    group_registrations:
      plant-3: "{{ plant_3_records.registrations }}"
    hub_devices: "{{ hub_read.devices }}"
    fail_within_days: 14
  delegate_to: localhost
  run_once: true
  register: report
"""

RETURN = r"""
devices:
  description: One row per device.
  returned: always
  type: list
  elements: dict
  sample:
    - device: pi-0042
      host: pi-0042
      status: assigned
      hub: contoso-hub.azure-devices.net
      device_id: pi-0042
      hub_status: enabled
      hub_status_reason: ""
      configurations: [edge-plant-3]
      cohort: plant-3
      enrollment: group plant-3
      tags: {site: plant-3}
      tags_from: IoT Hub twin
      blocked: false
      subject: CN=pi-0042
      issuer: CN=Intermediate CA plant-3
      not_after: "2027-01-12T10:31:07Z"
      days_left: 180
      certificate_source: controller copy
      expiring: false
      note: ""
summary:
  description: Device counts - total, assigned, blocked, expiring, expired, unknown certificate, and per status
    (C(by_status)), cohort (C(by_cohort)) and IoT hub (C(by_hub)), the most frequent first; with O(hub_devices),
    also disabled in the hub (C(hub_disabled)), per hub status (C(by_hub_status)) and per configuration applied
    (C(by_configuration), V(-) for none).
  returned: always
  type: dict
  sample:
    devices: 3
    assigned: 2
    blocked: 1
    expiring: 0
    expired: 0
    unknown_certificate: 0
    by_status: {assigned: 2, unregistered: 1}
    by_cohort: {plant-3: 3}
    by_hub: {contoso-hub.azure-devices.net: 2, "-": 1}
    hub_disabled: 1
    by_hub_status: {enabled: 2, disabled: 1}
    by_configuration: {edge-plant-3: 2, "-": 1}
hub_read:
  description: Whether the rows carry the IoT hub's side (O(hub_devices) given).
  returned: always
  type: bool
  sample: true
expiries:
  description: Certificates expiring in each calendar month (UTC) from this one on, 12 months (C(months), each
    C(month) V(YYYY-MM) and C(devices)), already expired (C(expired)) and later (C(later)).
  returned: always
  type: dict
  sample: {months: [{month: "2026-08", devices: 0}, {month: "2026-09", devices: 140}], expired: 0, later: 12}
due:
  description: The devices whose certificate expires in less than O(fail_within_days) days.
  returned: always
  type: list
  elements: dict
  sample: [{device: pi-0042, days_left: 1, not_after: "2026-08-02T10:31:07Z"}]
due_text:
  description: RV(due) in one line.
  returned: always
  type: str
  sample: pi-0042 (1 day left)
generated:
  description: The report's date (UTC).
  returned: always
  type: str
  sample: "2026-08-01"
generated_at:
  description: The report's time (UTC).
  returned: always
  type: str
  sample: "2026-08-01T06:00:00Z"
warn_days:
  description: O(warn_days).
  returned: always
  type: int
  sample: 30
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.iotfleet.aziot.plugins.module_utils._fleet_report import build_report, build_rows
from ansible_collections.iotfleet.aziot.plugins.module_utils._pki import require_cryptography, utcnow


def argument_spec() -> dict:
    return {
        "devices": {
            "type": "list",
            "elements": "dict",
            "required": True,
            "options": {
                "host": {"type": "str", "required": True},
                "registration_id": {"type": "str"},
                "enrollment_group": {"type": "str", "default": ""},
                "certificate_path": {"type": "path", "default": ""},
                "certificate_pem": {"type": "str", "default": ""},
            },
        },
        "enrollment_groups": {"type": "list", "elements": "dict", "default": []},
        "enrollments": {"type": "list", "elements": "dict", "default": []},
        "group_registrations": {"type": "dict", "default": {}},
        "registrations": {"type": "list", "elements": "dict", "default": []},
        "hub_devices": {"type": "list", "elements": "dict"},
        "warn_days": {"type": "int", "default": 30},
        "fail_within_days": {"type": "int"},
    }


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    require_cryptography(module)
    params = module.params
    for option in ("warn_days", "fail_within_days"):
        if params[option] is not None and params[option] < 0:
            module.fail_json(msg=f"{option} must be 0 or more days, not {params[option]}")
    for name, found in params["group_registrations"].items():
        if not isinstance(found, list):
            module.fail_json(msg=f"group_registrations[{name}] must be a list of registration records")
    now = utcnow()
    rows = build_rows(
        params["devices"],
        params["enrollment_groups"],
        params["enrollments"],
        params["group_registrations"],
        params["registrations"],
        params["warn_days"],
        now,
        params["hub_devices"],
    )
    report = build_report(rows, params["warn_days"], now, params["fail_within_days"])
    module.exit_json(changed=False, **report)


if __name__ == "__main__":
    main()
