# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""X.509 helpers shared by the PKI modules and action plugins.

This file runs on the controller (CA side, recent `cryptography`) and on devices, where Debian 12
ships python3-cryptography 38: it only uses APIs present in 38 (no `verify_directly_issued_by`,
no `not_valid_after_utc` without a fallback).
"""

from __future__ import annotations

import datetime
import re
import traceback

from ansible.module_utils.basic import missing_required_lib

try:
    from cryptography import __version__ as CRYPTOGRAPHY_VERSION
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:
    CRYPTOGRAPHY_VERSION = "0"
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None

# Device/CA key types we support. EC P-256 is the device default: Azure IoT accepts it, and it is
# ~30 000 times faster to generate than RSA 4096 (DESIGN.md §8), which dominates fleet runs.
KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")
DEFAULT_DEVICE_KEY_TYPE = "ec-p256"
DEFAULT_CA_KEY_TYPE = "rsa-4096"

# Backdate notBefore a little so a device whose clock is slightly behind accepts a fresh cert.
CLOCK_SKEW = datetime.timedelta(minutes=5)


class PkiError(Exception):
    """A PKI problem a user can act on; the message is one line and names the fix."""


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def require_cryptography(module) -> None:
    """Fail the module, in the same words everywhere, when python cryptography cannot be imported.

    The requirement is documented once, in the doc fragment iotfleet.aziot.cryptography.
    """
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(
            msg=missing_required_lib("cryptography") + " (on Debian: apt install python3-cryptography)",
            exception=CRYPTOGRAPHY_IMPORT_ERROR,
        )


def key_type_argument_spec(default: str) -> dict:
    """The `key_type` option; its choices are documented once in the doc fragment iotfleet.aziot.key_type."""
    return {"key_type": {"type": "str", "default": default, "choices": list(KEY_TYPES)}}


# --------------------------------------------------------------------------------------------
# Keys


def generate_private_key(key_type: str):
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type.startswith("rsa-"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    raise PkiError(f"unknown key type '{key_type}'; choose one of {', '.join(KEY_TYPES)}")


def key_type_of(key) -> str:
    """Name the type of a private or public key in KEY_TYPES terms ('unsupported ...' otherwise)."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}.get(key.curve.name, f"ec-{key.curve.name}")
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return f"rsa-{key.key_size}"
    return f"unsupported ({type(key).__name__})"


def private_key_to_pem(key, passphrase: str | None = None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode("utf-8"))
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


# cryptography >= 39 can skip OpenSSL's full RSA key check on load (RSA_check_key: primality of p and q), which
# costs 0.32 s of CPU per load of a 4096-bit key on the bench machine (docs/benchmarks.md) and seconds on a Pi -
# once per device for the CA key on the controller and once for the device key on every run. load_private_key
# skips it and runs a pairwise consistency check instead (sign and verify, 4 ms): a key whose private half does
# not match its public half is still refused. Older cryptography (Debian 12 ships 38) has no switch and keeps the
# full check.
_PAIRWISE_MESSAGE = b"iotfleet.aziot private key consistency check"


def can_skip_rsa_key_check(version: str) -> bool:
    """Whether this cryptography version has load_pem_private_key(unsafe_skip_rsa_key_validation=...) (39+)."""
    major = re.match(r"\d+", version)
    return major is not None and int(major.group()) >= 39


_LOAD_KEY_ARGS = {"unsafe_skip_rsa_key_validation": True} if can_skip_rsa_key_check(CRYPTOGRAPHY_VERSION) else {}


def _rsa_pair_consistent(key) -> bool:
    """Sign and verify a fixed message: False when the private and public halves of an RSA key disagree."""
    try:
        signature = key.sign(_PAIRWISE_MESSAGE, padding.PKCS1v15(), hashes.SHA256())
        key.public_key().verify(signature, _PAIRWISE_MESSAGE, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def load_private_key(data: bytes, what: str, passphrase: str | None = None):
    """Parse a PEM private key; raise PkiError naming `what` (e.g. the path) on any problem."""
    password = passphrase.encode("utf-8") if passphrase else None
    try:
        key = serialization.load_pem_private_key(data, password=password, **_LOAD_KEY_ARGS)
    except TypeError as exc:
        if "encrypted" in str(exc).lower() and not password:
            raise PkiError(f"{what} is encrypted; give its passphrase") from None
        raise PkiError(f"{what} is not encrypted but a passphrase was given; remove the passphrase") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        # OpenSSL 1.1/3.0 say "bad decrypt", cryptography >= 42 "Incorrect password, could not decrypt key".
        if password and any(words in str(exc).lower() for words in ("bad decrypt", "incorrect password")):
            raise PkiError(f"{what} could not be decrypted: wrong passphrase") from None
        raise PkiError(f"{what} is not a readable PEM private key") from None
    if isinstance(key, rsa.RSAPrivateKey) and not _rsa_pair_consistent(key):
        raise PkiError(f"{what} is a damaged RSA key (its private and public parts do not match)")
    return key


def public_key_bytes(key) -> bytes:
    """SubjectPublicKeyInfo DER of a private or public key: what 'same key' means."""
    public = key.public_key() if hasattr(key, "private_bytes") else key
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_pem(key) -> str:
    public = key.public_key() if hasattr(key, "private_bytes") else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_key_pem(data: str):
    return serialization.load_pem_public_key(data.encode("ascii"))


def _signature_hash(key):
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


# --------------------------------------------------------------------------------------------
# Certificates

_PEM_CERT_RE = re.compile(rb"-----BEGIN CERTIFICATE-----\s.+?-----END CERTIFICATE-----", re.DOTALL)


def load_certificate(data: bytes, what: str):
    certs = load_certificates(data, what)
    return certs[0]


def load_certificates(data: bytes | str, what: str) -> list:
    """Parse every PEM certificate in `data` (in file order); PkiError if none or one is corrupt."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    blocks = _PEM_CERT_RE.findall(data)
    if not blocks:
        raise PkiError(f"{what} holds no PEM certificate")
    certs = []
    for index, block in enumerate(blocks, start=1):
        try:
            certs.append(x509.load_pem_x509_certificate(block))
        except ValueError:
            raise PkiError(f"{what}: certificate #{index} is corrupt (not valid PEM/DER)") from None
    return certs


def certificate_to_pem(cert) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def not_before(cert) -> datetime.datetime:
    value = getattr(cert, "not_valid_before_utc", None)
    return value if value is not None else cert.not_valid_before.replace(tzinfo=datetime.timezone.utc)


def not_after(cert) -> datetime.datetime:
    value = getattr(cert, "not_valid_after_utc", None)
    return value if value is not None else cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)


def common_name(name) -> str | None:
    attributes = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attributes[0].value) if attributes else None


def _thumbprint(cert, algorithm) -> str:
    return cert.fingerprint(algorithm).hex().upper()


def format_time(value: datetime.datetime) -> str:
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def cert_info(cert) -> dict:
    """Facts about a certificate as DPS and humans show them (never key material)."""
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "common_name": common_name(cert.subject),
        "serial_number": format(cert.serial_number, "X"),
        "not_before": format_time(not_before(cert)),
        "not_after": format_time(not_after(cert)),
        "sha1_thumbprint": _thumbprint(cert, hashes.SHA1()),  # noqa: S303 - DPS identifies certs by SHA-1 thumbprint
        "sha256_thumbprint": _thumbprint(cert, hashes.SHA256()),
        "key_type": key_type_of(cert.public_key()),
    }


def issued_by(cert, issuer) -> bool:
    """True when `issuer`'s key signed `cert` and the names chain (works with cryptography 38)."""
    if cert.issuer != issuer.subject:
        return False
    public = issuer.public_key()
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def is_ca(cert) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def validity_problem(cert, what: str, now: datetime.datetime | None = None) -> str | None:
    now = now or utcnow()
    if now < not_before(cert):
        return f"{what} is not valid before {format_time(not_before(cert))}"
    if now > not_after(cert):
        return f"{what} expired on {format_time(not_after(cert))}"
    return None


def check_ca_pair(ca_cert, ca_key, what: str, now: datetime.datetime | None = None) -> None:
    """Refuse a CA that cannot sign: key/cert mismatch, not a CA, outside its validity."""
    if public_key_bytes(ca_key) != public_key_bytes(ca_cert.public_key()):
        raise PkiError(f"{what}: the CA key does not belong to the CA certificate; give the matching key")
    if not is_ca(ca_cert):
        raise PkiError(f"{what}: the certificate is not a CA (basicConstraints CA:FALSE); give the CA certificate")
    problem = validity_problem(ca_cert, f"{what}: the CA certificate", now)
    if problem:
        raise PkiError(f"{problem}; renew the CA")


# --------------------------------------------------------------------------------------------
# Issuing


def _name(common: str):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def build_csr(key, registration_id: str):
    """A CSR whose subject CN is the registration id (what DPS matches on)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(_name(registration_id))
    return builder.sign(key, _signature_hash(key))


def csr_to_pem(csr) -> str:
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def load_csr(data: str, what: str):
    try:
        csr = x509.load_pem_x509_csr(data.encode("ascii"))
    except ValueError:
        raise PkiError(f"{what}: the CSR is not valid PEM") from None
    if not csr.is_signature_valid:
        raise PkiError(f"{what}: the CSR signature does not verify")
    return csr


def _serial() -> int:
    return x509.random_serial_number()


def _key_usage(public_key, *, ca: bool):
    rsa_key = isinstance(public_key, rsa.RSAPublicKey)
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=rsa_key and not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def sign_device_certificate(
    public_key,
    registration_id: str,
    ca_cert,
    ca_key,
    valid_days: int,
    now: datetime.datetime | None = None,
):
    """Issue a TLS client certificate (CN = registration id) for `public_key`, signed by the CA."""
    now = now or utcnow()
    start = now - CLOCK_SKEW
    end = now + datetime.timedelta(days=valid_days)
    end = min(end, not_after(ca_cert))  # never outlive the issuer
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(registration_id))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(_serial())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(public_key, ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)
    )
    return builder.sign(ca_key, _signature_hash(ca_key))


def create_ca_certificate(
    key,
    common: str,
    valid_days: int,
    issuer_cert=None,
    issuer_key=None,
    path_length: int | None = None,
    now: datetime.datetime | None = None,
):
    """A self-signed root (no issuer given) or an intermediate signed by issuer_cert/issuer_key."""
    now = now or utcnow()
    signing_key = issuer_key if issuer_key is not None else key
    issuer_name = issuer_cert.subject if issuer_cert is not None else _name(common)
    issuer_public = issuer_cert.public_key() if issuer_cert is not None else key.public_key()
    end = now + datetime.timedelta(days=valid_days)
    if issuer_cert is not None:
        end = min(end, not_after(issuer_cert))
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(key.public_key(), ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public), critical=False)
    )
    return builder.sign(signing_key, _signature_hash(signing_key))


def create_verification_certificate(
    verification_code: str, ca_cert, ca_key, valid_days: int, now: datetime.datetime | None = None
):
    """Proof of possession for DPS: a leaf whose CN is the verification code, signed by the CA key."""
    now = now or utcnow()
    key = ec.generate_private_key(ec.SECP256R1())  # thrown away: only the CA signature matters
    end = min(now + datetime.timedelta(days=valid_days), not_after(ca_cert))
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(verification_code))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)
    )
    return builder.sign(ca_key, _signature_hash(ca_key))


# --------------------------------------------------------------------------------------------
# Decisions


def device_cert_reissue_reasons(
    cert_pem: str | None,
    public_key,
    ca_cert,
    registration_id: str,
    renew_before_days: int,
    now: datetime.datetime | None = None,
) -> list[str]:
    """Every reason the device certificate must be (re-)issued; empty when it is good.

    Each reason is '<code>: <detail>' with code one of missing, unparseable, key_mismatch,
    key_type_changed, issuer_mismatch, cn_mismatch, not_yet_valid, expired, renewal_window.
    """
    now = now or utcnow()
    if cert_pem is None:
        return ["missing: no certificate at the path"]
    try:
        cert = load_certificate(cert_pem.encode("utf-8"), "the existing certificate")
    except PkiError:
        return ["unparseable: the existing file is not a PEM certificate"]
    reasons = []
    cert_key = cert.public_key()
    if public_key_bytes(cert_key) != public_key_bytes(public_key):
        if key_type_of(cert_key) != key_type_of(public_key):
            reasons.append(
                f"key_type_changed: certificate holds a {key_type_of(cert_key)} key, the device key is "
                f"{key_type_of(public_key)}"
            )
        else:
            reasons.append("key_mismatch: certificate was issued for another key")
    if not issued_by(cert, ca_cert):
        reasons.append(f"issuer_mismatch: issued by '{cert.issuer.rfc4514_string()}', not by the given CA")
    cn = common_name(cert.subject)
    if cn != registration_id:
        reasons.append(f"cn_mismatch: certificate CN is '{cn}', registration id is '{registration_id}'")
    if now < not_before(cert):
        reasons.append(f"not_yet_valid: valid from {format_time(not_before(cert))}")
    if now >= not_after(cert):
        reasons.append(f"expired: expired on {format_time(not_after(cert))}")
    elif now + datetime.timedelta(days=renew_before_days) >= not_after(cert):
        reasons.append(
            f"renewal_window: expires {format_time(not_after(cert))}, within renew_before={renew_before_days} days"
        )
    return reasons


def order_chain(leaf, ca_certs: list, root, now: datetime.datetime | None = None) -> tuple[list, list]:
    """Order certificates leaf -> intermediates -> root, verifying each link and validity window.

    Returns (chain, unused): chain starts with `leaf` and ends with `root`; `unused` are given
    certificates that are not on the path. Raises PkiError when no complete path exists.
    """
    now = now or utcnow()
    root_der = root.public_bytes(serialization.Encoding.DER)
    if not is_ca(root) or not issued_by(root, root):
        raise PkiError(f"root certificate '{root.subject.rfc4514_string()}' is not a self-signed CA certificate")
    pool = []
    for cert in ca_certs:
        der = cert.public_bytes(serialization.Encoding.DER)
        if der != root_der and all(der != c.public_bytes(serialization.Encoding.DER) for c in pool):
            pool.append(cert)
    chain = [leaf]
    current = leaf
    while not issued_by(current, root):
        parent = next((c for c in pool if c not in chain and is_ca(c) and issued_by(current, c)), None)
        if parent is None:
            raise PkiError(
                f"no certificate given signed '{current.subject.rfc4514_string()}' (its issuer is "
                f"'{current.issuer.rfc4514_string()}'), so the chain does not reach the root "
                f"'{root.subject.rfc4514_string()}'; add the missing intermediate or give the right root"
            )
        chain.append(parent)
        current = parent
        if len(chain) > 10:
            raise PkiError("chain is longer than 10 certificates; check the certificates given")
    chain.append(root)
    for cert in chain:
        problem = validity_problem(cert, f"certificate '{cert.subject.rfc4514_string()}'", now)
        if problem:
            raise PkiError(problem)
    unused = [c for c in pool if c not in chain]
    return chain, unused
