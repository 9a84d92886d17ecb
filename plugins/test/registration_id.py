# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: registration_id
short_description: Whether a value is a valid DPS registration id
version_added: 0.1.0
author: iotfleet developers (@iotfleet)
description:
  - True when the value is a registration id DPS accepts - letters, digits and C(- . _ :), the last character a
    letter, a digit or C(-), at most 128 characters, and at most 64 with O(certificate_cn=true) (the id is also the
    subject CN of an X.509 device certificate).
  - The same rule the collection's modules and the inventory check apply (C(plugins/module_utils/_registration_id.py)).
options:
  _input:
    description: The value to test.
    type: raw
    required: true
  certificate_cn:
    description: The id is also an X.509 certificate CN (X.509 attestation).
    type: bool
    default: false
"""

EXAMPLES = r"""
---
- name: Refuse a registration id DPS would refuse
  ansible.builtin.assert:
    that: device_identity_registration_id is iotfleet.aziot.registration_id(certificate_cn=true)
    fail_msg: "{{ inventory_hostname }}: {{ device_identity_registration_id }} is not a valid DPS registration id"
"""

RETURN = r"""
---
_value:
  description: Whether the value is a valid registration id.
  type: bool
"""

from ansible_collections.iotfleet.aziot.plugins.module_utils._registration_id import registration_id_problem


def registration_id(value, certificate_cn: bool = False) -> bool:
    return registration_id_problem(value, certificate_cn=bool(certificate_cn)) is None


class TestModule:
    def tests(self) -> dict:
        return {"registration_id": registration_id}
