"""The one DPS registration id rule (plugins/module_utils/_registration_id.py)."""

from __future__ import annotations

import pytest

from ansible_collections.iotfleet.aziot.plugins.module_utils._registration_id import registration_id_problem


@pytest.mark.parametrize("registration_id", ["182-con", "a", "x-", "dev.01_x:y-", "A" * 64, "pi:42"])
def test_valid_everywhere(registration_id):
    assert registration_id_problem(registration_id) is None
    assert registration_id_problem(registration_id, certificate_cn=True) is None


def test_128_characters_unless_it_is_a_certificate_cn():
    assert registration_id_problem("a" * 128) is None
    assert registration_id_problem("a" * 129) == (
        f"registration id '{'a' * 129}' is 129 characters long; DPS allows at most 128"
    )
    assert registration_id_problem("a" * 65, certificate_cn=True) == (
        f"registration id '{'a' * 65}' is 65 characters long; DPS allows at most 64 when it is an X.509 certificate CN"
    )


@pytest.mark.parametrize(
    ("registration_id", "problem"),
    [
        ("", "registration id is empty"),
        (None, "registration id is empty"),
        ("182 con", "registration id '182 con' contains ' '; DPS allows only letters, digits and - . _ :"),
        ("a/b", "registration id 'a/b' contains '/'; DPS allows only letters, digits and - . _ :"),
        ("dév", "registration id 'dév' contains 'é'; DPS allows only letters, digits and - . _ :"),
        ("dev.", "registration id 'dev.' must end with a letter, a digit or '-'"),
        ("dev_", "registration id 'dev_' must end with a letter, a digit or '-'"),
        ("dev:", "registration id 'dev:' must end with a letter, a digit or '-'"),
        # `$` in a regular expression matches before a final newline: the rule must not
        ("pi-01\n", "registration id 'pi-01\n' contains '\\n'; DPS allows only letters, digits and - . _ :"),
    ],
)
def test_invalid(registration_id, problem):
    assert registration_id_problem(registration_id) == problem
    assert registration_id_problem(registration_id, certificate_cn=True) == problem
