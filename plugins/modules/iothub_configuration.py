#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: iothub_configuration
short_description: Manage an Azure IoT Hub automatic device configuration or IoT Edge deployment
version_added: 0.3.0
description:
  - Creates, updates or deletes a configuration of an Azure IoT Hub through its service API (api-version
    2021-04-12) - an IoT Edge deployment (C(modulesContent), layered deployments too), an automatic device
    configuration (C(deviceContent)) or an automatic module configuration (C(moduleContent)) - so that deployments
    live in a playbook instead of C(az iot edge deployment create).
  - Runs on the controller (delegate the task to localhost, or run it in a play on localhost); O(content_file) is read
    there.
  - Idempotent. The configuration is read and compared field by field (target condition, priority, labels, metric
    queries, content); it is written (with C(If-Match) on its etag) only when something differs.
  - Before any write the target condition and the metric queries are checked by the hub
    (C(POST /configurations/testQueries)); a malformed one fails the task and nothing is written.
  - IoT Hub never changes a configuration's content once it is created. When O(content) differs from the hub's, the
    task fails and says so, unless O(replace_changed_content=true); then the configuration is deleted and created
    again with the new content (its devices drop it for a moment).
  - When the configuration changed in the hub between the read and the write (HTTP 412), it is read and compared
    again and the write retried, at most three times. HTTP 429 (IoT Hub allows 20 configuration operations a minute),
    5xx and connection errors are retried within O(timeout), honouring C(Retry-After).
author: iotfleet developers (@iotfleet)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - iotfleet.aziot.iothub
  - iotfleet.aziot.iothub.action_group
attributes:
  check_mode:
    support: full
    details: Reads the configuration and checks the target condition and metric queries with the hub (which changes
      nothing), and reports what would change; sends no PUT or DELETE.
  diff_mode:
    support: full
    details: Shows the configuration's id, target condition, priority, labels, metric queries and content before and
      after as JSON, without the hub's read-only fields (etag, timestamps, metrics results) and with container
      registry passwords replaced by C(********).
  platform:
    platforms: posix
options:
  id:
    description:
      - The configuration id. Lower-case letters, digits, parentheses and the characters C(-:+%_#*?!,=@;$'), at
        most 128 characters (IoT Hub's rule).
    type: str
    required: true
  state:
    description: Whether the configuration should exist.
    type: str
    choices: [present, absent]
    default: present
  target_condition:
    description:
      - Which devices the configuration applies to, in IoT Hub's query language over the twin, for example
        V(tags.site='plant-3' AND tags.ring='canary'), or V(*) for every device.
      - Required when O(state=present).
    type: str
  priority:
    description:
      - Among the configurations of the same kind that target a device, the highest priority wins (a tie goes to the
        newest). Layered deployments are applied on top of the base deployment in priority order.
    type: int
    default: 0
  labels:
    description:
      - Labels of the configuration (names and string values), compared and written as a whole.
    type: dict
    default: {}
  content:
    description:
      - The configuration's content, exactly one of C(modulesContent) (IoT Edge deployment), C(moduleContent)
        (module configuration) or C(deviceContent) (device configuration).
      - Exactly one of O(content) and O(content_file) is required when O(state=present).
    type: dict
  content_file:
    description:
      - A JSON file on the controller with the content, either as C(az iot edge deployment create --content) takes it
        (an object whose C(content) holds C(modulesContent)) or the content object itself (an object with
        C(modulesContent), C(moduleContent) or C(deviceContent)).
    type: path
  metrics:
    description:
      - Custom metric queries (name to query), at most five, for example
        V(reported) = V(SELECT deviceId FROM devices WHERE properties.reported.lastDesiredStatus.code = 200).
      - Compared and written as a whole; their results are in C(metrics.results) of RV(configuration).
    type: dict
    default: {}
  replace_changed_content:
    description:
      - What to do when O(content) differs from the content the hub has, which IoT Hub never changes.
      - V(false) fails the task, naming the configuration; V(true) deletes the configuration and creates it again with
        the new content (RV(replaced)), so its devices drop it until the hub applies the new one.
      - The other way is to give the new content a new O(id) (and remove the old one).
    type: bool
    default: false
notes:
  - The hub evaluates target conditions when a configuration is created and then every five minutes, so
    C(systemMetrics) of RV(configuration) may lag behind a change.
  - A hub holds at most 100 configurations and 100 IoT Edge deployments; creating one more fails with a message that
    says so.
seealso:
  - module: iotfleet.aziot.iothub_configuration_info
  - name: IoT Hub service API, configuration
    description: The REST operations this module uses.
    link: https://learn.microsoft.com/rest/api/iothub/service/configuration
  - name: Automatic IoT device and module management
    description: Target conditions, priorities and metrics.
    link: https://learn.microsoft.com/azure/iot-hub/iot-hub-automatic-device-management
"""

EXAMPLES = r"""
---
- name: IoT Edge deployment for the devices of plant 3
  iotfleet.aziot.iothub_configuration:
    connection_string: "{{ vault_iothub_connection_string }}"
    id: plant-3-base
    content_file: deployments/plant-3.json
    target_condition: "tags.site='plant-3'"
    priority: 10
    labels:
      managed-by: iotfleet.aziot
    metrics:
      reported: "SELECT deviceId FROM devices WHERE properties.reported.lastDesiredStatus.code = 200"
  delegate_to: localhost
  run_once: true

- name: Layered deployment for the canary ring, replaced when its content changes
  iotfleet.aziot.iothub_configuration:
    connection_string: "{{ vault_iothub_connection_string }}"
    id: plant-3-canary
    content_file: deployments/canary-layer.json
    target_condition: "tags.site='plant-3' AND tags.ring='canary'"
    priority: 20
    replace_changed_content: true
  delegate_to: localhost
  run_once: true

- name: Automatic device configuration with inline content
  iotfleet.aziot.iothub_configuration:
    connection_string: "{{ vault_iothub_connection_string }}"
    id: telemetry-interval
    target_condition: "tags.site IN ['plant-3', 'plant-4']"
    content:
      deviceContent:
        properties.desired.telemetry:
          interval: 30
  delegate_to: localhost
  run_once: true

- name: Remove a deployment
  iotfleet.aziot.iothub_configuration:
    connection_string: "{{ vault_iothub_connection_string }}"
    id: plant-3-old
    state: absent
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
configuration:
  description:
    - The configuration as the hub has it after the task (in check mode, as it is now); empty when it does not exist.
    - Container registry passwords of an IoT Edge deployment's content are replaced by C(********).
  returned: always
  type: dict
  sample:
    id: plant-3-base
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
differences:
  description:
    - The fields that differed from what the task sets, among V(targetCondition), V(priority), V(labels),
      V(metrics.queries) and V(content); all of them for a configuration that did not exist, V(configuration) for
      a deletion. Empty when nothing differed.
  returned: always
  type: list
  elements: str
  sample: [priority]
replaced:
  description: Whether the configuration was deleted and created again with new content (O(replace_changed_content)).
  returned: always
  type: bool
  sample: false
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
  description: IoT Hub's tracking id of the failed request, for Azure support.
  returned: on failure, when IoT Hub sent one
  type: str
  sample: 8a3c1e0f2b4d4a6e9f7c5b3a1d2e4f60
"""

import json

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.iotfleet.aziot.plugins.module_utils._iothub import (
    MAX_PRECONDITION_RETRIES,
    ConcurrentChange,
    IotHubClient,
    IotHubError,
    PreconditionFailed,
    fail_iothub_error,
    iothub_client,
    iothub_connection_argument_spec,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._iothub_configuration import (
    ConfigurationInputError,
    DesiredConfiguration,
    build_body,
    check_labels,
    check_metrics,
    configuration_id_problem,
    desired_view,
    differences,
    load_content,
    mask_configuration,
    registry_passwords,
    summarise,
)


def argument_spec() -> dict:
    spec = iothub_connection_argument_spec()
    spec.update(
        id=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        target_condition=dict(type="str"),
        priority=dict(type="int", default=0),
        labels=dict(type="dict", default={}),
        content=dict(type="dict"),
        content_file=dict(type="path"),
        metrics=dict(type="dict", default={}),
        replace_changed_content=dict(type="bool", default=False),
    )
    return spec


def desired_state(module: AnsibleModule, subject: str) -> DesiredConfiguration:
    """The configuration the options describe; fails (one line) before any request when they cannot be sent."""
    params = module.params
    if not params["target_condition"].strip():
        module.fail_json(msg=f"{subject}: target_condition must not be empty; use '*' to target every device")
    try:
        desired = DesiredConfiguration(
            configuration_id=params["id"],
            target_condition=params["target_condition"],
            priority=params["priority"],
            labels=check_labels(subject, params["labels"]),
            content=load_content(subject, params["content"], params["content_file"]),
            metrics=check_metrics(subject, params["metrics"]),
        )
    except ConfigurationInputError as error:
        module.fail_json(msg=str(error))
    module.no_log_values.update(registry_passwords(desired.content))
    return desired


def diff_result(before: dict, after: dict, subject: str) -> dict:
    def text(view: dict) -> str:
        return json.dumps(mask_configuration(view), indent=2, sort_keys=True) + "\n" if view else ""

    return dict(before=text(before), after=text(after), before_header=f"{subject} (IoT Hub)", after_header=subject)


class Runner:
    """One run of the module: the client, the results common to every outcome, and the two states."""

    def __init__(self, module: AnsibleModule, client: IotHubClient, subject: str, configuration_id: str) -> None:
        self.module = module
        self.client = client
        self.subject = subject
        self.configuration_id = configuration_id

    def result(
        self, changed: bool, configuration: dict | None, paths: list[str], diff: dict | None, replaced: bool = False
    ) -> dict:
        result = dict(
            changed=changed,
            configuration=mask_configuration(configuration) if configuration else {},
            differences=paths,
            replaced=replaced,
            requests=self.client.attempts,
            retried_requests=self.client.retries,
        )
        if diff is not None and self.module._diff:
            result["diff"] = diff
        return result

    def fail(self, message: str) -> None:
        self.module.fail_json(msg=message, requests=self.client.attempts, retried_requests=self.client.retries)

    def check_queries(self, desired: DesiredConfiguration) -> None:
        """Have the hub check the target condition and metric queries; fail (one line) on a malformed one."""
        answer = self.client.test_queries(desired.target_condition, desired.metrics)
        if answer["targetConditionError"]:
            self.fail(
                f"{self.subject}: target_condition {desired.target_condition!r} is malformed: "
                f"{answer['targetConditionError']}; fix it (for example tags.site='plant-3', or '*' for every "
                "device), nothing was written"
            )
        for name, error in sorted(answer["customMetricQueryErrors"].items()):
            self.fail(f"{self.subject}: metrics.{name} is malformed: {error}; fix the query, nothing was written")

    def present(self, desired: DesiredConfiguration, replace_changed_content: bool) -> dict:
        checked = False
        for attempt in range(MAX_PRECONDITION_RETRIES + 1):
            current = self.client.get_configuration(self.configuration_id)
            paths = differences(desired, current)
            if not paths:
                return self.result(False, current, [], None)
            if not checked:
                self.check_queries(desired)
                checked = True
            replace = current is not None and "content" in paths
            if replace and not replace_changed_content:
                self.fail(
                    f"{self.subject}: IoT Hub does not change a configuration's content once created; set "
                    "replace_changed_content=true to delete and re-create it (its devices drop it for a moment), or "
                    "give the new content a new id"
                )
            diff = diff_result(summarise(current), desired_view(desired), self.subject)
            if self.module.check_mode:
                return self.result(True, current, paths, diff, replaced=replace)
            try:
                if replace:
                    self.client.delete_configuration(self.configuration_id, current.get("etag"))
                    current = None
                answer = self.client.put_configuration(
                    self.configuration_id, build_body(desired, current), (current or {}).get("etag")
                )
            except PreconditionFailed as error:
                self.client.changed_meanwhile(error, attempt, "replace" if replace else "write")
                continue
            return self.result(True, answer, paths, diff, replaced=replace)
        raise ConcurrentChange(self.subject, "the configuration", "writing")

    def absent(self) -> dict:
        for attempt in range(MAX_PRECONDITION_RETRIES + 1):
            current = self.client.get_configuration(self.configuration_id)
            if current is None:
                return self.result(False, None, [], None)
            diff = diff_result(summarise(current), {}, self.subject)
            if self.module.check_mode:
                return self.result(True, current, ["configuration"], diff)
            try:
                deleted = self.client.delete_configuration(self.configuration_id, current.get("etag"))
            except PreconditionFailed as error:
                self.client.changed_meanwhile(error, attempt, "delete")
                continue
            return self.result(deleted, None, ["configuration"] if deleted else [], diff if deleted else None)
        raise ConcurrentChange(self.subject, "the configuration", "deleting")


def ensure_configuration(module: AnsibleModule) -> dict:
    """Make the configuration what the options say (or delete it); return the module result."""
    params = module.params
    configuration_id = params["id"]
    subject = f"configuration {configuration_id}"
    problem = configuration_id_problem(configuration_id)
    if problem:
        module.fail_json(msg=f"{subject}: {problem}")
    desired = desired_state(module, subject) if params["state"] == "present" else None
    client = iothub_client(module, subject, "iothub_configuration")
    runner = Runner(module, client, subject, configuration_id)
    try:
        if desired is None:
            return runner.absent()
        return runner.present(desired, params["replace_changed_content"])
    except IotHubError as error:
        fail_iothub_error(module, client, error)
    return {}  # not reached: fail_json exits


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        mutually_exclusive=[("content", "content_file")],
        required_if=[
            ("state", "present", ("target_condition",)),
            ("state", "present", ("content", "content_file"), True),
        ],
    )
    module.exit_json(**ensure_configuration(module))


if __name__ == "__main__":
    main()
