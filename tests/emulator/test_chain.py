"""The chain walk on its own (no server): which enrollment group a presented chain reaches, and when it is refused.

Microsoft's rule: the presented chain must reach a CA verified by proof of possession; a group CA need not be
verified itself when a verified CA sits above it in that chain; the group of the CA nearest the leaf wins.
"""

from __future__ import annotations

import pytest
from dps_emulator.enrollments import Enrollment
from dps_emulator.pki import match_group

from tests.support.pki import issue


@pytest.fixture(scope="module")
def chain():
    root = issue("Chain Root", ca=True)
    intermediate = issue("Chain Intermediate", root, ca=True)
    return root.cert, intermediate.cert, issue("chain-dev", intermediate).cert


def group(name: str, ca) -> Enrollment:
    return Enrollment(attestation="x509", group_id=name, ca_certs=(ca,))


def test_nearest_ca_wins_whatever_the_order(chain):
    root, intermediate, leaf = chain
    verified = [root, intermediate]
    for groups in ([group("on-root", root), group("on-int", intermediate)], [group("on-int", intermediate)]):
        match = match_group(leaf, [leaf, intermediate], groups, verified)
        assert match.group is not None and match.group.group_id == "on-int"
    groups = [group("on-root", root), group("on-int", intermediate)][::-1]
    assert match_group(leaf, [leaf, intermediate], groups, verified).group.group_id == "on-int"


def test_root_group_needs_the_intermediate(chain):
    root, intermediate, leaf = chain
    assert match_group(leaf, [leaf, intermediate], [group("on-root", root)], [root]).group.group_id == "on-root"
    assert match_group(leaf, [intermediate, root], [group("on-root", root)], [root]).signing_cert == intermediate
    missing = match_group(leaf, [leaf], [group("on-root", root)], [root])
    assert missing.group is None
    assert "CA certificate not found" in missing.problem and "full chain" in missing.problem


def test_verified_group_on_intermediate_accepts_leaf_only(chain):
    _root, intermediate, leaf = chain
    match = match_group(leaf, [], [group("on-int", intermediate)], [intermediate])
    assert match.group.group_id == "on-int"
    assert match.signing_cert == intermediate


def test_unverified_intermediate_group_under_verified_root(chain):
    """The intermediate sits only in the group's signingCertificates; the root above it is verified."""
    root, intermediate, leaf = chain
    groups = [group("on-int", intermediate)]
    for presented in ([leaf, intermediate], [leaf, intermediate, root]):
        match = match_group(leaf, presented, groups, [root])
        assert match.group is not None and match.group.group_id == "on-int", match.problem
        assert match.signing_cert == intermediate
    leaf_only = match_group(leaf, [leaf], groups, [root])
    assert leaf_only.group is None
    assert "is not verified" in leaf_only.problem and "full chain" in leaf_only.problem


def test_nearest_group_wins_even_if_only_the_root_is_verified(chain):
    root, intermediate, leaf = chain
    match = match_group(leaf, [intermediate], [group("on-root", root), group("on-int", intermediate)], [root])
    assert match.group.group_id == "on-int"


def test_nothing_verified_is_refused(chain):
    root, intermediate, leaf = chain
    refused = match_group(leaf, [intermediate, root], [group("on-int", intermediate), group("on-root", root)], [])
    assert refused.group is None and "is not verified" in refused.problem
    # a verified CA that is not in the chain does not help
    other = issue("Other Root", ca=True).cert
    refused = match_group(leaf, [intermediate], [group("on-int", intermediate)], [other])
    assert refused.group is None and "is not verified" in refused.problem


def test_same_name_other_key_is_not_the_ca(chain):
    root, intermediate, leaf = chain
    impostor = issue("Chain Intermediate", ca=True).cert  # same subject, different key
    match = match_group(leaf, [], [group("impostor", impostor)], [impostor])
    assert match.group is None and "does not verify" in match.problem
    # ...and a real group still matches when the impostor is configured too
    groups = [group("impostor", impostor), group("on-root", root)]
    assert match_group(leaf, [intermediate], groups, [impostor, root]).group.group_id == "on-root"


def test_a_device_certificate_that_is_the_ca_itself_is_not_in_the_group(chain):
    root, _intermediate, _leaf = chain
    refused = match_group(root, [root], [group("on-root", root)], [root])
    assert refused.group is None
