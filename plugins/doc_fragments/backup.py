# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup option (plugins/module_utils/_files.py backup_argument_spec())."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  backup:
    description:
      - Keep a timestamped copy of a file before it is replaced, next to it (C(<file>.<pid>.<date>@<time>~)); its
        name is returned.
    type: bool
    default: false
"""
