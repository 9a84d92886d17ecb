# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The python cryptography requirement, in one wording (checked by _pki.require_cryptography)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options: {}
requirements:
  - cryptography >= 38 on the host that runs the module (Debian and Raspberry Pi OS package C(python3-cryptography))
"""
