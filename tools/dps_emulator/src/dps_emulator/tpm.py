"""TPM 2.0 structures and DPS's TPM attestation cryptography, in software (no TPM, no TSS).

What DPS sends a TPM device (twice: the 401 challenge, and the assigned result with the IoT Hub key) is an
"authenticationKey": an HMAC key that only that TPM can load. It is built as Microsoft's own service-side emulation
builds it (microsoft/TSS.MSR Test_Azure_IoT_Provisioning "DRS logic emulation"; TSS.NET TpmKey.cs):

- the HMAC key is duplicated for import under the device's storage root key (SRK), with an inner wrapper
  (AES-128-CFB, a fresh 16-byte key) and the outer wrapper every TPM2_Duplicate has (a seed RSA-OAEP-encrypted to
  the SRK with the label "DUPLICATE", KDFa'd into an AES key and an HMAC key);
- the inner wrapper key is sent with TPM2_MakeCredential to the endorsement key (EK), bound to the SRK's Name, so
  only the TPM that holds that EK can TPM2_ActivateCredential it and only under that SRK.

The blob is six TPM structures back to back, in the order every client reads them (Node azure-iot-security-tpm
`_activateIdentityKey`, the C SDK's `insert_key_in_tpm`, aziot-tpmd's `import_auth_key`): TPM2B_ID_OBJECT,
TPM2B_ENCRYPTED_SECRET, TPM2B_PRIVATE, TPM2B_ENCRYPTED_SECRET, TPM2B_PUBLIC, TPM2B_DATA. The formulas are the TPM 2.0
Library spec's, Part 1 ("Protected Storage", "Credential Protection", "Duplication"); all integers are big-endian.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:  # cryptography >= 47 keeps CFB with the "decrepit" ciphers; the old path warns that it will go away
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography (Debian 12 ships 38)
    from cryptography.hazmat.primitives.ciphers.modes import CFB

TPM_ALG_RSA = 0x0001
TPM_ALG_KEYEDHASH = 0x0008
TPM_ALG_SHA256 = 0x000B
TPM_ALG_AES = 0x0006
TPM_ALG_HMAC = 0x0005
TPM_ALG_NULL = 0x0010
TPM_ALG_CFB = 0x0043
TPM_CC_DUPLICATE = 0x0000014B
TPM_CC_POLICY_COMMAND_CODE = 0x0000016C
# RSA schemes whose TPMT_RSA_SCHEME has no details (TPMS_EMPTY): NULL and RSAES; the others carry a hashAlg
RSA_SCHEMES_WITHOUT_HASH = (TPM_ALG_NULL, 0x0015)

# TPMA_OBJECT bits
FIXED_TPM = 1 << 1
FIXED_PARENT = 1 << 4
SENSITIVE_DATA_ORIGIN = 1 << 5
USER_WITH_AUTH = 1 << 6
NO_DA = 1 << 10
RESTRICTED = 1 << 16
DECRYPT = 1 << 17
SIGN = 1 << 18
# The DPS identity key (MSR's template): sign | userWithAuth | noDA; fixedTPM and fixedParent clear (TPM2_Import)
ID_KEY_ATTRIBUTES = SIGN | USER_WITH_AUTH | NO_DA
SHA256_SIZE = 32
INNER_KEY_BYTES = 16  # the inner wrapper is AES-128-CFB (tpm2_import -k takes exactly 16 bytes; aziot-tpmd too)
MAX_HMAC_KEY_BYTES = 128  # MAX_SYM_DATA: the largest TPM2B_SENSITIVE_DATA of a keyed-hash object


def tpm2b(data: bytes) -> bytes:
    """A TPM2B_*: u16 size, then the bytes."""
    if len(data) > 0xFFFF:
        raise ValueError(f"a TPM2B holds at most 65535 bytes, not {len(data)}")
    return struct.pack(">H", len(data)) + data


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.offset = 0
        self.what = what

    def take(self, count: int, field: str) -> bytes:
        if self.offset + count > len(self.data):
            raise ValueError(f"{self.what} is truncated: {field} needs {count} bytes at offset {self.offset}")
        chunk = self.data[self.offset : self.offset + count]
        self.offset += count
        return chunk

    def u16(self, field: str) -> int:
        return struct.unpack(">H", self.take(2, field))[0]

    def u32(self, field: str) -> int:
        return struct.unpack(">I", self.take(4, field))[0]

    def sized(self, field: str) -> bytes:
        return self.take(self.u16(f"{field} size"), field)


@dataclass(frozen=True)
class RsaPublic:
    """An RSA TPMT_PUBLIC (an EK or SRK) as parsed from its TPM2B_PUBLIC."""

    name_alg: int
    attributes: int
    auth_policy: bytes
    symmetric: tuple[int, int, int]  # (algorithm, keyBits, mode) of TPMT_SYM_DEF_OBJECT
    scheme: tuple[int, int | None]  # (scheme, hashAlg or None) of TPMT_RSA_SCHEME
    key_bits: int
    exponent: int  # as given: 0 means the default, 65537
    modulus: bytes
    tpmt: bytes  # the TPMT_PUBLIC bytes exactly as received (what the Name is computed over)

    @property
    def name(self) -> bytes:
        """The object's Name: nameAlg (u16) || H_nameAlg(TPMT_PUBLIC)."""
        return struct.pack(">H", self.name_alg) + hashlib.sha256(self.tpmt).digest()

    @property
    def public_exponent(self) -> int:
        return self.exponent or 65537

    def public_key(self) -> rsa.RSAPublicKey:
        return rsa.RSAPublicNumbers(self.public_exponent, int.from_bytes(self.modulus, "big")).public_key()

    def identity(self) -> tuple[object, ...]:
        """What makes two encodings the same key: the public key and every template field (exponent 0 and 65537 are
        the same key, but not the same Name: `same_key` is for comparing, `name` for binding)."""
        return (
            self.name_alg,
            self.attributes,
            self.auth_policy,
            self.symmetric,
            self.scheme,
            self.key_bits,
            self.public_exponent,
            self.modulus,
        )

    def same_key(self, other: RsaPublic) -> bool:
        return self.identity() == other.identity()

    def describe(self) -> str:
        return f"RSA-{self.key_bits} key, modulus {self.modulus[:8].hex()}..., attributes 0x{self.attributes:08x}"


def parse_rsa_public(data: bytes, what: str = "the key") -> RsaPublic:
    """Parse a marshalled TPM2B_PUBLIC that must hold an RSA-2048 storage key (restricted decrypt, SHA-256 Name,
    AES-CFB symmetric): an EK or an SRK. ValueError says what is wrong."""
    reader = _Reader(data, f"{what} (TPM2B_PUBLIC)")
    size = reader.u16("size")
    if size != len(data) - 2:
        raise ValueError(
            f"{what} is not a TPM2B_PUBLIC: its size field says {size} bytes but {len(data) - 2} follow "
            "(expected the marshalled TPM2B_PUBLIC, base64-encoded, e.g. tpm2_readpublic -o)"
        )
    tpmt = data[2:]
    object_type = reader.u16("type")
    if object_type != TPM_ALG_RSA:
        raise ValueError(f"{what} is not an RSA key (TPMT_PUBLIC type 0x{object_type:04x}; DPS takes RSA-2048)")
    name_alg = reader.u16("nameAlg")
    if name_alg != TPM_ALG_SHA256:
        raise ValueError(f"{what} has nameAlg 0x{name_alg:04x}; only SHA-256 (0x000b) is supported")
    attributes = reader.u32("objectAttributes")
    auth_policy = reader.sized("authPolicy")
    symmetric_alg = reader.u16("symmetric.algorithm")
    if symmetric_alg != TPM_ALG_AES:
        raise ValueError(
            f"{what} has symmetric algorithm 0x{symmetric_alg:04x}; an EK/SRK for DPS is a storage key with AES-CFB"
        )
    symmetric = (symmetric_alg, reader.u16("symmetric.keyBits"), reader.u16("symmetric.mode"))
    if symmetric[1] not in (128, 192, 256) or symmetric[2] != TPM_ALG_CFB:
        raise ValueError(f"{what} has symmetric AES-{symmetric[1]} mode 0x{symmetric[2]:04x}; expected AES CFB")
    scheme_alg = reader.u16("scheme")
    scheme_hash = None if scheme_alg in RSA_SCHEMES_WITHOUT_HASH else reader.u16("scheme.hashAlg")
    key_bits = reader.u16("keyBits")
    exponent = reader.u32("exponent")
    modulus = reader.sized("unique (modulus)")
    if reader.offset != len(data):
        raise ValueError(f"{what} has {len(data) - reader.offset} unexpected bytes after the RSA modulus")
    if key_bits != 2048 or len(modulus) != 256:
        raise ValueError(f"{what} is RSA-{key_bits} with a {len(modulus)}-byte modulus; DPS takes RSA-2048")
    if attributes & (RESTRICTED | DECRYPT) != RESTRICTED | DECRYPT:
        raise ValueError(
            f"{what} is not a restricted decryption (storage) key: attributes 0x{attributes:08x} lack "
            "restricted|decrypt, as an EK and an SRK have"
        )
    if not modulus[0] & 0x80:
        raise ValueError(f"{what} has a modulus that is not 2048 bits long (leading byte 0x{modulus[0]:02x})")
    return RsaPublic(
        name_alg=name_alg,
        attributes=attributes,
        auth_policy=auth_policy,
        symmetric=symmetric,
        scheme=(scheme_alg, scheme_hash),
        key_bits=key_bits,
        exponent=exponent,
        modulus=modulus,
        tpmt=tpmt,
    )


# --- primitives ----------------------------------------------------------------------------------------------------
def kdfa(key: bytes, label: bytes, context_u: bytes, context_v: bytes, bits: int) -> bytes:
    """KDFa with SHA-256: SP800-108 in counter mode,
    HMAC(key, [i]32 || label || 0x00 || contextU || contextV || [bits]32) for i = 1, 2, ... truncated to `bits`."""
    if bits <= 0 or bits % 8:
        raise ValueError(f"KDFa output must be a positive whole number of bytes, not {bits} bits")
    label = label.rstrip(b"\x00") + b"\x00"  # the label is a NUL-terminated string; the NUL is hashed once
    output = b""
    counter = 1
    while len(output) * 8 < bits:
        block = struct.pack(">I", counter) + label + context_u + context_v + struct.pack(">I", bits)
        output += hmac.new(key, block, hashlib.sha256).digest()
        counter += 1
    return output[: bits // 8]


def aes_cfb_encrypt(key: bytes, data: bytes) -> bytes:
    """AES-CFB with a zero IV, as TPM parameter and object protection uses it."""
    encryptor = Cipher(algorithms.AES(key), CFB(b"\x00" * 16)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def aes_cfb_decrypt(key: bytes, data: bytes) -> bytes:
    decryptor = Cipher(algorithms.AES(key), CFB(b"\x00" * 16)).decryptor()
    return decryptor.update(data) + decryptor.finalize()


def encrypt_seed(target: RsaPublic, label: bytes, seed: bytes) -> bytes:
    """RSA-OAEP(SHA-256) of a seed to `target`, with the label the TPM expects (NUL-terminated)."""
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=label)
    return target.public_key().encrypt(seed, oaep)


def policy_command_code(command_code: int, previous: bytes = b"\x00" * SHA256_SIZE) -> bytes:
    """The policy digest after TPM2_PolicyCommandCode(code): H(previous || TPM_CC_PolicyCommandCode || code)."""
    return hashlib.sha256(previous + struct.pack(">II", TPM_CC_POLICY_COMMAND_CODE, command_code)).digest()


# --- MakeCredential and Duplicate ----------------------------------------------------------------------------------
def make_credential(
    ek: RsaPublic, credential: bytes, object_name: bytes, seed: bytes | None = None
) -> tuple[bytes, bytes]:
    """TPM2_MakeCredential in software: (TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET) that only `ek`'s TPM can open with
    TPM2_ActivateCredential, and only for the object named `object_name`. `seed` is for known-answer tests."""
    if len(credential) > SHA256_SIZE:
        raise ValueError(f"a credential is at most {SHA256_SIZE} bytes (an EK nameAlg digest), not {len(credential)}")
    seed = os.urandom(SHA256_SIZE) if seed is None else seed
    encrypted_seed = encrypt_seed(ek, b"IDENTITY\x00", seed)
    storage_key = kdfa(seed, b"STORAGE", object_name, b"", ek.symmetric[1])
    enc_identity = aes_cfb_encrypt(storage_key, tpm2b(credential))
    integrity_key = kdfa(seed, b"INTEGRITY", b"", b"", SHA256_SIZE * 8)
    integrity = hmac.new(integrity_key, enc_identity + object_name, hashlib.sha256).digest()
    return tpm2b(tpm2b(integrity) + enc_identity), tpm2b(encrypted_seed)


def hmac_key_public(key: bytes, seed_value: bytes) -> bytes:
    """TPMT_PUBLIC of the DPS identity key: KEYEDHASH, HMAC-SHA256 scheme, sign|userWithAuth|noDA, authPolicy =
    PolicyCommandCode(TPM_CC_Duplicate), unique = H(seedValue || key) (the binding of a symmetric object)."""
    return (
        struct.pack(">HHI", TPM_ALG_KEYEDHASH, TPM_ALG_SHA256, ID_KEY_ATTRIBUTES)
        + tpm2b(policy_command_code(TPM_CC_DUPLICATE))
        + struct.pack(">HH", TPM_ALG_HMAC, TPM_ALG_SHA256)
        + tpm2b(hashlib.sha256(seed_value + key).digest())
    )


def hmac_key_sensitive(key: bytes, seed_value: bytes) -> bytes:
    """TPM2B_SENSITIVE of the identity key: type KEYEDHASH, empty authValue, seedValue, the key bytes."""
    return tpm2b(struct.pack(">H", TPM_ALG_KEYEDHASH) + tpm2b(b"") + tpm2b(seed_value) + tpm2b(key))


def duplicate(
    parent: RsaPublic, object_public: bytes, sensitive: bytes, inner_key: bytes, seed: bytes | None = None
) -> tuple[bytes, bytes]:
    """TPM2_Duplicate with an inner wrapper, in software: (TPM2B_PRIVATE, TPM2B_ENCRYPTED_SECRET) for TPM2_Import of
    the object (`object_public` = its TPMT_PUBLIC, `sensitive` = its TPM2B_SENSITIVE) under `parent`."""
    name = struct.pack(">H", TPM_ALG_SHA256) + hashlib.sha256(object_public).digest()
    inner_integrity = hashlib.sha256(sensitive + name).digest()
    enc_sensitive = aes_cfb_encrypt(inner_key, tpm2b(inner_integrity) + sensitive)
    seed = os.urandom(SHA256_SIZE) if seed is None else seed
    encrypted_seed = encrypt_seed(parent, b"DUPLICATE\x00", seed)
    outer_key = kdfa(seed, b"STORAGE", name, b"", parent.symmetric[1])
    dup_sensitive = aes_cfb_encrypt(outer_key, enc_sensitive)
    integrity_key = kdfa(seed, b"INTEGRITY", b"", b"", SHA256_SIZE * 8)
    outer_hmac = hmac.new(integrity_key, dup_sensitive + name, hashlib.sha256).digest()
    return tpm2b(tpm2b(outer_hmac) + dup_sensitive), tpm2b(encrypted_seed)


def authentication_key_blob(ek_public: bytes | RsaPublic, srk_public: bytes | RsaPublic, hmac_key: bytes) -> bytes:
    """DPS's authenticationKey: `hmac_key` as a KEYEDHASH object that only the TPM holding `ek_public` can import,
    under the SRK `srk_public` (each a TPM2B_PUBLIC or its parsed form). The six fields, back to back:
    TPM2B_ID_OBJECT || TPM2B_ENCRYPTED_SECRET (MakeCredential of the inner wrapper key to the EK, bound to the SRK's
    Name) || TPM2B_PRIVATE || TPM2B_ENCRYPTED_SECRET (the duplicated key and its seed for the SRK) || TPM2B_PUBLIC
    (the key's public area) || TPM2B_DATA (empty: DPS's encrypted URI, which no client reads)."""
    ek = ek_public if isinstance(ek_public, RsaPublic) else parse_rsa_public(ek_public, "the endorsement key")
    srk = srk_public if isinstance(srk_public, RsaPublic) else parse_rsa_public(srk_public, "the storage root key")
    if not 1 <= len(hmac_key) <= MAX_HMAC_KEY_BYTES:
        raise ValueError(f"an HMAC key for the TPM is 1-{MAX_HMAC_KEY_BYTES} bytes, not {len(hmac_key)}")
    seed_value = os.urandom(SHA256_SIZE)
    public = hmac_key_public(hmac_key, seed_value)
    inner_key = os.urandom(INNER_KEY_BYTES)
    private, encrypted_seed = duplicate(srk, public, hmac_key_sensitive(hmac_key, seed_value), inner_key)
    id_object, encrypted_secret = make_credential(ek, inner_key, srk.name)
    return id_object + encrypted_secret + private + encrypted_seed + tpm2b(public) + tpm2b(b"")
