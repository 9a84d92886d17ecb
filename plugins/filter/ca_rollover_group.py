# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: ca_rollover_group
short_description: The devices of one DPS enrollment group and the new and old CA the inventory gives them
version_added: 0.1.0
author: iotfleet developers (@iotfleet)
description:
  - For C(playbooks/ca_rollover.yml). Returns the hosts of O(_input) whose C(dps_enrollment_group) is O(group)
    (O(default_group) when unset), the new CA - the one that issues their certificates from now on,
    C(device_identity_ca_cert_path) and C(device_identity_ca_key_path) - and the old CA, still accepted while they
    move, C(dps_enrollment_secondary_certificate).
  - A rollover moves the whole group, so every device of it must agree on these three variables; otherwise
    RV(_value.problem) is one line naming two hosts that disagree and the variable.
  - The companion filter C(iotfleet.aziot.ca_rollover_plan) compares them with the group DPS has.
extends_documentation_fragment:
  - iotfleet.aziot.inventory.hostvars
  - iotfleet.aziot.inventory.default_group
options:
  _input:
    description: The inventory names of the fleet's devices, whatever C(--limit) says (for example C(groups['pis'])).
    type: list
    elements: str
    required: true
  group:
    description: The enrollment group id to move.
    type: str
    required: true
"""

EXAMPLES = r"""
---
- name: The devices of enrollment group plant-3 and their CAs
  ansible.builtin.debug:
    msg: "{{ groups['pis'] | iotfleet.aziot.ca_rollover_group(hostvars, 'plant-3') }}"
"""

RETURN = r"""
---
_value:
  description: The group's devices and CAs.
  type: dict
  contains:
    members:
      description: Its devices (inventory names, in inventory order).
      type: list
      elements: str
    new_ca:
      description: C(device_identity_ca_cert_path) of its devices.
      type: str
    new_ca_key:
      description: C(device_identity_ca_key_path) of its devices.
      type: str
    old_ca:
      description: C(dps_enrollment_secondary_certificate) of its devices (empty when unset).
      type: str
    lab_ca:
      description:
        - When the new CA is a lab intermediate C(<pki_dir>/NAME-ca.cert.pem) (the devices' C(pki_dir)), its C(name)
          and C(pki_dir), so that the playbook can make it; empty otherwise.
      type: dict
    problem:
      description: Why the rollover cannot start (one line), or empty.
      type: str
"""

import os
import re

# The variables a rollover reads from every device of the group: they must agree.
ROLLOVER_VARS = ("device_identity_ca_cert_path", "device_identity_ca_key_path", "dps_enrollment_secondary_certificate")
_LAB_CA_FILE = re.compile(r"^(?P<name>.+)-ca\.cert\.pem$")
_MISSING = object()


def _value(host_vars, name: str, default=_MISSING):
    try:
        return host_vars[name]
    except KeyError:
        return default


def _text(value) -> str:
    return "" if value is _MISSING or value is None else str(value)


def _lab_ca(new_ca: str, pki_dir) -> dict:
    """{name, pki_dir} when the new CA is pki_dir/NAME-ca.cert.pem (a lab intermediate x509_ca can make)."""
    match = _LAB_CA_FILE.match(os.path.basename(new_ca))
    if not match or pki_dir is _MISSING or not pki_dir:
        return {}
    if os.path.normpath(os.path.dirname(new_ca)) != os.path.normpath(str(pki_dir)):
        return {}
    return {"name": match.group("name"), "pki_dir": str(pki_dir)}


def ca_rollover_group(hosts: list, hostvars, group: str, default_group: str = "fleet") -> dict:
    members = [host for host in hosts if _text(_value(hostvars[host], "dps_enrollment_group", default_group)) == group]
    result = {"members": members, "new_ca": "", "new_ca_key": "", "old_ca": "", "lab_ca": {}, "problem": ""}
    if not members:
        result["problem"] = (
            f"ca_rollover.yml: no device of the inventory is in enrollment group {group} (dps_enrollment_group); "
            "give ca_rollover_group the enrollment group of the devices to move"
        )
        return result
    first = hostvars[members[0]]
    values = {name: _value(first, name) for name in ROLLOVER_VARS}
    for host in members[1:]:
        for name in ROLLOVER_VARS:
            theirs = _value(hostvars[host], name)
            if _text(theirs) != _text(values[name]):
                result["problem"] = (
                    f"enrollment group {group}: {members[0]} and {host} disagree on {name} "
                    f"({_text(values[name]) or 'unset'} / {_text(theirs) or 'unset'}); a rollover moves the whole "
                    "group: set it in the group_vars of their inventory group"
                )
                return result
    result.update(
        new_ca=_text(values["device_identity_ca_cert_path"]),
        new_ca_key=_text(values["device_identity_ca_key_path"]),
        old_ca=_text(values["dps_enrollment_secondary_certificate"]),
    )
    if not result["new_ca"]:
        result["problem"] = (
            f"enrollment group {group}: {members[0]}: device_identity_ca_cert_path is not set; it names the CA that "
            "issues the group's certificates (the new CA of the rollover)"
        )
        return result
    result["lab_ca"] = _lab_ca(result["new_ca"], _value(first, "pki_dir"))
    return result


class FilterModule:
    def filters(self) -> dict:
        return {"ca_rollover_group": ca_rollover_group}
