#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: dps_enrollment_info
short_description: Read enrollments and device registration records of Azure IoT Hub DPS
version_added: 0.2.0
description:
  - Reads, through the DPS service API (api-version 2021-10-01), enrollment groups, individual enrollments or the
    registration records of devices, for example to report on a fleet.
  - Without O(id), lists every enrollment group or individual enrollment (C(POST .../query), followed page by page
    with C(x-ms-continuation)), or, with O(enrollment_group_id), the registration records of the devices that
    registered through that group.
  - Changes nothing. Runs on the controller (delegate the task to localhost, or run it in a play on localhost).
  - Symmetric keys, TPM authentication keys and the query of custom allocation webhook URLs are always masked as
    C(********). To get a key, read it in the Azure portal, or keep the one M(iotfleet.aziot.dps_enrollment)
    returned when it created the enrollment.
author: iotfleet developers (@iotfleet)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - iotfleet.aziot.dps
  - iotfleet.aziot.dps.service_auth
  - iotfleet.aziot.dps.action_group
  - iotfleet.aziot.read_only
options:
  kind:
    description:
      - What to read. V(enrollment_group) and V(enrollment) (individual enrollments) need the C(EnrollmentRead)
        permission, V(registration) needs C(RegistrationStatusRead).
    type: str
    required: true
    choices: [enrollment_group, enrollment, registration]
  id:
    description:
      - The id of the one record to read, the enrollment group id for O(kind=enrollment_group) and the
        registration id for O(kind=enrollment) and O(kind=registration). A record that does not exist gives an
        empty list.
      - Without it, every record of that kind is listed; O(kind=registration) then needs O(enrollment_group_id).
    type: str
  enrollment_group_id:
    description:
      - With O(kind=registration) and no O(id), list the registration records of the devices of this enrollment
        group.
    type: str
  page_size:
    description: Records asked for per page when listing (C(x-ms-max-item-count)).
    type: int
    default: 100
seealso:
  - module: iotfleet.aziot.dps_enrollment
  - module: iotfleet.aziot.dps_registration_record
"""

EXAMPLES = r"""
---
- name: Registration records of the devices of a group
  iotfleet.aziot.dps_enrollment_info:
    connection_string: "{{ vault_dps_connection_string }}"
    kind: registration
    enrollment_group_id: fleet-plant-3
  delegate_to: localhost
  run_once: true
  register: fleet

- name: Devices whose registration failed
  ansible.builtin.debug:
    msg: "{{ item.registrationId }}: {{ item.errorMessage | default('no message') }}"
  loop: "{{ fleet.registrations | selectattr('status', 'eq', 'failed') }}"
  run_once: true

- name: One device's registration record
  iotfleet.aziot.dps_enrollment_info:
    connection_string: "{{ vault_dps_connection_string }}"
    kind: registration
    id: "{{ inventory_hostname }}"
  delegate_to: localhost
  register: registration

- name: Every enrollment group
  iotfleet.aziot.dps_enrollment_info:
    connection_string: "{{ vault_dps_connection_string }}"
    kind: enrollment_group
  delegate_to: localhost
  run_once: true
  register: groups
"""

RETURN = r"""
enrollment_groups:
  description: The enrollment groups as DPS has them, secrets masked.
  returned: when O(kind=enrollment_group)
  type: list
  elements: dict
  sample:
    - enrollmentGroupId: fleet-plant-3
      attestation: {type: x509, x509: {signingCertificates: {primary: {info: {subjectName: CN=Intermediate CA}}}}}
      iotHubs: [contoso-hub.azure-devices.net]
      provisioningStatus: enabled
      etag: '"0b00a6f7-0000-0300-0000-65a1b2c30000"'
enrollments:
  description: The individual enrollments as DPS has them, secrets masked.
  returned: when O(kind=enrollment)
  type: list
  elements: dict
  sample:
    - registrationId: pi-0042
      attestation: {type: symmetricKey, symmetricKey: {primaryKey: "********", secondaryKey: "********"}}
      provisioningStatus: disabled
registrations:
  description:
    - The registration records (DeviceRegistrationState) as DPS has them; among their fields C(registrationId),
      C(status) (V(unassigned), V(assigning), V(assigned), V(failed), V(disabled)), C(assignedHub), C(deviceId),
      C(etag), C(lastUpdatedDateTimeUtc), C(errorCode) and C(errorMessage), and for X.509 devices
      C(x509.certificateInfo).
  returned: when O(kind=registration)
  type: list
  elements: dict
  sample:
    - registrationId: pi-0042
      status: assigned
      assignedHub: contoso-hub.azure-devices.net
      deviceId: pi-0042
      etag: '"1a00c2d4-0000-0300-0000-65a1b2c30000"'
      lastUpdatedDateTimeUtc: '2026-01-12T10:31:07.4161528Z'
      x509: {certificateInfo: {subjectName: CN=pi-0042, sha256Thumbprint: 9F86D081884C7D659A2FEAA0C55AD015}}
status_counts:
  description: How many registration records have each status.
  returned: when O(kind=registration)
  type: dict
  sample: {assigned: 148, failed: 2}
requests:
  description:
    - Number of HTTP requests sent to DPS, retried ones included.
    - Not called C(attempts), the key Ansible sets on a task with C(until).
  returned: always
  type: int
  sample: 3
retried_requests:
  description: Number of requests retried after HTTP 429, 5xx or a connection error.
  returned: always
  type: int
  sample: 0
http_status:
  description: The HTTP status of the DPS answer that made the module fail.
  returned: on failure, when DPS answered with an error
  type: int
  sample: 401
error_code:
  description: The DPS C(errorCode) of the answer that made the module fail.
  returned: on failure, when DPS sent one
  type: int
  sample: 401002
tracking_id:
  description: The DPS C(trackingId) of the failed request, for Azure support.
  returned: on failure, when DPS sent one
  type: str
  sample: 5b7c2f4a-0c5e-4a8e-9c1e-7f0a1a2b3c4d
"""

from collections import Counter

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.iotfleet.aziot.plugins.module_utils._dps import DpsError, dps_connection_argument_spec
from ansible_collections.iotfleet.aziot.plugins.module_utils._dps_service import (
    ENROLLMENT_GROUPS,
    ENROLLMENTS,
    REGISTRATIONS,
    SERVICE_AUTH_MUTUALLY_EXCLUSIVE,
    SERVICE_AUTH_REQUIRED_ONE_OF,
    SERVICE_AUTH_REQUIRED_TOGETHER,
    dps_service_auth_argument_spec,
    fail_service_error,
    mask_record,
    service_client,
)

# kind option -> (DPS collection, result key)
KINDS = {
    "enrollment_group": (ENROLLMENT_GROUPS, "enrollment_groups"),
    "enrollment": (ENROLLMENTS, "enrollments"),
    "registration": (REGISTRATIONS, "registrations"),
}


def argument_spec() -> dict:
    return {
        **dps_connection_argument_spec(),
        **dps_service_auth_argument_spec(),
        "kind": {"type": "str", "required": True, "choices": list(KINDS)},
        "id": {"type": "str"},
        "enrollment_group_id": {"type": "str"},
        "page_size": {"type": "int", "default": 100},
    }


def subject_of(params: dict) -> str:
    """What the task reads, as its messages name it."""
    kind = params["kind"].replace("_", " ")
    if params["id"] is not None:
        return f"{kind} {params['id']}"
    if params["enrollment_group_id"] is not None:
        return f"registrations of enrollment group {params['enrollment_group_id']}"
    return f"{kind}s"


def read_records(module: AnsibleModule) -> dict:
    """Read the one record or list them all; return the module result."""
    params = module.params
    kind = params["kind"]
    collection, result_key = KINDS[kind]
    record_id = params["id"]
    group_id = params["enrollment_group_id"]
    subject = subject_of(params)
    if group_id is not None and kind != "registration":
        module.fail_json(msg=f"{subject}: enrollment_group_id is for kind=registration; use id to read one {kind}")
    for option in ("id", "enrollment_group_id"):
        if params[option] is not None and not params[option].strip():
            module.fail_json(msg=f"{option} must not be empty")
    if params["page_size"] <= 0:
        module.fail_json(msg=f"{subject}: page_size must be a positive number")
    client = service_client(module, subject, "dps_enrollment_info")
    try:
        if record_id is not None:
            record = client.get(collection, record_id)
            records = [record] if record is not None else []
        elif kind == "registration":
            records = client.query_registrations(group_id, params["page_size"])
        else:
            records = client.query_enrollments(collection, params["page_size"])
    except DpsError as error:
        fail_service_error(module, client, error)
    result = {
        "changed": False,
        result_key: [mask_record(record) for record in records],
        "requests": client.attempts,
        "retried_requests": client.retries,
    }
    if kind == "registration":
        result["status_counts"] = dict(Counter(str(record.get("status") or "unknown") for record in records))
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        mutually_exclusive=[("id", "enrollment_group_id"), *SERVICE_AUTH_MUTUALLY_EXCLUSIVE],
        required_one_of=SERVICE_AUTH_REQUIRED_ONE_OF,
        required_together=SERVICE_AUTH_REQUIRED_TOGETHER,
        required_if=[("kind", "registration", ("id", "enrollment_group_id"), True)],
    )
    module.exit_json(**read_records(module))


if __name__ == "__main__":
    main()
