"""x509_ca with several intermediates under one root: one per DPS enrollment group, or a CA rollover."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from ansible_collections.iotfleet.aziot.plugins.module_utils._pki import issued_by
from ansible_collections.iotfleet.aziot.plugins.modules import x509_ca
from tests.support.modules import run_module


def run(path: Path, **args):
    return run_module(x509_ca, {"path": str(path), "key_type": "ec-p256", **args})


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_named_intermediates_share_the_root_and_have_their_own_subjects(tmp_path: Path) -> None:
    ca = tmp_path / "pki"
    created = run(ca, intermediates=["plant-3", "lab"]).result
    assert sorted(created["created"]) == sorted(
        [
            "root-ca.key.pem",
            "root-ca.cert.pem",
            "plant-3-ca.key.pem",
            "plant-3-ca.cert.pem",
            "lab-ca.key.pem",
            "lab-ca.cert.pem",
        ]
    )
    root = cert(ca / "root-ca.cert.pem")
    plant3, lab = cert(ca / "plant-3-ca.cert.pem"), cert(ca / "lab-ca.cert.pem")
    assert issued_by(plant3, root) and issued_by(lab, root)
    assert created["intermediates"]["plant-3"]["info"]["subject"] == "CN=iotfleet Intermediate CA plant-3"
    assert plant3.subject != lab.subject
    assert created["intermediate_cert_path"] == str(ca / "plant-3-ca.cert.pem")

    # A new name later (a new enrollment group, or the next CA of a rollover): only it is made, the root is kept.
    later = run(ca, intermediates=["plant-3", "lab", "plant-3-2027"]).result
    assert later["created"] == ["plant-3-2027-ca.key.pem", "plant-3-2027-ca.cert.pem"]
    assert issued_by(cert(ca / "plant-3-2027-ca.cert.pem"), root)
    assert run(ca, intermediates=["lab"]).result["changed"] is False  # others are left alone, not removed


def test_check_mode_names_every_file_it_would_make(tmp_path: Path) -> None:
    check = run(tmp_path / "pki", intermediates=["a", "b"], _ansible_check_mode=True).result
    assert check["changed"] is True and len(check["created"]) == 6 and not (tmp_path / "pki").exists()


def test_verification_certificate_by_a_named_intermediate(tmp_path: Path) -> None:
    ca = tmp_path / "pki"
    result = run(ca, intermediates=["plant-3"], verification_code="ABC123", verification_ca="plant-3").result
    verification = cert(ca / "verification.cert.pem")
    assert issued_by(verification, cert(ca / "plant-3-ca.cert.pem"))
    assert result["verification_cert_path"] == str(ca / "verification.cert.pem")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"intermediates": ["root"]}, "intermediates: 'root' is not a usable CA name"),
        ({"intermediates": ["a/b"]}, "intermediates: 'a/b' is not a usable CA name"),
        ({"intermediates": ["a", "a"]}, "intermediates names a CA twice"),
        ({"intermediates": []}, "intermediates must name at least one intermediate CA"),
        ({"verification_code": "X", "verification_ca": "other"}, "verification_ca 'other' is neither root nor"),
    ],
)
def test_bad_names_are_refused_before_anything_is_written(tmp_path: Path, args: dict, message: str) -> None:
    outcome = run(tmp_path / "pki", **args)
    assert outcome.result["failed"] is True and message in outcome.result["msg"]
    assert not (tmp_path / "pki").exists()
