#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: dps_registration_state_info
short_description: What Azure IoT Hub DPS knows of a whole fleet's registrations, in a few requests
version_added: 0.3.0
description:
  - Reads, through the DPS service API (api-version 2021-10-01), every enrollment group, every individual enrollment,
    and the registration records of the devices of each enabled enrollment group (C(POST
    /registrations/{groupId}/query), paged with O(page_size) records a page) - a handful of DPS operations for the
    whole fleet, where a status lookup per device costs one operation per device.
  - The filter C(iotfleet.aziot.registration_state) turns the result into one device's
    O(iotfleet.aziot.dps_register#module:registration_state), so that M(iotfleet.aziot.dps_register) sends no lookup;
    role C(iotfleet.aziot.dps_registration) runs this module once per run (per batch with C(serial)) on the
    controller.
  - The records of a disabled enrollment group are not read (its devices register and DPS refuses them, as without
    this module).
  - The bulk query covers enrollment groups only. With O(individual_registrations) (the default) the record of each
    device with an enabled individual enrollment is read one by one (C(GET /registrations/{id}), one DPS operation
    each) - what that device's own status lookup would cost, but on the controller and without a module run on the
    device. A device whose individual enrollment is disabled looks its registration up itself (DPS refuses it).
  - When the shared access policy may read enrollments but not registration records (no C(RegistrationStatusRead)),
    the module warns and returns RV(complete=false) - the devices then look their registration up themselves, one
    DPS operation each.
  - Changes nothing. Runs on the controller (delegate the task to localhost).
author: iotfleet developers (@iotfleet)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - iotfleet.aziot.dps
  - iotfleet.aziot.dps.service_auth
  - iotfleet.aziot.dps.action_group
  - iotfleet.aziot.read_only
options:
  individual_registrations:
    description:
      - Read the registration record of each device with an enabled individual enrollment, one operation each (see
        above). V(false) - those devices look their registration up themselves, one operation each too, from the
        device.
    type: bool
    default: true
  page_size:
    description: Records asked for per page (C(x-ms-max-item-count)); each page is one DPS operation.
    type: int
    default: 1000
seealso:
  - module: iotfleet.aziot.dps_register
  - module: iotfleet.aziot.dps_enrollment_info
"""

EXAMPLES = r"""
---
- name: Read what DPS knows of the fleet's registrations (once)
  iotfleet.aziot.dps_registration_state_info:
    connection_string: "{{ vault_dps_connection_string }}"
  delegate_to: localhost
  run_once: true
  register: known

- name: Register each device only when DPS or its certificate says so
  iotfleet.aziot.dps_register:
    id_scope: 0ne00ABCDEF
    registration_id: "{{ inventory_hostname }}"
    client_cert: /var/aziot/certs/device-id.full-chain.cert.pem
    client_key: /var/aziot/secrets/device-id.key.pem
    provisioning_marker: /var/aziot/certs/dps-registration.json
    registration_state: "{{ known | iotfleet.aziot.registration_state(inventory_hostname) | default(omit, true) }}"
"""

RETURN = r"""
complete:
  description: Whether the registration records could be read (false - the policy lacks C(RegistrationStatusRead)).
  returned: always
  type: bool
  sample: true
registrations:
  description:
    - The registration records of the enabled enrollment groups' devices, by lower-case registration id (DPS's ids
      are case-insensitive), each with C(registrationId), C(status), C(assignedHub), C(deviceId) and
      C(enrollmentGroupId) (the group whose query listed it).
    - With O(individual_registrations), also those of the devices with an enabled individual enrollment (without
      C(enrollmentGroupId)).
  returned: always
  type: dict
  sample:
    pi-0042:
      registrationId: pi-0042
      status: assigned
      assignedHub: contoso-hub.azure-devices.net
      deviceId: pi-0042
      enrollmentGroupId: plant-3
enrollment_groups:
  description: Every enrollment group, by id, with its C(provisioningStatus) and C(iotHubs) (empty - any linked hub).
  returned: always
  type: dict
  sample: {"plant-3": {"provisioningStatus": "enabled", "iotHubs": ["contoso-hub.azure-devices.net"]}}
individual_enrollments:
  description:
    - Every individual enrollment, by lower-case registration id, with its C(provisioningStatus), its C(iotHubs)
      (empty - any linked hub) and C(registrationRead), whether its registration record was read (then it is in
      RV(registrations) when DPS has one).
  returned: always
  type: dict
  sample: {"pi-0007": {"provisioningStatus": "disabled", "iotHubs": [], "registrationRead": false}}
requests:
  description:
    - Number of HTTP requests sent to DPS, retried ones included (one DPS operation each, retries aside).
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

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.iotfleet.aziot.plugins.module_utils._dps import DpsError, dps_connection_argument_spec
from ansible_collections.iotfleet.aziot.plugins.module_utils._dps_service import (
    ENROLLMENT_GROUPS,
    ENROLLMENTS,
    REGISTRATIONS,
    SERVICE_AUTH_MUTUALLY_EXCLUSIVE,
    SERVICE_AUTH_REQUIRED_ONE_OF,
    SERVICE_AUTH_REQUIRED_TOGETHER,
    ServiceError,
    dps_service_auth_argument_spec,
    fail_service_error,
    service_client,
)

SUBJECT = "registration states"
# The fields of a registration record the devices' decision needs (the rest would only weigh on the controller).
RECORD_FIELDS = ("registrationId", "status", "assignedHub", "deviceId")


def argument_spec() -> dict:
    return {
        **dps_connection_argument_spec(),
        **dps_service_auth_argument_spec(),
        "page_size": {"type": "int", "default": 1000},
        "individual_registrations": {"type": "bool", "default": True},
    }


def group_hubs(group: dict) -> list[str]:
    """The hubs an enrollment group assigns to: iotHubs, else the older single iotHubHostName, else any."""
    hubs = [hub for hub in group.get("iotHubs") or [] if isinstance(hub, str)]
    if not hubs and isinstance(group.get("iotHubHostName"), str):
        hubs = [group["iotHubHostName"]]
    return hubs


def no_permission(module: AnsibleModule, client, error: ServiceError) -> None:
    """Warn that the policy may not read registration records (the devices then look theirs up), or raise `error`
    when it is another refusal."""
    if error.status not in (401, 403) or not error.authenticated:
        raise error
    module.warn(
        f"{SUBJECT}: policy {client.credentials.policy_name} may not read registration records "
        "(RegistrationStatusRead); each device looks its registration up itself, one DPS operation per "
        "device and run - give the policy RegistrationStatusRead (DPS > Shared access policies)"
    )


def read_states(module: AnsibleModule) -> dict:
    params = module.params
    if params["page_size"] <= 0:
        module.fail_json(msg=f"{SUBJECT}: page_size must be a positive number")
    client = service_client(module, SUBJECT, "dps_registration_state_info")
    page_size = params["page_size"]
    registrations: dict[str, dict] = {}
    complete = True
    try:
        groups = {
            str(group.get("enrollmentGroupId")): {
                "provisioningStatus": group.get("provisioningStatus") or "enabled",
                "iotHubs": group_hubs(group),
            }
            for group in client.query_enrollments(ENROLLMENT_GROUPS, page_size)
        }
        individuals = {
            str(enrollment.get("registrationId")).lower(): {
                "provisioningStatus": enrollment.get("provisioningStatus") or "enabled",
                "iotHubs": group_hubs(enrollment),
                "registrationRead": False,
            }
            for enrollment in client.query_enrollments(ENROLLMENTS, page_size)
        }
        # One query per enabled group (paged), then one GET per enabled individual enrollment: the query lists a
        # group's devices only.
        reads = [
            (group_id, None) for group_id, group in sorted(groups.items()) if group["provisioningStatus"] == "enabled"
        ]
        if params["individual_registrations"]:
            reads += [
                (None, registration_id)
                for registration_id, individual in sorted(individuals.items())
                if individual["provisioningStatus"] == "enabled"
            ]
        for group_id, registration_id in reads:
            try:
                if group_id is not None:
                    records = client.query_registrations(group_id, page_size)
                else:
                    records = [record for record in [client.get(REGISTRATIONS, registration_id)] if record]
            except ServiceError as error:
                no_permission(module, client, error)
                complete = False
                registrations = {}
                break
            if registration_id is not None:
                individuals[registration_id]["registrationRead"] = True
            for record in records:
                record_id = record.get("registrationId")
                if not isinstance(record_id, str):
                    continue
                compact = {name: record[name] for name in RECORD_FIELDS if record.get(name) is not None}
                if group_id is not None:
                    compact["enrollmentGroupId"] = group_id
                registrations[record_id.lower()] = compact
    except DpsError as error:
        fail_service_error(module, client, error)
    return {
        "changed": False,
        "complete": complete,
        "registrations": registrations,
        "enrollment_groups": groups,
        "individual_enrollments": individuals,
        "requests": client.attempts,
        "retried_requests": client.retries,
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        mutually_exclusive=SERVICE_AUTH_MUTUALLY_EXCLUSIVE,
        required_one_of=SERVICE_AUTH_REQUIRED_ONE_OF,
        required_together=SERVICE_AUTH_REQUIRED_TOGETHER,
    )
    module.exit_json(**read_states(module))


if __name__ == "__main__":
    main()
