#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: iothub_configuration_info
short_description: Read Azure IoT Hub automatic device configurations and IoT Edge deployments
version_added: 0.3.0
description:
  - Reads one configuration (O(id)) or every configuration of an Azure IoT Hub through its service API (api-version
    2021-04-12), with the hub's counts (C(systemMetrics), for example how many devices are targeted and how many have
    it applied) and the results of the custom metric queries.
  - Changes nothing. Runs on the controller.
author: iotfleet developers (@iotfleet)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - iotfleet.aziot.iothub
  - iotfleet.aziot.iothub.action_group
  - iotfleet.aziot.read_only
options:
  id:
    description:
      - The id of the configuration to read. When not set, every configuration of the hub is read.
    type: str
notes:
  - The hub evaluates target conditions when a configuration is created and then every five minutes, so the counts
    may lag behind a change.
  - A hub holds at most 100 configurations and 100 IoT Edge deployments, so one request reads them all.
seealso:
  - module: iotfleet.aziot.iothub_configuration
  - name: IoT Hub service API, configuration
    description: The REST operations this module uses.
    link: https://learn.microsoft.com/rest/api/iothub/service/configuration
"""

EXAMPLES = r"""
---
- name: How far has the plant 3 deployment got
  iotfleet.aziot.iothub_configuration_info:
    connection_string: "{{ vault_iothub_connection_string }}"
    id: plant-3-base
  delegate_to: localhost
  run_once: true
  register: plant_3

- name: Show targeted and applied counts
  ansible.builtin.debug:
    msg: >-
      {{ plant_3.configurations[0].systemMetrics.results.appliedCount }} of
      {{ plant_3.configurations[0].systemMetrics.results.targetedCount }} devices have it
  when: plant_3.exists

- name: Every configuration managed by this collection
  iotfleet.aziot.iothub_configuration_info:
    connection_string: "{{ vault_iothub_connection_string }}"
  delegate_to: localhost
  run_once: true
  register: hub_configurations

- name: Their ids
  ansible.builtin.debug:
    msg: "{{ hub_configurations.configurations | selectattr('labels.managed-by', 'defined') | map(attribute='id') }}"
"""

RETURN = r"""
configurations:
  description:
    - The configurations as the hub has them (one, or none, when O(id) is set), ordered by id, with container
      registry passwords of IoT Edge deployments replaced by C(********).
    - C(systemMetrics.results) holds the hub's counts (C(targetedCount), C(appliedCount); for IoT Edge deployments
      also C(reportedSuccessfulCount) and C(reportedFailedCount)), C(metrics.results) the custom metric queries'.
  returned: always
  type: list
  elements: dict
  sample:
    - id: plant-3-base
      schemaVersion: "1.0"
      labels:
        managed-by: iotfleet.aziot
      content:
        modulesContent:
          $edgeAgent:
            properties.desired: {}
      targetCondition: tags.site='plant-3'
      priority: 10
      systemMetrics:
        queries: {}
        results:
          targetedCount: 12
          appliedCount: 12
      metrics:
        queries:
          reported: SELECT deviceId FROM devices WHERE properties.reported.lastDesiredStatus.code = 200
        results:
          reported: 11
      etag: MQ==
      createdTimeUtc: "2026-12-07T15:00:00.0000000Z"
      lastUpdatedTimeUtc: "2026-12-07T15:00:00.0000000Z"
exists:
  description: Whether the configuration O(id) exists.
  returned: when O(id) is set
  type: bool
  sample: true
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
  description: IoT Hub's tracking id of the failed request, for Azure support.
  returned: on failure, when IoT Hub sent one
  type: str
  sample: 8a3c1e0f2b4d4a6e9f7c5b3a1d2e4f60
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.iotfleet.aziot.plugins.module_utils._iothub import (
    IotHubError,
    fail_iothub_error,
    iothub_client,
    iothub_connection_argument_spec,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._iothub_configuration import mask_configuration


def read_configurations(module: AnsibleModule) -> dict:
    configuration_id = module.params["id"]
    if configuration_id is not None and not configuration_id.strip():
        module.fail_json(msg="id must not be empty; leave it out to read every configuration")
    subject = f"configuration {configuration_id}" if configuration_id is not None else "configurations"
    client = iothub_client(module, subject, "iothub_configuration_info")
    result: dict = {}
    try:
        if configuration_id is not None:
            configuration = client.get_configuration(configuration_id)
            result["exists"] = configuration is not None
            configurations = [configuration] if configuration is not None else []
        else:
            configurations = sorted(client.list_configurations(), key=lambda item: str(item.get("id")))
    except IotHubError as error:
        fail_iothub_error(module, client, error)
    result.update(
        changed=False,
        configurations=[mask_configuration(configuration) for configuration in configurations],
        requests=client.attempts,
        retried_requests=client.retries,
    )
    return result


def argument_spec() -> dict:
    return {**iothub_connection_argument_spec(), "id": dict(type="str")}


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    module.exit_json(**read_configurations(module))


if __name__ == "__main__":
    main()
