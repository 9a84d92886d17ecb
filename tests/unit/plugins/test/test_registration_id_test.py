"""The `registration_id` test plugin: the one rule (_registration_id.py), as Jinja sees it."""

from __future__ import annotations

import pytest

from ansible_collections.iotfleet.aziot.plugins.test import registration_id as plugin

registration_id = plugin.TestModule().tests()["registration_id"]


@pytest.mark.parametrize(
    ("value", "certificate_cn", "valid"),
    [
        ("pi-0042", False, True),
        ("line-3.press:07", True, True),
        ("s" * 128, False, True),
        ("s" * 65, True, False),
        ("s" * 129, False, False),
        ("line 3 press", False, False),
        ("pi.", False, False),
        ("pi-01\n", False, False),
        (None, False, False),
        (42, False, False),
    ],
)
def test_registration_id(value, certificate_cn: bool, valid: bool) -> None:
    assert registration_id(value, certificate_cn=certificate_cn) is valid
