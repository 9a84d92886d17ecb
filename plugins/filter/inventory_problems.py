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
    C(dps_registration_attestation) are known values; with symmetric-key attestation,
    C(dps_registration_group_key) or C(dps_registration_symmetric_key) is set; no two hosts share a registration id
    (compared ignoring case, as DPS does)."
  - "Every input of the device roles a host sets (its inventory, group and extra variables) is also checked against
    the role's argument specification (C(meta/argument_specs.yml) of C(iotfleet.aziot.device_identity) and
    C(iotfleet.aziot.dps_registration), entry point C(main)): types, choices, list elements. C(provision.yml) imports
    these roles with C(rolespec_validate=false), so that a device does not pay for two validation tasks on every run;
    this check, once for the whole inventory, takes their place. What a host leaves unset is the role default, valid
    by construction."
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

import functools
import json
from pathlib import Path

import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from jinja2 import Undefined

from ansible_collections.iotfleet.aziot.plugins.module_utils._registration_id import registration_id_problem

# The roles' defaults for what a host leaves unset.
DEFAULT_ATTESTATION = "x509"

# The device roles whose inputs are checked here, once, instead of by a validation task per device (provision.yml
# imports them with rolespec_validate: false).
VALIDATED_ROLES = (("device_identity", "main"), ("dps_registration", "main"))
ROLES_DIR = Path(__file__).resolve().parents[2] / "roles"
# What ArgumentSpecValidator does not take (documentation), or must not apply here: a default would stand for a value
# the host did not set, and only what a host sets is checked.
SPEC_KEYS_LEFT_OUT = ("description", "default", "required", "version_added")


@functools.lru_cache(maxsize=None)
def role_validator(role: str, entry_point: str) -> tuple[ArgumentSpecValidator, tuple[str, ...]]:
    """The validator of a role entry point's options (its meta/argument_specs.yml), and their names."""
    specs = yaml.safe_load((ROLES_DIR / role / "meta" / "argument_specs.yml").read_text(encoding="utf-8"))
    options = specs["argument_specs"][entry_point]["options"]
    spec = {
        name: {key: value for key, value in option.items() if key not in SPEC_KEYS_LEFT_OUT}
        for name, option in options.items()
    }
    return ArgumentSpecValidator(spec), tuple(options)


def _role_input_problems(host: str, host_vars) -> list[str]:
    """The argument-spec errors of the device roles' inputs the host sets, one line each, naming the host."""
    problems = []
    for role, entry_point in VALIDATED_ROLES:
        validator, names = role_validator(role, entry_point)
        unset = object()
        provided = {name: value for name in names if (value := _get(host_vars, name, unset)) is not unset}
        if not provided:
            continue
        result = validator.validate(provided)
        problems.extend(f"{host}: {message} (role {role})" for message in result.error_messages)
    return problems


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
    if attestation == "symmetric_key" and not any(
        str(_get(host_vars, name, "") or "").strip()
        for name in ("dps_registration_group_key", "dps_registration_symmetric_key")
    ):
        problems.append(
            f"{host}: dps_registration_attestation is symmetric_key and neither dps_registration_group_key (the "
            "enrollment group's key) nor dps_registration_symmetric_key (the device's own) is set"
        )
    # Types and choices (the key type, the attestation ...): the roles' argument specs, the one definition of them.
    return problems + _role_input_problems(host, host_vars)


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
