# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The key types the PKI modules make (plugins/module_utils/_pki.py KEY_TYPES, key_type_argument_spec()).

A module gives its own description and default; the type and the choices come from here.
"""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  key_type:
    description:
      - Type of the key, an elliptic curve key on NIST P-256 or P-384, or an RSA key of 2048, 3072 or 4096 bits.
    type: str
    choices: [ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096]
"""
