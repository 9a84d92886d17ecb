#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: iothub_device
short_description: Set the twin tags and the status of many Azure IoT Hub devices in one task
version_added: 0.3.0
description:
  - Brings the twin tags and the status (enabled or disabled, with a reason) of the IoT Hub devices listed in
    O(devices) in line with what the task says, through the IoT Hub service API (api-version 2021-04-12). Made
    to be called once per play for the whole fleet (up to ten thousand devices), delegated to the controller.
  - Reads every listed twin in bulk (C(POST /devices/query) with C(SELECT * FROM devices WHERE deviceId IN [...]),
    100 devices a query, followed page by page with C(x-ms-continuation)), then writes only the differences,
    device by device. Tags that differ are sent as one C(PATCH /twins/{id}) with C(If-Match) on the twin's etag (a
    tag to remove is patched to C(null)); a status or reason that differs is written with C(PUT /devices/{id})
    with C(If-Match) on the device's etag, after a C(GET) of the identity (the PUT carries it unchanged but for the
    status). A device that matches costs nothing beyond its share of the query.
  - Only what is set is compared. A device without O(devices[].tags) keeps its tags; without
    O(devices[].status) keeps its status. Tags are compared as JSON (V(true) is not V(1)).
  - When a device changed in IoT Hub between the read and the write (HTTP 412), that device is read again,
    compared again and written again, at most three times. HTTP 429 (the registry's throttle), 5xx and
    connection errors are retried within O(timeout), honouring C(Retry-After).
  - Devices the hub does not have are found before anything is written. With O(missing=fail) the task then fails
    without changing anything.
author: iotfleet developers (@iotfleet)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - iotfleet.aziot.iothub
  - iotfleet.aziot.iothub.action_group
attributes:
  check_mode:
    support: full
    details: Reads the twins and reports which devices would change (and how, in diff mode); writes nothing.
  diff_mode:
    support: full
    details: One diff per changed device, of what the task sets (tags, status, status_reason) before and after,
      as JSON.
  platform:
    platforms: posix
options:
  devices:
    description:
      - The devices to manage, each by its IoT Hub device id. A device id may be given once.
    type: list
    elements: dict
    required: true
    suboptions:
      device_id:
        description:
          - The IoT Hub device id (for a device DPS registered, its registration id).
          - "Case-sensitive; at most 128 characters of ASCII letters, digits and C(- . % _ * ? ! ( ) , : = @ $ ' + #)."
        type: str
        required: true
      tags:
        description:
          - The twin tags the device should have. Not set means the device's tags are left as they are.
          - Values may be strings, numbers, booleans, lists and nested dicts (up to ten levels), as IoT Hub takes
            them; keys may not hold C(.), C($), spaces or control characters; C(null) is refused (to remove a tag,
            leave it out with O(purge_tags=true)).
          - A tag whose value is a dict is made exactly that dict (keys it lacks are removed from the twin).
        type: dict
      status:
        description:
          - V(disabled) makes IoT Hub refuse the device's connections; V(enabled) lets it connect again. Not set
            means the status is left as it is.
        type: str
        choices: [enabled, disabled]
      status_reason:
        description:
          - Why the device has its status (IoT Hub's C(statusReason)), at most 128 characters. Not set means the
            reason is left as it is; an empty string clears it.
        type: str
  purge_tags:
    description:
      - V(true), a device's twin tags become exactly O(devices[].tags); tags the twin has and the task does not
        name are removed.
      - V(false), only the tags the task names are set; the twin's other tags are left alone.
    type: bool
    default: true
  missing:
    description:
      - What to do with a listed device the hub does not have.
      - V(fail), fail the task before anything is written, naming the devices (register them through DPS first,
        for example with C(provision.yml)).
      - V(skip), leave them out and list them in RV(missing).
    type: str
    choices: [fail, skip]
    default: fail
notes:
  - The connection string's policy needs C(RegistryRead) for the query and C(RegistryWrite) when something
    differs.
  - Each write is one IoT Hub registry operation (a status change is two, a read and a write); IoT Hub allows 100
    a minute per unit on S1 and S2 and throttles beyond (HTTP 429, retried within O(timeout)). A run where nothing
    differs costs one query per 100 devices; a first run that writes the tags of a thousand devices takes about ten
    minutes on one S1 unit, so raise O(timeout) for it.
  - When the task fails part-way (a refused write, a device that kept changing), the devices written before are
    listed in RV(changed_devices); running the task again converges.
  - IoT Hub re-evaluates automatic configurations' target conditions every five minutes, so
    RV(devices[].configurations) shows a tag change's effect only later.
seealso:
  - module: iotfleet.aziot.iothub_device_info
  - module: iotfleet.aziot.iothub_configuration
  - name: IoT Hub service API, devices
    description: The REST operations this module uses.
    link: https://learn.microsoft.com/rest/api/iothub/service/devices
  - name: Understand and use device twins in IoT Hub
    description: The rules for twin tags.
    link: https://learn.microsoft.com/azure/iot-hub/iot-hub-devguide-device-twins
"""

EXAMPLES = r"""
---
- name: Every device of the play gets its cohort's tags
  iotfleet.aziot.iothub_device:
    connection_string: "{{ vault_iothub_connection_string }}"
    devices: "{{ ansible_play_hosts | map('extract', hostvars) | map(attribute='iothub_device_entry') | list }}"
  delegate_to: localhost
  run_once: true

- name: Two devices, tags given inline
  iotfleet.aziot.iothub_device:
    connection_string: "{{ vault_iothub_connection_string }}"
    devices:
      - device_id: pi-01
        tags:
          site: plant-3
          ring: canary
      - device_id: pi-02
        tags:
          site: plant-3
          ring: production
          location:
            line: 4
  delegate_to: localhost
  run_once: true

- name: Shut a revoked device out of the hub
  iotfleet.aziot.iothub_device:
    connection_string: "{{ vault_iothub_connection_string }}"
    devices:
      - device_id: pi-07
        status: disabled
        status_reason: revoked by iotfleet.aziot revoke.yml
  delegate_to: localhost

- name: Add one tag without touching the others, skipping devices the hub does not have yet
  iotfleet.aziot.iothub_device:
    connection_string: "{{ vault_iothub_connection_string }}"
    purge_tags: false
    missing: skip
    devices:
      - device_id: pi-01
        tags:
          maintenance_window: sunday
  delegate_to: localhost
  register: tagged
"""

RETURN = r"""
devices:
  description:
    - The listed devices the hub has, in the order given, as IoT Hub has them after the task (in check mode, as
      they are now).
  returned: always
  type: list
  elements: dict
  contains:
    device_id:
      description: The device id.
      type: str
      returned: always
      sample: pi-01
    changed:
      description: Whether the task changed (in check mode, would change) this device.
      type: bool
      returned: always
      sample: true
    status:
      description: V(enabled) or V(disabled).
      type: str
      returned: always
      sample: enabled
    status_reason:
      description: The device's C(statusReason); empty when it has none.
      type: str
      returned: always
      sample: ""
    tags:
      description: The twin's tags.
      type: dict
      returned: always
      sample: {site: plant-3, ring: canary}
    configurations:
      description:
        - The twin's C(configurations) map, the automatic configurations and deployments whose target condition
          matches the device, with their status (V(targeted) or V(applied)).
      type: dict
      returned: always
      sample: {edge-base-plant-3: {status: applied}}
changed_devices:
  description:
    - The ids of the devices the task changed (in check mode, would change). On failure, the devices written
      before the failure.
  returned: always
  type: list
  elements: str
  sample: [pi-01]
missing:
  description: The listed devices the hub does not have (with O(missing=skip)).
  returned: always
  type: list
  elements: str
  sample: [pi-09]
requests:
  description:
    - Number of HTTP requests sent to IoT Hub, retried ones included.
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
  description: The HTTP status of the IoT Hub answer that made the module fail.
  returned: on failure, when IoT Hub answered with an error
  type: int
  sample: 401
error_name:
  description: IoT Hub's error code name of the answer that made the module fail.
  returned: on failure, when IoT Hub sent one
  type: str
  sample: IotHubUnauthorizedAccess
error_code:
  description: IoT Hub's numeric error code of the answer that made the module fail.
  returned: on failure, when IoT Hub sent one
  type: int
  sample: 401002
tracking_id:
  description: The IoT Hub tracking id of the failed request, for Azure support.
  returned: on failure, when IoT Hub sent one
  type: str
  sample: 5b7c2f4a0c5e4a8e9c1e7f0a1a2b3c4d
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.iotfleet.aziot.plugins.module_utils._dps import fail_with_counts
from ansible_collections.iotfleet.aziot.plugins.module_utils._iothub import (
    IotHubError,
    explain_error,
    iothub_client,
    iothub_connection_argument_spec,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._iothub_registry import (
    MISSING_FAIL,
    MISSING_SKIP,
    STATUSES,
    RegistryError,
    RegistrySync,
    desired_devices,
)


def argument_spec() -> dict:
    spec = iothub_connection_argument_spec()
    spec.update(
        devices=dict(
            type="list",
            elements="dict",
            required=True,
            options=dict(
                device_id=dict(type="str", required=True),
                tags=dict(type="dict"),
                status=dict(type="str", choices=list(STATUSES)),
                status_reason=dict(type="str"),
            ),
        ),
        purge_tags=dict(type="bool", default=True),
        missing=dict(type="str", default=MISSING_FAIL, choices=[MISSING_FAIL, MISSING_SKIP]),
    )
    return spec


def partly_done(changed_devices: list[str]) -> str:
    """What a failure part-way leaves behind, for its message."""
    if not changed_devices:
        return ""
    return f"; {len(changed_devices)} devices were changed before (changed_devices), run the task again to converge"


def run(module: AnsibleModule) -> dict:
    try:
        devices = desired_devices(module.params["devices"])
    except RegistryError as error:
        module.fail_json(msg=str(error))
    client = iothub_client(module, f"{len(devices)} IoT Hub devices", "iothub_device")
    sync = RegistrySync(
        client,
        client.credentials.host_name,
        purge_tags=module.params["purge_tags"],
        missing=module.params["missing"],
        check_mode=module.check_mode,
    )
    try:
        result = sync.run(devices)
    except (IotHubError, RegistryError) as error:
        subject = f"device {sync.current}" if sync.current else client.retry.subject
        if isinstance(error, RegistryError):
            message, fields = str(error), {}
        else:
            message = explain_error(error, subject, client.credentials)
            fields = dict(error=error, error_name=getattr(error, "error_name", None))
        fail_with_counts(
            module,
            client,
            message + partly_done(sync.changed_devices),
            changed=bool(sync.changed_devices),
            changed_devices=sync.changed_devices,
            **fields,
        )
    diffs = result.pop("diffs")
    if module._diff and diffs:
        result["diff"] = diffs
    result.update(requests=client.attempts, retried_requests=client.retries)
    return result


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
