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
  registration_id:
    description: The registration id of the device.
    type: str
    required: true
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
attempts:
  description: Number of HTTP requests sent to DPS.
  returned: always
  type: int
  sample: 2
retries:
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

from ansible_collections.iotfleet.aziot.plugins.module_utils._dps import (
    DpsError,
    check_connection_options,
    dps_connection_argument_spec,
    urls_transport,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._dps_service import (
    REGISTRATIONS,
    SERVICE_AUTH_MUTUALLY_EXCLUSIVE,
    SERVICE_AUTH_REQUIRED_ONE_OF,
    SERVICE_AUTH_REQUIRED_TOGETHER,
    SERVICE_USER_AGENT,
    DpsServiceClient,
    PreconditionFailed,
    credentials_from_params,
    dps_service_auth_argument_spec,
    explain_service_error,
    mask_record,
)

# How many times a delete refused with HTTP 412 (the record changed since it was read) is re-read and retried.
MAX_PRECONDITION_RETRIES = 3
_DIFF_FIELDS = ("registrationId", "status", "substatus", "assignedHub", "deviceId", "errorCode", "errorMessage")


def argument_spec() -> dict:
    spec = dps_connection_argument_spec()
    spec.update(dps_service_auth_argument_spec())
    spec.update(
        registration_id=dict(type="str", required=True),
        state=dict(type="str", required=True, choices=["absent"]),
    )
    return spec


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        mutually_exclusive=SERVICE_AUTH_MUTUALLY_EXCLUSIVE,
        required_one_of=SERVICE_AUTH_REQUIRED_ONE_OF,
        required_together=SERVICE_AUTH_REQUIRED_TOGETHER,
    )
    params = module.params
    registration_id = params["registration_id"]
    if not registration_id.strip():
        module.fail_json(msg="registration_id must not be empty")
    subject = f"registration record {registration_id}"
    problem = check_connection_options(params, subject)
    if problem:
        module.fail_json(msg=problem)
    try:
        credentials = credentials_from_params(params)
    except ValueError as error:
        module.fail_json(msg=f"{subject}: {error}")
    module.no_log_values.add(credentials.policy_key)
    if not params["validate_certs"]:
        module.warn("validate_certs=false: the DPS server certificate is not verified; use only for tests")

    client = DpsServiceClient(
        credentials,
        urls_transport(
            ca_path=params["ca_path"], validate_certs=params["validate_certs"], user_agent=SERVICE_USER_AGENT
        ),
        subject,
        timeout=params["timeout"],
        request_timeout=params["request_timeout"],
        log=module.log,
        log_name="dps_registration_record",
    )

    def done(changed: bool, record: dict | None) -> None:
        result = dict(
            changed=changed,
            registration=mask_record(record) if record else {},
            attempts=client.attempts,
            retries=client.retries,
        )
        if changed and module._diff:
            before = {name: record[name] for name in _DIFF_FIELDS if record.get(name) is not None}
            result["diff"] = dict(
                before=json.dumps(before, indent=2, sort_keys=True) + "\n",
                after="",
                before_header=f"{subject} (DPS)",
                after_header=f"{subject} (deleted)",
            )
        module.exit_json(**result)

    try:
        for attempt in range(MAX_PRECONDITION_RETRIES + 1):
            record = client.get(REGISTRATIONS, registration_id)
            if record is None:
                done(False, None)
            if module.check_mode:
                done(True, record)
            try:
                deleted = client.delete(REGISTRATIONS, registration_id, record.get("etag") or "*")
            except PreconditionFailed as error:
                module.log(
                    f"dps_registration_record {subject}: HTTP {error.status} on delete, the record changed "
                    f"meanwhile; reading it again ({attempt + 1}/{MAX_PRECONDITION_RETRIES})"
                )
                continue
            # Gone already (deleted by someone else between the read and the delete): not this task's change.
            done(deleted, record)
    except DpsError as error:
        extra = dict(http_status=error.status, error_code=error.error_code, tracking_id=error.tracking_id)
        module.fail_json(
            msg=explain_service_error(error, subject, credentials),
            attempts=client.attempts,
            retries=client.retries,
            **{key: value for key, value in extra.items() if value is not None},
        )
    module.fail_json(
        msg=f"{subject}: the record changed in DPS while this task was deleting it, {MAX_PRECONDITION_RETRIES + 1} "
        "times in a row (HTTP 412); this task changed nothing, run it again",
        http_status=412,
        attempts=client.attempts,
        retries=client.retries,
    )


if __name__ == "__main__":
    main()
