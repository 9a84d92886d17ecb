#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: iothub_device_info
short_description: Read the status, twin tags and applied configurations of Azure IoT Hub devices
version_added: 0.3.0
description:
  - Reads devices of an IoT Hub through its service API (api-version 2021-04-12) in bulk, for example to report
    on a fleet - each device's status and reason, twin tags, the automatic configurations and deployments that
    target it (the twin's C(configurations)), its capabilities and connection state.
  - With O(device_ids), those devices (C(POST /devices/query) with C(SELECT * FROM devices WHERE deviceId IN
    [...]), 100 devices a query); devices the hub does not have are listed in RV(missing). Without, every device
    of the hub (C(SELECT * FROM devices)), page by page with C(x-ms-continuation).
  - Changes nothing. Runs on the controller (delegate the task to localhost, or run it in a play on localhost).
    No device keys are read.
author: iotfleet developers (@iotfleet)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - iotfleet.aziot.iothub
  - iotfleet.aziot.iothub.action_group
  - iotfleet.aziot.read_only
options:
  device_ids:
    description:
      - The ids of the devices to read. Empty or not set, every device of the hub.
    type: list
    elements: str
    default: []
notes:
  - The connection string's policy needs C(RegistryRead).
seealso:
  - module: iotfleet.aziot.iothub_device
  - module: iotfleet.aziot.iothub_configuration_info
"""

EXAMPLES = r"""
---
- name: Hub status of the play's devices
  iotfleet.aziot.iothub_device_info:
    connection_string: "{{ vault_iothub_connection_string }}"
    device_ids: "{{ ansible_play_hosts }}"
  delegate_to: localhost
  run_once: true
  register: hub_devices

- name: Devices of the play that are disabled in the hub
  ansible.builtin.debug:
    msg: "{{ hub_devices.devices | selectattr('status', 'equalto', 'disabled') | map(attribute='device_id') | list }}"
  run_once: true

- name: Every device of the hub
  iotfleet.aziot.iothub_device_info:
    connection_string: "{{ vault_iothub_connection_string }}"
  delegate_to: localhost
  run_once: true
  register: all_hub_devices
"""

RETURN = r"""
devices:
  description:
    - The devices found, in the order of O(device_ids), or ordered by device id when listing every device.
  returned: always
  type: list
  elements: dict
  contains:
    device_id:
      description: The device id.
      type: str
      returned: always
      sample: pi-01
    status:
      description: V(enabled) or V(disabled).
      type: str
      returned: always
      sample: disabled
    status_reason:
      description: The device's C(statusReason); empty when it has none.
      type: str
      returned: always
      sample: revoked by iotfleet.aziot revoke.yml
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
      sample: {edge-base-plant-3: {status: applied}, edge-canary-layer: {status: applied}}
    capabilities:
      description: The device's capabilities, for example C(iotEdge).
      type: dict
      returned: always
      sample: {iotEdge: true}
    connection_state:
      description: V(Connected) or V(Disconnected), as IoT Hub last saw the device.
      type: str
      returned: always
      sample: Disconnected
missing:
  description: The ids of O(device_ids) the hub does not have.
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
  sample: 1
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

from ansible_collections.iotfleet.aziot.plugins.module_utils._iothub import (
    IotHubError,
    fail_iothub_error,
    iothub_client,
    iothub_connection_argument_spec,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._iothub_registry import (
    QUERY_PAGE_SIZE,
    device_id_problem,
    info_view,
    read_twins,
)

ALL_DEVICES = "SELECT * FROM devices"


def argument_spec() -> dict:
    spec = iothub_connection_argument_spec()
    spec.update(device_ids=dict(type="list", elements="str", default=[]))
    return spec


def run(module: AnsibleModule) -> dict:
    device_ids = list(dict.fromkeys(module.params["device_ids"] or []))  # once each, in the order given
    for device_id in device_ids:
        problem = device_id_problem(device_id)
        if problem:
            module.fail_json(msg=f"device_ids: {problem}")
    subject = f"{len(device_ids)} IoT Hub devices" if device_ids else "the IoT Hub's devices"
    client = iothub_client(module, subject, "iothub_device_info")
    try:
        if device_ids:
            twins = read_twins(client, device_ids)
            found = [twins[device_id] for device_id in device_ids if device_id in twins]
            missing = [device_id for device_id in device_ids if device_id not in twins]
        else:
            found = sorted(
                client.query_devices(ALL_DEVICES, QUERY_PAGE_SIZE), key=lambda twin: str(twin.get("deviceId") or "")
            )
            missing = []
    except IotHubError as error:
        fail_iothub_error(module, client, error)
    return dict(
        changed=False,
        devices=[info_view(twin) for twin in found],
        missing=missing,
        requests=client.attempts,
        retried_requests=client.retries,
    )


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
