# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: enrollment_groups
short_description: The DPS enrollment groups an inventory describes, one per C(dps_enrollment_group)
version_added: 0.1.0
author: iotfleet developers (@iotfleet)
description:
  - Groups the given hosts by their C(dps_enrollment_group) variable and returns, for each DPS enrollment group,
    what the role C(iotfleet.aziot.dps_enrollment) needs to ensure it - its signing certificate (the CA that signs
    its devices, C(device_identity_ca_cert_path)), the twin tags its C(initialTwin) gives them (the hosts' values of
    O(tag_vars)), whether its devices run IoT Edge (C(provision_aziot_edge)), and the group settings read from
    the hosts (C(dps_enrollment_iot_hubs), C(dps_enrollment_allocation_policy),
    C(dps_enrollment_desired_properties), C(dps_enrollment_provisioning_status)).
  - Everything that shapes an enrollment group must be the same on all of its devices (set it in the inventory
    group's C(group_vars)); two enrollment groups must not share a signing certificate, since DPS tells their
    devices apart by the CA that signed them. Either mistake fails with one line naming the group, the variable and
    two hosts that disagree.
extends_documentation_fragment:
  - iotfleet.aziot.inventory.hostvars
  - iotfleet.aziot.inventory.default_group
options:
  _input:
    description: The inventory names of the devices (for example C(ansible_play_hosts_all)).
    type: list
    elements: str
    required: true
  tag_vars:
    description: The variables copied into C(initialTwin.tags) when a host defines them.
    type: list
    elements: str
    default: [site, environment, ring]
"""

EXAMPLES = r"""
---
- name: The enrollment groups of the play's devices
  ansible.builtin.debug:
    msg: "{{ ansible_play_hosts_all | iotfleet.aziot.enrollment_groups(hostvars, ['site', 'ring']) }}"
"""

RETURN = r"""
---
_value:
  description: One entry per enrollment group, sorted by name.
  type: list
  elements: dict
  contains:
    name:
      description: The enrollment group id.
      type: str
    hosts:
      description: Its devices (inventory names).
      type: list
      elements: str
    signing_certificate:
      description: Controller path of the CA certificate that signs its devices.
      type: str
    tags:
      description: The twin tags of its C(initialTwin).
      type: dict
    iot_edge:
      description: Whether its devices run IoT Edge.
      type: bool
    iot_hubs:
      description: C(dps_enrollment_iot_hubs) of its devices (empty - every linked hub).
      type: list
    allocation_policy:
      description: C(dps_enrollment_allocation_policy) of its devices.
      type: str
    desired_properties:
      description: C(dps_enrollment_desired_properties) of its devices.
      type: dict
    provisioning_status:
      description: C(dps_enrollment_provisioning_status) of its devices.
      type: str
"""

from ansible.errors import AnsibleFilterError

# Group setting -> (host variable, default when the host does not set it).
_SETTINGS = {
    "signing_certificate": ("device_identity_ca_cert_path", None),
    "iot_edge": ("provision_aziot_edge", False),
    "iot_hubs": ("dps_enrollment_iot_hubs", []),
    "allocation_policy": ("dps_enrollment_allocation_policy", "hashed"),
    "desired_properties": ("dps_enrollment_desired_properties", {}),
    "provisioning_status": ("dps_enrollment_provisioning_status", "enabled"),
}
_MISSING = object()


def _value(host_vars, name: str, default=_MISSING):
    try:
        return host_vars[name]
    except KeyError:
        return default


def _normalise(setting: str, value):
    if setting == "iot_edge":
        return str(value).lower() in ("true", "yes", "1", "on")
    if setting == "iot_hubs":
        return sorted(value)
    return value


def enrollment_groups(hosts: list, hostvars, tag_vars: list | None = None, default_group: str = "fleet") -> list[dict]:
    tag_vars = ["site", "environment", "ring"] if tag_vars is None else list(tag_vars)
    groups: dict[str, dict] = {}
    first_host: dict[str, dict[str, str]] = {}  # group -> setting -> the host the value was first seen on
    for host in hosts:
        host_vars = hostvars[host]
        name = str(_value(host_vars, "dps_enrollment_group", default_group))
        seen = {}
        for setting, (variable, default) in _SETTINGS.items():
            value = _value(host_vars, variable, default)
            if value is None:
                raise AnsibleFilterError(
                    f"{host}: {variable} is not set; the enrollment group {name!r} takes its signing certificate "
                    "from it (the CA that signs its devices)"
                )
            seen[setting] = _normalise(setting, value)
        seen["tags"] = {tag: _value(host_vars, tag) for tag in tag_vars if _value(host_vars, tag) is not _MISSING}
        group = groups.get(name)
        if group is None:
            groups[name] = dict(seen, name=name, hosts=[host])
            first_host[name] = host
            continue
        for setting, value in seen.items():
            if group[setting] != value:
                variable = _SETTINGS[setting][0] if setting in _SETTINGS else f"the tags ({', '.join(tag_vars)})"
                raise AnsibleFilterError(
                    f"enrollment group {name!r}: {first_host[name]} and {host} disagree on {variable} "
                    f"({group[setting]!r} / {value!r}); every device of a DPS enrollment group gets the same "
                    "settings - set it in the group_vars of their inventory group"
                )
        group["hosts"].append(host)
    by_certificate: dict[str, str] = {}
    for name in sorted(groups):
        certificate = str(groups[name]["signing_certificate"])
        if certificate in by_certificate:
            raise AnsibleFilterError(
                f"enrollment groups {by_certificate[certificate]!r} and {name!r} share the signing certificate "
                f"{certificate}; DPS tells the devices of enrollment groups apart by the CA that signed them - give "
                "each group its own intermediate CA (pki_intermediates)"
            )
        by_certificate[certificate] = name
    return [groups[name] for name in sorted(groups)]


class FilterModule:
    def filters(self) -> dict:
        return {"enrollment_groups": enrollment_groups}
