# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: renew_summary
short_description: What a renewal run (playbooks/renew.yml) did so far, device by device
version_added: 0.1.0
author: iotfleet developers (@iotfleet)
description:
  - Sorts the play's devices into renewed (with each one's outcome), outside the renewal window, and failed or
    unreachable, from what each device recorded in C(renew_outcome) (set when its renewal ran through) and
    C(renew_reached) (set when its batch ran, also when it failed).
  - A device without an outcome counts as failed when its batch ran or when it left the play (unreachable, or
    failed in an earlier play); a device whose batch has not run yet is in no list.
  - playbooks/renew.yml writes the result to C(renew_summary_file) after every batch, and shows it with
    P(iotfleet.aziot.renew_report#filter).
options:
  _input:
    description: Every device of the play (C(ansible_play_hosts_all)).
    type: list
    elements: str
    required: true
  hostvars:
    description: C(hostvars).
    type: dict
    required: true
  play_hosts:
    description: The devices still in the play (C(ansible_play_hosts)).
    type: list
    elements: str
    required: true
  window_days:
    description: The renewal window given on the command line (C(renew_within_days)); none for each device's own.
    type: int
  check_mode:
    description: Whether the run is in check mode (C(ansible_check_mode)).
    type: bool
    default: false
"""

EXAMPLES = r"""
---
- name: Keep what the run renewed so far
  ansible.builtin.set_fact:
    renew_summary: >-
      {{ ansible_play_hosts_all | iotfleet.aziot.renew_summary(hostvars, ansible_play_hosts,
                                                               renew_within_days | default(none), ansible_check_mode) }}
"""

RETURN = r"""
---
_value:
  description: The run's summary.
  type: dict
  contains:
    window_days:
      description: O(window_days) as an integer, or none.
      type: int
    check_mode:
      description: O(check_mode).
      type: bool
    renewed:
      description: >-
        The outcome of each renewed device - registration_id, renewed, reasons, issuer, not_after, iot_edge,
        registration (the DPS status and hub after registering again).
      type: list
      elements: dict
    not_due:
      description: The registration ids of the devices outside the window.
      type: list
      elements: str
    failed:
      description: The inventory names of the devices that failed or could not be reached.
      type: list
      elements: str
"""

from ansible.module_utils.parsing.convert_bool import boolean


def _get(host_vars, name: str, default=None):
    try:
        return host_vars[name]
    except KeyError:
        return default


def renew_summary(hosts: list, hostvars, play_hosts: list, window_days=None, check_mode: bool = False) -> dict:
    summary: dict = {
        "window_days": None if window_days in (None, "") else int(window_days),
        "check_mode": boolean(check_mode, strict=False),
        "renewed": [],
        "not_due": [],
        "failed": [],
    }
    for host in hosts:
        host_vars = hostvars[host]
        outcome = _get(host_vars, "renew_outcome")
        if outcome is None:
            if boolean(_get(host_vars, "renew_reached", False), strict=False) or host not in play_hosts:
                summary["failed"].append(host)
        elif boolean(outcome["renewed"], strict=False):
            summary["renewed"].append(dict(outcome))
        else:
            summary["not_due"].append(outcome["registration_id"])
    return summary


class FilterModule:
    def filters(self) -> dict:
        return {"renew_summary": renew_summary}
