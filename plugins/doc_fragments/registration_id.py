# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The registration_id option and its rule (plugins/module_utils/_registration_id.py)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  registration_id:
    description:
      - The DPS registration id of the device. With X.509 attestation it is the subject CN of the device
        certificate.
      - Letters, digits and V(-), V(.), V(_), V(:); the last character a letter, a digit or V(-). At most 128
        characters, and at most 64 when it is an X.509 certificate CN. It is checked before anything is done.
    type: str
    required: true
"""
