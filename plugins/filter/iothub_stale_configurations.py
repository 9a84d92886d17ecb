# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: iothub_stale_configurations
short_description: The IoT Hub configurations this collection made that the inventory no longer declares
version_added: 0.1.0
author: iotfleet developers (@iotfleet)
description:
  - The ids of the hub's configurations labelled C(managed-by=iotfleet.aziot) (every configuration the role
    C(iotfleet.aziot.iothub_deployment) writes carries it) that none of the planned deployments has; the role deletes
    them when C(iothub_deployment_prune) is on. Configurations without that label - made in the portal, with C(az),
    by another tool - are never listed.
options:
  _input:
    description: The hub's configurations (M(iotfleet.aziot.iothub_configuration_info)'s C(configurations)).
    type: list
    elements: dict
    required: true
  deployments:
    description: The planned deployments (P(iotfleet.aziot.iothub_deployments#filter)'s output).
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
---
- name: The configurations to delete
  ansible.builtin.debug:
    msg: "{{ hub.configurations | iotfleet.aziot.iothub_stale_configurations(planned) }}"
"""

RETURN = r"""
---
_value:
  description: Their ids, sorted.
  type: list
  elements: str
"""

from ansible_collections.iotfleet.aziot.plugins.filter.iothub_deployments import MANAGED_BY, MANAGER


def iothub_stale_configurations(configurations: list, deployments: list) -> list[str]:
    declared = {deployment["id"] for deployment in deployments}
    return sorted(
        configuration["id"]
        for configuration in configurations
        if (configuration.get("labels") or {}).get(MANAGED_BY) == MANAGER and configuration["id"] not in declared
    )


class FilterModule:
    def filters(self) -> dict:
        return {"iothub_stale_configurations": iothub_stale_configurations}
