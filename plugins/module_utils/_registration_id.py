# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The DPS registration id rule, in one place.

Used on the device (dps_register: standard library only), on the controller (x509_device_cert's action plugin,
the DPS service modules) and by the `registration_id` test and `inventory_problems` filter plugins.

DPS: letters, digits and `- . _ :`, the last character a letter, a digit or `-`, at most 128 characters; at most 64
when the id is also an X.509 certificate subject CN (the CN attribute's upper bound, RFC 5280 ub-common-name).
"""

from __future__ import annotations

import re

MAX_LENGTH = 128
MAX_CN_LENGTH = 64
ALLOWED_PUNCTUATION = "-._:"
# fullmatch: `$` would also accept a trailing newline.
_RULE = re.compile(r"[A-Za-z0-9._:-]*[A-Za-z0-9-]")


def registration_id_problem(registration_id: object, certificate_cn: bool = False) -> str | None:
    """Why `registration_id` is not a valid DPS registration id (one line), or None when it is valid.

    `certificate_cn`: the id is also an X.509 certificate CN (X.509 attestation), which caps it at 64 characters.
    """
    if not isinstance(registration_id, str) or not registration_id:
        return "registration id is empty"
    limit = MAX_CN_LENGTH if certificate_cn else MAX_LENGTH
    if len(registration_id) > limit:
        where = " when it is an X.509 certificate CN" if certificate_cn else ""
        return (
            f"registration id '{registration_id}' is {len(registration_id)} characters long; "
            f"DPS allows at most {limit}{where}"
        )
    if _RULE.fullmatch(registration_id) is None:
        bad = sorted({c for c in registration_id if not (c.isascii() and (c.isalnum() or c in ALLOWED_PUNCTUATION))})
        if bad:
            shown = ", ".join(repr(c) for c in bad)
            return f"registration id '{registration_id}' contains {shown}; DPS allows only letters, digits and - . _ :"
        return f"registration id '{registration_id}' must end with a letter, a digit or '-'"
    return None


def registration_id_argument_spec() -> dict:
    """The `registration_id` option; documented once in the doc fragment iotfleet.aziot.registration_id."""
    return {"registration_id": {"type": "str", "required": True}}
