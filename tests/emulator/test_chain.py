"""The chain walk on its own (no server): which enrollment group a presented chain reaches."""

from __future__ import annotations

import pytest
from dps_emulator.config import Enrollment
from dps_emulator.pki import match_group

from .helpers import make_cert


@pytest.fixture(scope="module")
def chain():
    root, root_key = make_cert("Chain Root", None, None, ca=True)
    intermediate, intermediate_key = make_cert("Chain Intermediate", root, root_key, ca=True)
    leaf, _ = make_cert("chain-dev", intermediate, intermediate_key, ca=False)
    return root, intermediate, leaf


def group(name: str, ca, verified: bool = True) -> Enrollment:
    return Enrollment(attestation="x509", group_id=name, ca_cert=ca, verified=verified)


def test_nearest_ca_wins_whatever_the_order(chain):
    root, intermediate, leaf = chain
    for groups in ([group("on-root", root), group("on-int", intermediate)], [group("on-int", intermediate)]):
        match = match_group(leaf, [leaf, intermediate], groups)
        assert match.group is not None and match.group.group_id == "on-int"
    match = match_group(leaf, [leaf, intermediate], [group("on-root", root), group("on-int", intermediate)][::-1])
    assert match.group.group_id == "on-int"


def test_root_group_needs_the_intermediate(chain):
    root, intermediate, leaf = chain
    assert match_group(leaf, [leaf, intermediate], [group("on-root", root)]).group.group_id == "on-root"
    assert match_group(leaf, [intermediate, root], [group("on-root", root)]).signing_cert == intermediate
    missing = match_group(leaf, [leaf], [group("on-root", root)])
    assert missing.group is None
    assert "CA certificate not found" in missing.problem


def test_group_on_intermediate_accepts_leaf_only(chain):
    _root, intermediate, leaf = chain
    match = match_group(leaf, [], [group("on-int", intermediate)])
    assert match.group.group_id == "on-int"
    assert match.signing_cert == intermediate


def test_unverified_nearest_falls_back_to_verified_root(chain):
    root, intermediate, leaf = chain
    match = match_group(leaf, [intermediate], [group("on-int", intermediate, verified=False), group("on-root", root)])
    assert match.group.group_id == "on-root"
    only_unverified = match_group(leaf, [intermediate], [group("on-int", intermediate, verified=False)])
    assert only_unverified.group is None and "not verified" in only_unverified.problem


def test_same_name_other_key_is_not_the_ca(chain):
    root, intermediate, leaf = chain
    impostor, _ = make_cert("Chain Intermediate", None, None, ca=True)  # same subject, different key
    match = match_group(leaf, [], [group("impostor", impostor)])
    assert match.group is None and "does not verify" in match.problem
    # ...and a real group still matches when the impostor is configured too
    assert match_group(leaf, [intermediate], [group("impostor", impostor), group("on-root", root)]).group is not None
