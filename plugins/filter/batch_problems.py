# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: batch_problems
short_description: What is wrong with a rollout's batch sizes and failure threshold, one line each
version_added: 0.3.0
author: iotfleet developers (@iotfleet)
description:
  - Checks the two extra-vars of a playbook that works in batches (renew.yml, ca_rollover.yml) - the batch sizes given
    to Ansible's C(serial) and the percentage given to C(max_fail_percentage) - before any device is touched, and
    returns one line per problem, naming the variable, its value and what it must be. An empty list when both are
    fine or not given.
  - C(ansible.builtin.validate_argument_spec) checks their types; this adds what a spec cannot say. Batch sizes are
    read as Ansible reads C(serial) - a number, a percentage such as C('20%'), a list of them, or a comma-separated
    string (C(-e renew_serial=1,20%)).
options:
  _input:
    description: The batch sizes (C(serial)); V(none) when not given.
    type: raw
    required: true
  serial_name:
    description: The extra-var that holds the batch sizes (named in the line).
    type: str
    required: true
  max_fail_percentage:
    description: The failure threshold in percent; V(none) when not given.
    type: raw
  max_fail_name:
    description: The extra-var that holds the failure threshold (named in the line).
    type: str
    default: max_fail_percentage
"""

EXAMPLES = r"""
---
- name: Check the batches asked for
  ansible.builtin.assert:
    that: problems | length == 0
    fail_msg: "{{ problems | join('; ') }}"
  vars:
    problems: >-
      {{ renew_serial | default(none) | iotfleet.aziot.batch_problems('renew_serial',
           renew_max_fail_percentage | default(none), 'renew_max_fail_percentage') }}
"""

RETURN = r"""
---
_value:
  description: One line per problem; empty when there is none.
  type: list
  elements: str
  sample:
    - "renew_serial=1,soon: renew_serial must be batch sizes, as device counts or percentages: 25, '10%' or [1, '20%']"
"""

import re

_BATCH = re.compile(r"^[0-9]+%?$")


def _batches(serial) -> list[str]:
    """The batch sizes as Ansible reads `serial`: a list, or a comma-separated string, or one number."""
    if isinstance(serial, str):
        serial = serial.split(",")
    elif not isinstance(serial, (list, tuple)):
        serial = [serial]
    return [str(size).strip() for size in serial]


def batch_problems(
    serial, serial_name: str, max_fail_percentage=None, max_fail_name: str = "max_fail_percentage"
) -> list[str]:
    problems = []
    if serial is not None:
        batches = _batches(serial)
        if not batches or not all(_BATCH.match(size) for size in batches):
            problems.append(
                f"{serial_name}={','.join(batches)}: {serial_name} must be batch sizes, as device counts or "
                "percentages: 25, '10%' or [1, '20%']"
            )
    if max_fail_percentage is not None:
        try:
            valid = 0 <= int(str(max_fail_percentage).strip()) <= 100
        except ValueError:
            valid = False
        if not valid:
            problems.append(
                f"{max_fail_name}={max_fail_percentage}: {max_fail_name} must be a percentage from 0 to 100"
            )
    return problems


class FilterModule:
    def filters(self) -> dict:
        return {"batch_problems": batch_problems}
