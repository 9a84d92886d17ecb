"""x509_ca: the lab CA directory (files, modes, reuse, passphrase, refusals) and DPS verification certificates."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ansible_collections.iotfleet.aziot.plugins.module_utils._pki import common_name, is_ca, issued_by
from ansible_collections.iotfleet.aziot.plugins.modules import x509_ca
from tests.support.modules import run_module

CA_FILES = ["intermediate-ca.cert.pem", "intermediate-ca.key.pem", "root-ca.cert.pem", "root-ca.key.pem"]


def run(path: Path, **args) -> dict:
    # EC keys: these tests are about files and decisions, not about waiting for RSA 4096 key generation.
    return run_module(x509_ca, {"path": str(path), "key_type": "ec-p256", **args}).result


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_check_mode_then_create_then_reuse(tmp_path: Path) -> None:
    ca = tmp_path / "pki"
    check = run(ca, _ansible_check_mode=True)
    assert check["changed"] is True and sorted(check["created"]) == CA_FILES
    assert not ca.exists()

    created = run(ca)
    assert created["changed"] is True and sorted(created["created"]) == CA_FILES
    assert sorted(p.name for p in ca.iterdir()) == CA_FILES
    assert mode(ca) == 0o700
    assert [mode(ca / name) for name in CA_FILES] == [0o644, 0o600, 0o644, 0o600]
    root, intermediate = cert(ca / "root-ca.cert.pem"), cert(ca / "intermediate-ca.cert.pem")
    assert is_ca(root) and is_ca(intermediate) and issued_by(root, root) and issued_by(intermediate, root)
    assert created["root"]["subject"] == "CN=iotfleet Root CA"
    assert created["intermediate"]["issuer"] == "CN=iotfleet Root CA"
    assert created["intermediate_key_path"] == str(ca / "intermediate-ca.key.pem")

    before = {name: (ca / name).read_bytes() for name in CA_FILES}
    again = run(ca)
    assert (again["changed"], again["created"]) == (False, [])
    assert {name: (ca / name).read_bytes() for name in CA_FILES} == before
    assert again["intermediate"]["sha256_thumbprint"] == created["intermediate"]["sha256_thumbprint"]


def test_passphrase_encrypts_the_keys_and_is_needed_to_reuse_them(tmp_path: Path) -> None:
    ca = tmp_path / "pki"
    assert run(ca, passphrase="lab-ca-secret")["changed"] is True
    key_pem = (ca / "root-ca.key.pem").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in key_pem
    serialization.load_pem_private_key(key_pem, b"lab-ca-secret")
    assert run(ca, passphrase="lab-ca-secret")["changed"] is False
    refused = run(ca)
    assert refused["failed"] and refused["msg"] == f"{ca / 'root-ca.key.pem'} is encrypted; give its passphrase"
    assert "lab-ca-secret" not in repr(run(ca, passphrase="lab-ca-secret"))


def test_verification_certificate_for_the_code_dps_shows(tmp_path: Path) -> None:
    ca = tmp_path / "pki"
    first = run(ca, verification_code="1B3C9E6A0F2D")
    verification = ca / "verification.cert.pem"
    assert first["verification_cert_path"] == str(verification)
    assert "verification.cert.pem" in first["created"]
    made = cert(verification)
    assert common_name(made.subject) == "1B3C9E6A0F2D"
    assert issued_by(made, cert(ca / "root-ca.cert.pem"))
    assert run(ca, verification_code="1B3C9E6A0F2D")["changed"] is False
    by_intermediate = run(ca, verification_code="77AA", verification_ca="intermediate")
    assert by_intermediate["changed"] is True and by_intermediate["created"] == ["verification.cert.pem"]
    assert issued_by(cert(verification), cert(ca / "intermediate-ca.cert.pem"))
    assert common_name(cert(verification).subject) == "77AA"


def test_a_lone_key_or_certificate_is_never_overwritten(tmp_path: Path) -> None:
    ca = tmp_path / "pki"
    run(ca)
    (ca / "intermediate-ca.cert.pem").unlink()
    key_before = (ca / "intermediate-ca.key.pem").read_bytes()
    refused = run(ca)
    assert refused["failed"] and refused["msg"] == (
        f"{ca / 'intermediate-ca.cert.pem'} is missing but its intermediate CA partner exists; restore it, or remove "
        "both to make a new intermediate CA"
    )
    assert (ca / "intermediate-ca.key.pem").read_bytes() == key_before


def test_an_intermediate_from_another_root_is_refused(tmp_path: Path) -> None:
    ca, other = tmp_path / "pki", tmp_path / "other"
    run(ca)
    run(other)
    for name in ("intermediate-ca.cert.pem", "intermediate-ca.key.pem"):
        (ca / name).write_bytes((other / name).read_bytes())
    refused = run(ca)
    assert refused["failed"] and refused["msg"].startswith(
        f"{ca / 'intermediate-ca.cert.pem'} was not signed by {ca / 'root-ca.cert.pem'}"
    )


@pytest.mark.parametrize("option", ["root_valid_days", "intermediate_valid_days", "verification_valid_days"])
def test_validity_must_be_at_least_a_day(tmp_path: Path, option: str) -> None:
    refused = run(tmp_path / "pki", **{option: 0})
    assert refused["failed"] and refused["msg"] == f"{option} must be at least 1, got 0"
    assert not (tmp_path / "pki").exists()
