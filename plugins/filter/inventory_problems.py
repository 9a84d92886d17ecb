# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: inventory_problems
short_description: Every mistake in a fleet's inventory that would stop provisioning, found before it starts
version_added: 0.1.0
author: iotfleet developers (@iotfleet)
description:
  - Reads the given hosts' variables and returns one line per problem, naming the host and the variable, for
    C(playbooks/tasks/validate_inventory.yml) to report all at once before any device is touched.
  - "Checks, with the roles' defaults for what a host leaves unset: C(dps_registration_id_scope) is set;
    C(device_identity_registration_id) (default: the inventory name) is a valid DPS registration id and an X.509
    certificate CN (the rule of the P(iotfleet.aziot.registration_id#test) test, at most 64 characters); with X.509
    attestation, C(dps_registration_registration_id) equals it; C(device_identity_key_type) and
    C(dps_registration_attestation) are known values; no two hosts share a registration id (compared ignoring
    case, as DPS does)."
extends_documentation_fragment:
  - iotfleet.aziot.inventory.hostvars
options:
  _input:
    description: The inventory names of the devices (for example C(groups['pis'])).
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
---
- name: Validate the inventory
  ansible.builtin.assert:
    that: problems | length == 0
    fail_msg: "inventory problems - {{ problems | join(' | ') }}"
  vars:
    problems: "{{ groups['pis'] | iotfleet.aziot.inventory_problems(hostvars) }}"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
---
_value:
  description: One line per problem, each starting with the host (or hosts) it is about; empty when there is none.
  type: list
  elements: str
  sample: ['pi-07: device_identity_registration_id "pi 07" is not a valid DPS registration id (1 to 64 letters,
    digits, - . _ :, ending with a letter, a digit or -; no spaces)']
"""

import json

from jinja2 import Undefined

from ansible_collections.iotfleet.aziot.plugins.module_utils._pki import DEFAULT_DEVICE_KEY_TYPE, KEY_TYPES
from ansible_collections.iotfleet.aziot.plugins.module_utils._registration_id import registration_id_problem

# dps_register's attestation choices, and the roles' defaults for what a host leaves unset.
ATTESTATIONS = ("x509", "symmetric_key")
DEFAULT_ATTESTATION = "x509"


def _get(host_vars, name: str, default):
    """The host's value of `name`, templated; `default` when it is unset or refers to an undefined variable (what
    Jinja's default() gives, e.g. for '{{ device_identity_registration_id }}' left to the role default)."""
    try:
        value = host_vars[name]
    except KeyError:
        return default
    return default if isinstance(value, Undefined) else value


def _host_problems(host: str, host_vars, registration_id: str) -> list[str]:
    problems = []
    if not str(_get(host_vars, "dps_registration_id_scope", "") or "").strip():
        problems.append(
            f"{host}: dps_registration_id_scope is missing or empty (the DPS ID scope, DPS > Overview > ID Scope)"
        )
    attestation = _get(host_vars, "dps_registration_attestation", DEFAULT_ATTESTATION)
    dps_registration_id = str(_get(host_vars, "dps_registration_registration_id", host))
    if registration_id_problem(registration_id, certificate_cn=True):
        problems.append(
            f"{host}: device_identity_registration_id {json.dumps(registration_id)} is not a valid DPS registration "
            "id (1 to 64 letters, digits, - . _ :, ending with a letter, a digit or -; no spaces)"
        )
    elif attestation == "x509" and dps_registration_id != registration_id:
        problems.append(
            f"{host}: dps_registration_registration_id {json.dumps(dps_registration_id)} differs from "
            f"device_identity_registration_id {json.dumps(registration_id)} (X.509: the registration id is the "
            "certificate CN)"
        )
    key_type = _get(host_vars, "device_identity_key_type", DEFAULT_DEVICE_KEY_TYPE)
    if key_type not in KEY_TYPES:
        problems.append(f"{host}: device_identity_key_type {json.dumps(key_type)} is not one of {', '.join(KEY_TYPES)}")
    if attestation not in ATTESTATIONS:
        problems.append(
            f"{host}: dps_registration_attestation {json.dumps(attestation)} is not one of {', '.join(ATTESTATIONS)}"
        )
    return problems


def inventory_problems(hosts: list, hostvars) -> list[str]:
    problems = []
    # DPS compares registration ids case-insensitively: Pi-01 and pi-01 are one device to it.
    owners: dict[str, list[tuple[str, str]]] = {}  # lower-cased registration id -> (host, id)
    for host in hosts:
        host_vars = hostvars[host]
        registration_id = str(_get(host_vars, "device_identity_registration_id", host))
        problems.extend(_host_problems(host, host_vars, registration_id))
        owners.setdefault(registration_id.lower(), []).append((host, registration_id))
    for owners_of_id in owners.values():
        if len(owners_of_id) > 1:
            owning = sorted(owners_of_id)  # by host name: the same line whatever the inventory's order
            spellings = " / ".join(json.dumps(spelling) for spelling in dict.fromkeys(rid for host, rid in owning))
            problems.append(
                f"hosts {', '.join(host for host, rid in owning)}: registration id {spellings} is used more than "
                "once (device_identity_registration_id must be unique; DPS ignores case)"
            )
    return problems


class FilterModule:
    def filters(self) -> dict:
        return {"inventory_problems": inventory_problems}
