"""Which steps of a CA rollover have work, from the enrollment group as DPS has it (filter
iotfleet.aziot.ca_rollover_plan, playbooks/ca_rollover.yml)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.iotfleet.aziot.plugins.filter.ca_rollover_plan import FilterModule, ca_rollover_plan
from tests.support.pki import Issued, Pki

GROUP = "plant-3"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    made = Pki(tmp_path_factory.mktemp("rollover"))
    made.old = made.ca("iotfleet Intermediate CA plant-3", made.root, "plant-3-ca.cert.pem")
    made.new = made.ca("iotfleet Intermediate CA plant-3-2027", made.root, "plant-3-2027-ca.cert.pem")
    made.third = made.ca("iotfleet Intermediate CA plant-3-2024", made.root, "plant-3-2024-ca.cert.pem")
    return made


def path(pki: Pki, name: str) -> str:
    return str(pki.directory / f"{name}-ca.cert.pem")


def entry(issued: Issued | None, form: str = "pem") -> dict | None:
    """A signing certificate as DPS returns it: the PEM with its info, or the info alone (thumbprints)."""
    if issued is None:
        return None
    info = {"subjectName": issued.cert.subject.rfc4514_string(), "sha1Thumbprint": issued.sha1}
    if form == "sha1":
        return {"info": info}
    info["sha256Thumbprint"] = issued.sha256
    return {"info": info} if form == "info" else {"certificate": issued.pem_text, "info": info}


def group(primary: Issued | None, secondary: Issued | None = None, form: str = "pem") -> list[dict]:
    signing = {slot: entry(issued, form) for slot, issued in (("primary", primary), ("secondary", secondary))}
    return [
        {
            "enrollmentGroupId": GROUP,
            "attestation": {"type": "x509", "x509": {"signingCertificates": {k: v for k, v in signing.items() if v}}},
            "etag": '"1"',
        }
    ]


def plan(records: list, pki: Pki, old: bool = True, step: str = "all") -> dict:
    return ca_rollover_plan(records, GROUP, path(pki, "plant-3-2027"), path(pki, "plant-3") if old else "", step)


def steps(result: dict) -> set[str]:
    assert result["problem"] == "", result
    return {name for name in ("secondary", "reissue", "promote", "drop") if result[name]}


# --- the steps with work ----------------------------------------------------------------------------------------


def test_a_group_on_the_old_ca_gets_every_step_but_the_drop(pki: Pki) -> None:
    result = plan(group(pki.old), pki)
    assert steps(result) == {"secondary", "reissue", "promote"}
    assert result["summary"].startswith(
        "enrollment group plant-3: signed by plant-3-2027-ca.cert.pem (and plant-3-ca.cert.pem, still accepted); "
        "when every device holds a certificate of the new CA, remove dps_enrollment_secondary_certificate"
    )


@pytest.mark.parametrize(("step", "expected"), [("secondary", {"secondary"}), ("promote", {"promote"})])
def test_one_step_of_a_group_on_the_old_ca(pki: Pki, step: str, expected: set[str]) -> None:
    assert steps(plan(group(pki.old), pki, step=step)) == expected


def test_the_secondary_step_says_where_the_group_stands(pki: Pki) -> None:
    summary = plan(group(pki.old), pki, step="secondary")["summary"]
    assert summary == (
        "enrollment group plant-3: signed by plant-3-ca.cert.pem (and plant-3-2027-ca.cert.pem, still accepted); "
        "run ca_rollover.yml (ca_rollover_step=all) to finish the rollover"
    )


@pytest.mark.parametrize("form", ["pem", "info", "sha1"])
def test_a_group_with_the_new_ca_as_secondary_is_promoted_compared_by_certificate(pki: Pki, form: str) -> None:
    assert steps(plan(group(pki.old, pki.new, form), pki)) == {"reissue", "promote"}
    assert steps(plan(group(pki.old, pki.new, form), pki, step="reissue")) == {"reissue"}


def test_a_promoted_group_only_checks_its_devices(pki: Pki) -> None:
    assert steps(plan(group(pki.new, pki.old), pki)) == {"reissue"}
    assert steps(plan(group(pki.new, pki.old), pki, step="promote")) == set()
    assert steps(plan(group(pki.new, pki.old), pki, step="secondary")) == set()


def test_without_the_old_ca_in_the_inventory_the_old_one_is_dropped(pki: Pki) -> None:
    for records in (group(pki.new, pki.old), group(pki.old, pki.new), group(pki.new, pki.third)):
        result = plan(records, pki, old=False)
        assert steps(result) == {"reissue", "drop"}
        assert result["summary"] == "enrollment group plant-3: signed by plant-3-2027-ca.cert.pem alone"
    assert steps(plan(group(pki.new, pki.old), pki, old=False, step="drop")) == {"reissue", "drop"}
    # The drop waits for ca_rollover_step all or drop.
    waiting = plan(group(pki.new, pki.old), pki, old=False, step="promote")
    assert steps(waiting) == set()
    assert waiting["summary"].startswith("enrollment group plant-3: signed by plant-3-2027-ca.cert.pem (and ")


def test_a_group_on_the_new_ca_alone_has_nothing_to_change(pki: Pki) -> None:
    result = plan(group(pki.new), pki, old=False)
    assert steps(result) == {"reissue"}
    assert result["summary"] == "enrollment group plant-3: signed by plant-3-2027-ca.cert.pem alone"


# --- when the rollover must not run -----------------------------------------------------------------------------


def test_a_group_missing_in_dps(pki: Pki) -> None:
    assert plan([], pki)["problem"] == (
        "enrollment group plant-3 does not exist in DPS: provision the devices first (playbooks/provision.yml makes it)"
    )


@pytest.mark.parametrize(
    "attestation",
    [
        {"type": "symmetricKey", "symmetricKey": {"primaryKey": "********"}},
        {"type": "x509", "x509": {"caReferences": {"primary": "plant-3-ca"}}},
        None,
    ],
)
def test_a_group_without_signing_certificates(pki: Pki, attestation) -> None:
    records = [{"enrollmentGroupId": GROUP, "attestation": attestation}]
    problem = plan(records, pki)["problem"]
    assert problem.startswith("enrollment group plant-3 is not attested by X.509 signing certificates in DPS")


def test_a_missing_or_wrong_ca_file_is_named_with_its_variable(pki: Pki, tmp_path: Path) -> None:
    missing = ca_rollover_plan(group(pki.old), GROUP, str(tmp_path / "nope.pem"), path(pki, "plant-3"))
    assert missing["problem"] == (
        f"enrollment group plant-3: device_identity_ca_cert_path {tmp_path / 'nope.pem'} does not exist"
    )
    key = tmp_path / "key.pem"
    key.write_bytes(pki.old.key_pem)
    with_key = ca_rollover_plan(group(pki.old), GROUP, path(pki, "plant-3-2027"), str(key))
    assert with_key["problem"].startswith(f"enrollment group plant-3: dps_enrollment_secondary_certificate {key} holds")


def test_the_same_ca_as_new_and_old(pki: Pki) -> None:
    problem = ca_rollover_plan(group(pki.old), GROUP, path(pki, "plant-3"), path(pki, "plant-3"))["problem"]
    assert problem.startswith("enrollment group plant-3: device_identity_ca_cert_path and ")
    assert "dps_enrollment_secondary_certificate are the same CA" in problem


def test_a_group_signed_by_neither_ca(pki: Pki) -> None:
    problem = plan(group(pki.third), pki, old=False)["problem"]
    assert problem.startswith("enrollment group plant-3: its signing certificates in DPS are neither the new CA")
    assert "set dps_enrollment_secondary_certificate in its group_vars to the CA its devices hold now" in problem


@pytest.mark.parametrize(
    ("records", "slot"),
    [
        # An earlier rollover never dropped its old CA: the secondary step would replace it with the new one.
        (lambda pki: group(pki.old, pki.third), "secondary"),
        # The inventory names another old CA than DPS has: the promote step would replace it.
        (lambda pki: group(pki.third, pki.new), "primary"),
        (lambda pki: group(pki.third, pki.new, "info"), "primary"),
    ],
)
def test_a_third_ca_that_a_step_would_remove_stops_the_rollover(pki: Pki, records, slot: str) -> None:
    problem = plan(records(pki), pki)["problem"]
    assert problem.startswith(
        f"enrollment group plant-3: its {slot} signing certificate in DPS is CN=iotfleet Intermediate CA plant-3-2024 "
        f"(thumbprint {pki.third.sha256[:16]}...), neither the new CA"
    )
    assert "finish the earlier rollover first (its drop step)" in problem and "\n" not in problem


def test_the_reissue_step_before_dps_accepts_the_new_ca(pki: Pki) -> None:
    problem = plan(group(pki.old), pki, step="reissue")["problem"]
    assert problem.startswith("enrollment group plant-3 does not accept the new CA yet: devices re-issued now would")


def test_the_drop_step_while_the_inventory_keeps_the_old_ca(pki: Pki) -> None:
    problem = plan(group(pki.new, pki.old), pki, step="drop")["problem"]
    assert problem == (
        "enrollment group plant-3: ca_rollover_step=drop, but its group_vars still keep the old CA accepted "
        f"(dps_enrollment_secondary_certificate: {path(pki, 'plant-3')}); remove it first"
    )


def test_an_unknown_step_is_a_programming_error(pki: Pki) -> None:
    with pytest.raises(AnsibleFilterError, match="step must be one of all, secondary, reissue, promote, drop"):
        plan(group(pki.old), pki, step="soon")


def test_the_filter_is_registered() -> None:
    assert FilterModule().filters() == {"ca_rollover_plan": ca_rollover_plan}
