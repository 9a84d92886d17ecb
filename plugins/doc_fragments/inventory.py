# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options of the filters that read the fleet from the inventory (enrollment_groups, ca_rollover_group,
inventory_problems)."""

from __future__ import annotations


class ModuleDocFragment:
    HOSTVARS = r"""
options:
  hostvars:
    description: C(hostvars).
    type: raw
    required: true
"""

    DEFAULT_GROUP = r"""
options:
  default_group:
    description: The enrollment group of hosts without C(dps_enrollment_group).
    type: str
    default: fleet
"""
