"""The emulator's TPM 2.0 software cryptography (dps_emulator.tpm), checked against independent computations:
cryptography's SP800-108 KDF, the TPM's own Names (tpm2_readpublic on swtpm), and the inverse of MakeCredential and
Duplicate done here with an RSA private key (what a TPM does in ActivateCredential and Import)."""

from __future__ import annotations

import hashlib
import hmac
import struct
import subprocess
import sys
import warnings

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode
from dps_emulator import tpm

from tests.support.swtpm import EK_HANDLE, SRK_HANDLE, split_authentication_key

EK_POLICY_A = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")


def sp800_108(key: bytes, label: bytes, context: bytes, length: int) -> bytes:
    kdf = KBKDFHMAC(
        algorithm=hashes.SHA256(),
        mode=Mode.CounterMode,
        length=length,
        rlen=4,
        llen=4,
        location=CounterLocation.BeforeFixed,
        label=label,
        context=context,
        fixed=None,
    )
    return kdf.derive(key)


def cfb_decrypt(key: bytes, data: bytes) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the test's own reference decryption, wherever CFB lives
        from cryptography.hazmat.primitives.ciphers import modes

        decryptor = Cipher(algorithms.AES(key), modes.CFB(b"\x00" * 16)).decryptor()
    return decryptor.update(data) + decryptor.finalize()


def storage_key_public(private_key: rsa.RSAPrivateKey) -> bytes:
    """A TPM2B_PUBLIC for an RSA-2048 restricted decryption key (the EK template's fields) of a software key."""
    modulus = private_key.public_key().public_numbers().n.to_bytes(256, "big")
    tpmt = (
        struct.pack(">HHI", 0x0001, 0x000B, 0x000300B2)
        + struct.pack(">H", 32)
        + EK_POLICY_A
        + struct.pack(">HHHHHI", 0x0006, 128, 0x0043, 0x0010, 2048, 0)
        + struct.pack(">H", 256)
        + modulus
    )
    return struct.pack(">H", len(tpmt)) + tpmt


def sized(data: bytes, offset: int = 0) -> tuple[bytes, int]:
    (size,) = struct.unpack(">H", data[offset : offset + 2])
    return data[offset + 2 : offset + 2 + size], offset + 2 + size


@pytest.fixture(scope="module")
def ek_private() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


@pytest.fixture(scope="module")
def srk_private() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


@pytest.mark.parametrize("length", [16, 32, 48, 100])
def test_kdfa_is_sp800_108_counter_mode(length):
    key, name = b"k" * 32, b"\x00\x0b" + b"n" * 32
    for label in (b"STORAGE", b"INTEGRITY"):
        assert tpm.kdfa(key, label, name, b"", length * 8) == sp800_108(key, label, name, length)
    assert tpm.kdfa(key, b"STORAGE\x00", name, b"ctx", 128) == sp800_108(key, b"STORAGE", name + b"ctx", 16)


def test_policy_command_code_of_duplicate():
    digest = tpm.policy_command_code(tpm.TPM_CC_DUPLICATE)
    assert digest.hex() == "bef56b8c1cc84e11edd717528d2cd99356bd2bbf8f015209c3f84aeeaba8e8a2"


def test_names_are_the_names_the_tpm_computes(software_tpm):
    device = software_tpm("crypto-names")
    ek = tpm.parse_rsa_public(device.endorsement_key, "EK")
    srk = tpm.parse_rsa_public(device.storage_root_key, "SRK")
    assert ek.name == device.object_name(EK_HANDLE)
    assert srk.name == device.object_name(SRK_HANDLE)
    assert ek.auth_policy == EK_POLICY_A and ek.symmetric == (tpm.TPM_ALG_AES, 128, tpm.TPM_ALG_CFB)
    assert srk.attributes & tpm.NO_DA and not srk.auth_policy


def test_make_credential_opens_with_the_ek_private_key(ek_private):
    ek = tpm.parse_rsa_public(storage_key_public(ek_private))
    object_name, credential = b"\x00\x0b" + hashlib.sha256(b"object").digest(), b"c" * 16
    id_object, secret = tpm.make_credential(ek, credential, object_name)
    # what ActivateCredential does
    encrypted_seed, end = sized(secret)
    assert end == len(secret)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=b"IDENTITY\x00")
    seed = ek_private.decrypt(encrypted_seed, oaep)
    body, end = sized(id_object)
    assert end == len(id_object)
    integrity, offset = sized(body)
    enc_identity = body[offset:]
    hmac_key = sp800_108(seed, b"INTEGRITY", b"", 32)
    assert hmac.compare_digest(integrity, hmac.new(hmac_key, enc_identity + object_name, hashlib.sha256).digest())
    plain = cfb_decrypt(sp800_108(seed, b"STORAGE", object_name, 16), enc_identity)
    assert plain == struct.pack(">H", 16) + credential


def test_duplicate_opens_with_the_parent_private_key(srk_private):
    srk = tpm.parse_rsa_public(storage_key_public(srk_private))
    key, seed_value, inner_key = b"h" * 32, b"s" * 32, b"i" * 16
    public = tpm.hmac_key_public(key, seed_value)
    sensitive = tpm.hmac_key_sensitive(key, seed_value)
    private, encrypted_seed = tpm.duplicate(srk, public, sensitive, inner_key)
    # what Import does: outer wrapper with the seed, then the inner wrapper with the inner key
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=b"DUPLICATE\x00")
    seed = srk_private.decrypt(sized(encrypted_seed)[0], oaep)
    name = b"\x00\x0b" + hashlib.sha256(public).digest()
    body = sized(private)[0]
    outer_hmac, offset = sized(body)
    dup_sensitive = body[offset:]
    assert outer_hmac == hmac.new(sp800_108(seed, b"INTEGRITY", b"", 32), dup_sensitive + name, "sha256").digest()
    inner = cfb_decrypt(inner_key, cfb_decrypt(sp800_108(seed, b"STORAGE", name, 16), dup_sensitive))
    inner_integrity, offset = sized(inner)
    assert inner[offset:] == sensitive
    assert inner_integrity == hashlib.sha256(sensitive + name).digest()
    # TPMT_SENSITIVE: KEYEDHASH, empty authValue, the seed, the key; the public area binds them: unique = H(seed||key)
    assert sensitive == struct.pack(">HHH", 72, 0x0008, 0) + b"\x00\x20" + seed_value + b"\x00\x20" + key
    assert public[-34:] == b"\x00\x20" + hashlib.sha256(seed_value + key).digest()


def test_authentication_key_blob_has_the_six_fields(ek_private, srk_private):
    blob = tpm.authentication_key_blob(storage_key_public(ek_private), storage_key_public(srk_private), b"k" * 32)
    _id_object, secret, _private, seed, public, uri = split_authentication_key(blob)
    assert len(secret) == len(seed) == 2 + 256  # RSA-2048 OAEP ciphertexts
    assert uri == b"\x00\x00"
    body = public[2:]
    object_type, name_alg, attributes = struct.unpack(">HHI", body[:8])
    assert (object_type, name_alg, attributes) == (0x0008, 0x000B, 0x00040440)  # keyedhash: sign|userWithAuth|noDA
    assert body[8:42] == b"\x00\x20" + tpm.policy_command_code(tpm.TPM_CC_DUPLICATE)
    assert body[42:46] == bytes.fromhex("0005000b")  # HMAC scheme, SHA-256


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda key: key[:-1], "not a TPM2B_PUBLIC"),
        (lambda key: key[:2] + b"\x00\x23" + key[4:], "not an RSA key"),
        (lambda key: key[:46] + b"\x00\x0a" + key[48:], "symmetric AES-10 "),  # symmetric keyBits 10
        (lambda key: key[:52] + b"\x04\x00" + key[54:], "is RSA-1024"),
    ],
)
def test_malformed_keys_raise_value_errors(ek_private, change, fragment):
    good = storage_key_public(ek_private)
    with pytest.raises(ValueError, match=fragment):
        tpm.parse_rsa_public(change(good), "the EK")
    with pytest.raises(ValueError, match=fragment):
        tpm.authentication_key_blob(change(good), good, b"k" * 32)


def test_exponent_zero_and_65537_are_the_same_key(ek_private):
    zero = storage_key_public(ek_private)
    explicit = zero[:54] + struct.pack(">I", 65537) + zero[58:]
    assert tpm.parse_rsa_public(zero).same_key(tpm.parse_rsa_public(explicit))
    assert tpm.parse_rsa_public(zero).name != tpm.parse_rsa_public(explicit).name


def test_no_deprecation_warning_escapes():
    """cryptography 47+ moved CFB to hazmat.decrepit; importing and using tpm.py must not warn (-W error)."""
    code = "from dps_emulator import tpm; assert tpm.aes_cfb_decrypt(b'k' * 16, tpm.aes_cfb_encrypt(b'k' * 16, b'x'))"
    completed = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr
