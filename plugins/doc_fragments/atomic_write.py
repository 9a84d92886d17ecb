# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How the modules that write files write them (plugins/module_utils/_files.py write_file_atomic)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options: {}
attributes:
  safe_file_operations:
    description: Uses Ansible's strict file operation functions to ensure proper permissions and avoid data corruption.
    support: full
    details: Writes through a temporary file in the same directory that gets its owner, group and mode before it is
      renamed into place, so a file is never half-written nor, not even for a moment, readable by others.
  vault:
    description: Can automatically decrypt Ansible vaulted files.
    support: none
"""
