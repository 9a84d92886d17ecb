#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: dps_registration_record
short_description: Delete a device's registration record in Azure IoT Hub DPS
version_added: 0.2.0
description:
  - Deletes the registration record DPS keeps for a device (C(DELETE /registrations/{id}) of the DPS service API,
    api-version 2021-10-01), with C(If-Match) on the etag just read, so a record that changed in between is read
    again (at most three times) rather than deleted blindly.
  - Deleting the record does not delete the device from its IoT Hub, and does not stop the device from registering
    again; to block a device, also disable its enrollment (an individual enrollment with
    C(provisioning_status=disabled), see M(iotfleet.aziot.dps_enrollment)).
  - Runs on the controller (delegate the task to localhost, or run it in a play on localhost).
author: iotfleet developers (@iotfleet)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - iotfleet.aziot.dps
  - iotfleet.aziot.dps.service_auth
  - iotfleet.aziot.dps.action_group
  - iotfleet.aziot.registration_id
attributes:
  check_mode:
    support: full
    details: Reads the record and reports whether it would be deleted.
  diff_mode:
    support: full
    details: Shows the record (status, hub, device id) before, and nothing after.
  platform:
    platforms: posix
options:
  state:
    description: V(absent) deletes the record. A record that does not exist is not a change.
    type: str
    required: true
    choices: [absent]
notes:
  - The policy needs C(RegistrationStatusRead) and C(RegistrationStatusWrite).
seealso:
  - module: iotfleet.aziot.dps_enrollment
  - module: iotfleet.aziot.dps_enrollment_info
"""

EXAMPLES = r"""
---
- name: Revoke a device - disable its enrollment (it wins over its group)
  iotfleet.aziot.dps_enrollment:
    connection_string: "{{ vault_dps_connection_string }}"
    registration_id: "{{ inventory_hostname }}"
    attestation: x509
    primary_certificate: "pki/devices/{{ inventory_hostname }}.pem"
    provisioning_status: disabled
  delegate_to: localhost

- name: Revoke a device - and delete its registration record
  iotfleet.aziot.dps_registration_record:
    connection_string: "{{ vault_dps_connection_string }}"
    registration_id: "{{ inventory_hostname }}"
    state: absent
  delegate_to: localhost
"""

RETURN = r"""
registration:
  description: The registration record as it was before the task (secrets masked); empty when there was none.
  returned: always
  type: dict
  sample:
    registrationId: pi-0042
    status: assigned
    assignedHub: contoso-hub.azure-devices.net
    deviceId: pi-0042
    etag: '"1a00c2d4-0000-0300-0000-65a1b2c30000"'
requests:
  description:
    - Number of HTTP requests sent to DPS, retried ones included.
    - Not called C(attempts), the key Ansible sets on a task with C(until).
  returned: always
  type: int
  sample: 2
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

import json

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.iotfleet.aziot.plugins.module_utils._dps import DpsError, dps_connection_argument_spec
from ansible_collections.iotfleet.aziot.plugins.module_utils._dps_service import (
    REGISTRATIONS,
    SERVICE_AUTH_MUTUALLY_EXCLUSIVE,
    SERVICE_AUTH_REQUIRED_ONE_OF,
    SERVICE_AUTH_REQUIRED_TOGETHER,
    dps_service_auth_argument_spec,
    fail_service_error,
    mask_record,
    service_client,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._registration_id import (
    registration_id_argument_spec,
    registration_id_problem,
)

_DIFF_FIELDS = ("registrationId", "status", "substatus", "assignedHub", "deviceId", "errorCode", "errorMessage")


def argument_spec() -> dict:
    return {
        **dps_connection_argument_spec(),
        **dps_service_auth_argument_spec(),
        **registration_id_argument_spec(),
        "state": {"type": "str", "required": True, "choices": ["absent"]},
    }


def delete_registration_record(module: AnsibleModule) -> dict:
    """Delete the record (read it only in check mode); return the module result."""
    registration_id = module.params["registration_id"]
    problem = registration_id_problem(registration_id)
    if problem:
        module.fail_json(msg=problem)
    subject = f"registration record {registration_id}"
    client = service_client(module, subject, "dps_registration_record")
    try:
        changed, record = client.delete_current(REGISTRATIONS, registration_id, module.check_mode)
    except DpsError as error:
        fail_service_error(module, client, error)
    result = {
        "changed": changed,
        "registration": mask_record(record) if record else {},
        "requests": client.attempts,
        "retried_requests": client.retries,
    }
    if changed and module._diff:
        before = {name: record[name] for name in _DIFF_FIELDS if record.get(name) is not None}
        result["diff"] = {
            "before": json.dumps(before, indent=2, sort_keys=True) + "\n",
            "after": "",
            "before_header": f"{subject} (DPS)",
            "after_header": f"{subject} (deleted)",
        }
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        mutually_exclusive=SERVICE_AUTH_MUTUALLY_EXCLUSIVE,
        required_one_of=SERVICE_AUTH_REQUIRED_ONE_OF,
        required_together=SERVICE_AUTH_REQUIRED_TOGETHER,
    )
    module.exit_json(**delete_registration_record(module))


if __name__ == "__main__":
    main()
