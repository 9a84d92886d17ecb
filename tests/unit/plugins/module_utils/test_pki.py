"""Unit tests for plugins/module_utils/_pki.py (key types, reissue reasons, chains, CA checks)."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ansible_collections.iotfleet.aziot.plugins.module_utils import _pki

NOW = datetime.datetime(2026, 11, 23, 12, 0, tzinfo=datetime.timezone.utc)


@pytest.fixture(scope="module")
def pki():
    root_key = _pki.generate_private_key("ec-p256")
    root = _pki.create_ca_certificate(root_key, "Root", 3650, now=NOW)
    inter_key = _pki.generate_private_key("ec-p256")
    inter = _pki.create_ca_certificate(inter_key, "Inter", 1825, root, root_key, path_length=0, now=NOW)
    device_key = _pki.generate_private_key("ec-p256")
    leaf = _pki.sign_device_certificate(device_key.public_key(), "182-con", inter, inter_key, 365, now=NOW)
    return {
        "root": root,
        "root_key": root_key,
        "inter": inter,
        "inter_key": inter_key,
        "device_key": device_key,
        "leaf": leaf,
    }


@pytest.mark.parametrize("key_type", _pki.KEY_TYPES[:3])
def test_key_type_round_trip(key_type):
    key = _pki.generate_private_key(key_type)
    assert _pki.key_type_of(key) == key_type
    assert _pki.key_type_of(key.public_key()) == key_type
    loaded = _pki.load_private_key(_pki.private_key_to_pem(key), "k")
    assert _pki.public_key_bytes(loaded) == _pki.public_key_bytes(key)


def test_encrypted_key_needs_the_passphrase():
    key = _pki.generate_private_key("ec-p256")
    pem = _pki.private_key_to_pem(key, "s3cret")
    assert b"ENCRYPTED" in pem
    with pytest.raises(_pki.PkiError, match=r"is encrypted; give its passphrase"):
        _pki.load_private_key(pem, "ca.key")
    with pytest.raises(_pki.PkiError) as wrong:
        _pki.load_private_key(pem, "ca.key", "wrong")
    assert str(wrong.value) == "ca.key could not be decrypted: wrong passphrase"
    assert _pki.key_type_of(_pki.load_private_key(pem, "ca.key", "s3cret")) == "ec-p256"


def _damaged_rsa_pem() -> bytes:
    """A well-formed PEM RSA key whose private exponents no longer match its public half."""
    numbers = _pki.generate_private_key("rsa-2048").private_numbers()
    damaged = rsa.RSAPrivateNumbers(
        p=numbers.p,
        q=numbers.q,
        d=numbers.d + 2,
        dmp1=numbers.dmp1 + 2,
        dmq1=numbers.dmq1 + 2,
        iqmp=numbers.iqmp,
        public_numbers=numbers.public_numbers,
    ).private_key(unsafe_skip_rsa_key_validation=True)
    return damaged.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_damaged_rsa_key_is_refused_without_the_slow_check():
    # load_private_key skips OpenSSL's full RSA check (0.3 s per 4096-bit load) but must still catch this.
    with pytest.raises(
        _pki.PkiError,
        match=r"^dev1: device key k\.pem is a damaged RSA key \(its private and public parts do not match\)$",
    ):
        _pki.load_private_key(_damaged_rsa_pem(), "dev1: device key k.pem")


@pytest.mark.parametrize(("version", "expected"), [("38.0.4", False), ("39.0.0", True), ("50.0.2", True), ("0", False)])
def test_rsa_key_check_is_skipped_only_where_cryptography_can(version, expected):
    # Debian 12 devices ship cryptography 38: no unsafe_skip_rsa_key_validation, the full check stays.
    assert _pki.can_skip_rsa_key_check(version) is expected


def test_rsa_key_loads_on_cryptography_without_the_skip_switch(monkeypatch):
    real = serialization.load_pem_private_key

    def like_cryptography_38(data, password, backend=None):  # a TypeError for any other keyword
        return real(data, password=password)

    monkeypatch.setattr(_pki.serialization, "load_pem_private_key", like_cryptography_38)
    monkeypatch.setattr(_pki, "_LOAD_KEY_ARGS", {})  # what can_skip_rsa_key_check("38.0.4") leads to
    key = _pki.generate_private_key("rsa-2048")
    loaded = _pki.load_private_key(_pki.private_key_to_pem(key), "k")
    assert _pki.public_key_bytes(loaded) == _pki.public_key_bytes(key)
    # OpenSSL's own full check refuses the damaged key there, as unreadable.
    with pytest.raises(_pki.PkiError, match=r"^dev1: device key k\.pem is not a readable PEM private key$"):
        _pki.load_private_key(_damaged_rsa_pem(), "dev1: device key k.pem")
    with pytest.raises(_pki.PkiError, match=r"is encrypted; give its passphrase"):
        _pki.load_private_key(_pki.private_key_to_pem(key, "s3cret"), "ca.key")


def test_corrupt_pem_is_a_one_line_error():
    with pytest.raises(_pki.PkiError, match=r"^x is not a readable PEM private key$"):
        _pki.load_private_key(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "x")
    with pytest.raises(_pki.PkiError, match=r"holds no PEM certificate"):
        _pki.load_certificates(b"garbage", "c")
    with pytest.raises(_pki.PkiError, match=r"certificate #1 is corrupt"):
        _pki.load_certificates(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----", "c")


def test_device_certificate_profile(pki):
    leaf = pki["leaf"]
    assert _pki.common_name(leaf.subject) == "182-con"
    assert _pki.issued_by(leaf, pki["inter"])
    assert not _pki.issued_by(leaf, pki["root"])
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert _pki.not_before(leaf) < NOW  # backdated for clock skew
    info = _pki.cert_info(leaf)
    assert info["sha1_thumbprint"] == leaf.fingerprint(hashes.SHA1()).hex().upper()
    assert info["common_name"] == "182-con"


def test_device_cert_never_outlives_its_ca(pki):
    leaf = _pki.sign_device_certificate(
        pki["device_key"].public_key(), "182-con", pki["inter"], pki["inter_key"], 100000, now=NOW
    )
    assert _pki.not_after(leaf) == _pki.not_after(pki["inter"])


def _reasons(pki, cert, **kwargs):
    args = {
        "cert_pem": _pki.certificate_to_pem(cert) if cert is not None else None,
        "public_key": pki["device_key"].public_key(),
        "ca_cert": pki["inter"],
        "registration_id": "182-con",
        "renew_before_days": 30,
        "now": NOW,
    }
    args.update(kwargs)
    return [reason.split(":")[0] for reason in _pki.device_cert_reissue_reasons(**args)]


def test_good_certificate_has_no_reason(pki):
    assert _reasons(pki, pki["leaf"]) == []


def test_every_reissue_reason(pki):
    assert _reasons(pki, None) == ["missing"]
    assert _reasons(pki, pki["leaf"], cert_pem="not a cert") == ["unparseable"]
    assert _reasons(pki, pki["leaf"], registration_id="183-con") == ["cn_mismatch"]
    assert _reasons(pki, pki["leaf"], ca_cert=pki["root"]) == ["issuer_mismatch"]
    other = _pki.generate_private_key("ec-p256")
    assert _reasons(pki, pki["leaf"], public_key=other.public_key()) == ["key_mismatch"]
    rsa = _pki.generate_private_key("rsa-2048")
    assert _reasons(pki, pki["leaf"], public_key=rsa.public_key()) == ["key_type_changed"]
    assert _reasons(pki, pki["leaf"], renew_before_days=400) == ["renewal_window"]
    later = NOW + datetime.timedelta(days=366)
    assert _reasons(pki, pki["leaf"], now=later) == ["expired"]
    earlier = NOW - datetime.timedelta(days=1)
    assert _reasons(pki, pki["leaf"], now=earlier) == ["not_yet_valid"]


def test_order_chain_orders_and_reports_unused(pki):
    other_key = _pki.generate_private_key("ec-p256")
    other_ca = _pki.create_ca_certificate(other_key, "Unrelated", 10, now=NOW)
    chain, unused = _pki.order_chain(pki["leaf"], [pki["root"], other_ca, pki["inter"], pki["inter"]], pki["root"], NOW)
    assert [_pki.common_name(c.subject) for c in chain] == ["182-con", "Inter", "Root"]
    assert [_pki.common_name(c.subject) for c in unused] == ["Unrelated"]


def test_order_chain_refuses_missing_intermediate_and_wrong_root(pki):
    with pytest.raises(_pki.PkiError, match=r"add the missing intermediate"):
        _pki.order_chain(pki["leaf"], [], pki["root"], NOW)
    other_key = _pki.generate_private_key("ec-p256")
    other_root = _pki.create_ca_certificate(other_key, "Other", 10, now=NOW)
    with pytest.raises(_pki.PkiError, match=r"does not reach the root 'CN=Other'"):
        _pki.order_chain(pki["leaf"], [pki["inter"]], other_root, NOW)
    with pytest.raises(_pki.PkiError, match=r"not a self-signed CA"):
        _pki.order_chain(pki["leaf"], [], pki["inter"], NOW)


def test_order_chain_refuses_expired_link(pki):
    with pytest.raises(_pki.PkiError, match=r"expired on"):
        _pki.order_chain(pki["leaf"], [pki["inter"]], pki["root"], NOW + datetime.timedelta(days=400))


def test_issued_by_rejects_forged_signature(pki):
    # Same issuer name, different key: names chain but the signature must not verify.
    impostor_key = _pki.generate_private_key("ec-p256")
    impostor = _pki.create_ca_certificate(impostor_key, "Inter", 10, now=NOW)
    assert pki["leaf"].issuer == impostor.subject
    assert not _pki.issued_by(pki["leaf"], impostor)


def test_rsa_signed_chain_verifies():
    root_key = _pki.generate_private_key("rsa-2048")
    root = _pki.create_ca_certificate(root_key, "RSA Root", 10, now=NOW)
    leaf = _pki.sign_device_certificate(
        _pki.generate_private_key("ec-p384").public_key(), "dev", root, root_key, 5, now=NOW
    )
    assert _pki.issued_by(leaf, root)
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_encipherment  # EC leaf: no key encipherment


def test_check_ca_pair(pki):
    _pki.check_ca_pair(pki["inter"], pki["inter_key"], "ca", NOW)
    with pytest.raises(_pki.PkiError, match=r"does not belong to the CA certificate"):
        _pki.check_ca_pair(pki["inter"], pki["root_key"], "ca", NOW)
    with pytest.raises(_pki.PkiError, match=r"not a CA"):
        _pki.check_ca_pair(pki["leaf"], pki["device_key"], "ca", NOW)
    with pytest.raises(_pki.PkiError, match=r"expired on .*; renew the CA"):
        _pki.check_ca_pair(pki["inter"], pki["inter_key"], "ca", NOW + datetime.timedelta(days=2000))


def test_verification_certificate(pki):
    cert = _pki.create_verification_certificate("ABC123", pki["root"], pki["root_key"], 30, now=NOW)
    assert _pki.common_name(cert.subject) == "ABC123"
    assert _pki.issued_by(cert, pki["root"])


def test_csr_carries_registration_id(pki):
    csr = _pki.load_csr(_pki.csr_to_pem(_pki.build_csr(pki["device_key"], "182-con")), "dev")
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "182-con"
    assert isinstance(csr.public_key(), ec.EllipticCurvePublicKey)
