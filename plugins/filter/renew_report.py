# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: renew_report
short_description: The lines playbooks/renew.yml shows at the end of a renewal run
version_added: 0.1.0
author: iotfleet developers (@iotfleet)
description:
  - Turns the summary of P(iotfleet.aziot.renew_summary#filter) into lines for an operator - how many devices were
    renewed (or would be, in check mode) and in which window, one line per renewed device (issuer, expiry, IoT Edge
    reprovisioning, the DPS registration, why it was renewed), the devices outside the window, and those that failed
    or could not be reached.
options:
  _input:
    description: The summary from P(iotfleet.aziot.renew_summary#filter).
    type: dict
    required: true
"""

EXAMPLES = r"""
---
- name: Show what the run renewed
  ansible.builtin.debug:
    msg: "{{ hostvars['localhost'].renew_summary | iotfleet.aziot.renew_report }}"
"""

RETURN = r"""
---
_value:
  description: The report, one line per item, the count first.
  type: list
  elements: str
"""

from ansible.module_utils.parsing.convert_bool import boolean


def renew_report(summary: dict) -> list[str]:
    check_mode = boolean(summary["check_mode"], strict=False)
    verb = "would renew" if check_mode else "renewed"
    renewed, not_due, failed = summary["renewed"], summary["not_due"], summary["failed"]
    window = summary["window_days"]
    window_text = (
        f"window: {window} days" if window is not None else "window: each device's device_identity_renew_before"
    )
    lines = [f"{verb} {len(renewed)} of {len(renewed) + len(not_due) + len(failed)} devices ({window_text})"]
    for outcome in renewed:
        line = f"{outcome['registration_id']}: {verb}, issued by {outcome['issuer']}, not after "
        line += outcome["not_after"] or "(when issued)"
        if boolean(outcome["iot_edge"], strict=False) and not check_mode:
            line += ", IoT Edge reprovisioned"
        if outcome["registration"]:
            line += f", DPS: {outcome['registration']}"
        lines.append(f"{line} - {'; '.join(outcome['reasons'])}")
    if not_due:
        lines.append(f"outside the window: {', '.join(not_due)}")
    if failed:
        lines.append(f"failed or unreachable: {', '.join(failed)}")
    return lines


class FilterModule:
    def filters(self) -> dict:
        return {"renew_report": renew_report}
