"""The one test PKI builder: keys, CA and device certificates, PEM files.

Written with `cryptography` only and independent of the collection's own PKI code (plugins/module_utils/_pki.py),
so a bug there cannot hide itself in the tests, and the DPS emulator's tests can use it too.

    pki = Pki(tmp_path)                              # root -> intermediate, root.pem / intermediate.pem / .key
    device = pki.device("pi-0042")                   # key + leaf signed by the intermediate, + chain/leaf/key files
    other = pki.ca("Other Root CA")                  # another (self-signed) CA, or pki.ca(name, issuer=pki.root)
    expired = issue("old", pki.intermediate, not_after=-DAY)
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

DAY = datetime.timedelta(days=1)
MINUTE = datetime.timedelta(minutes=1)
PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER


_CURVES = {"ec-p256": ec.SECP256R1, "ec-p384": ec.SECP384R1}


def new_key(key_type: str = "ec-p256"):
    """A private key: ec-p256, ec-p384 or rsa-<bits>."""
    if key_type in _CURVES:
        return ec.generate_private_key(_CURVES[key_type]())
    return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type.removeprefix("rsa-")))


def distinguished_name(common_name: str | None = None, organisation: str | None = None) -> x509.Name:
    """A distinguished name; with common_name None, one without a CN."""
    attributes = []
    if organisation is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation))
    if common_name is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def key_pem(key) -> bytes:
    """A private key as unencrypted PKCS#8 PEM (what IoT Edge and the modules read)."""
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: object

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(PEM)

    @property
    def pem_text(self) -> str:
        return self.pem.decode("ascii")

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(DER)

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)

    @property
    def sha1(self) -> str:
        """Upper-case hex SHA-1 thumbprint, as DPS shows it."""
        return self.cert.fingerprint(hashes.SHA1()).hex().upper()

    @property
    def sha256(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex().upper()

    @property
    def self_signed(self) -> bool:
        return self.cert.issuer == self.cert.subject


def _when(value: datetime.datetime | datetime.timedelta, now: datetime.datetime) -> datetime.datetime:
    return now + value if isinstance(value, datetime.timedelta) else value


def issue(
    subject: str | x509.Name,
    issuer: Issued | None = None,
    *,
    ca: bool = False,
    key=None,
    key_type: str = "ec-p256",
    signing_key=None,
    not_before: datetime.datetime | datetime.timedelta = -5 * MINUTE,
    not_after: datetime.datetime | datetime.timedelta = 30 * DAY,
) -> Issued:
    """A certificate for `subject` (a CN or a Name), signed by `issuer` (self-signed when None).

    Validity is given as datetimes or as offsets from now. `signing_key` signs instead of the issuer's key (a forged
    certificate that names a real issuer). A CA gets basicConstraints CA:TRUE, keyCertSign and a subject key id,
    a leaf CA:FALSE.
    """
    key = key or new_key(key_type)
    subject_name = subject if isinstance(subject, x509.Name) else distinguished_name(subject)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject_name)
        .issuer_name(issuer.cert.subject if issuer is not None else subject_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_when(not_before, now))
        .not_valid_after(_when(not_after, now))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    signer = signing_key or (issuer.key if issuer is not None else key)
    return Issued(builder.sign(signer, hashes.SHA256()), key)


@dataclass(frozen=True)
class Device:
    """A device certificate and its files: the chain (leaf + the CAs below the root), the leaf alone, the key."""

    issued: Issued
    chain_file: str
    leaf_file: str
    key_file: str

    @property
    def cert(self) -> x509.Certificate:
        return self.issued.cert

    @property
    def sha256(self) -> str:
        return self.issued.sha256

    def full(self) -> tuple[str, str]:
        """(certificate file, key file) for a TLS client that sends the full chain."""
        return (self.chain_file, self.key_file)

    def leaf_only(self) -> tuple[str, str]:
        """(certificate file, key file) for a TLS client that sends only its own certificate."""
        return (self.leaf_file, self.key_file)

    def files(self) -> dict[str, str]:
        """The file paths as playbook variables: {chain, leaf, key}."""
        return {"chain": self.chain_file, "leaf": self.leaf_file, "key": self.key_file}


class Pki:
    """A root CA and an intermediate CA signed by it, written to `directory`:
    root.pem, intermediate.pem and intermediate.key (0600)."""

    def __init__(self, directory: Path, label: str = "Test") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.root = issue(f"{label} Root CA", ca=True, not_after=3650 * DAY)
        self.intermediate = issue(f"{label} Intermediate CA", self.root, ca=True, not_after=1825 * DAY)
        self.root_path = self.write("root.pem", self.root)
        self.intermediate_path = self.write("intermediate.pem", self.intermediate)
        self.intermediate_key_path = self.write_key("intermediate.key", self.intermediate)

    def write(self, filename: str, *certificates: Issued) -> Path:
        """Write certificates (PEM, in order) to `directory/filename`."""
        path = self.directory / filename
        path.write_bytes(b"".join(item.pem for item in certificates))
        return path

    def write_key(self, filename: str, issued: Issued) -> Path:
        path = self.directory / filename
        path.write_bytes(issued.key_pem)
        path.chmod(0o600)
        return path

    def ca(self, common_name: str, issuer: Issued | None = None, filename: str | None = None) -> Issued:
        """Another CA (self-signed without `issuer`), written to `filename` when given."""
        made = issue(common_name, issuer, ca=True, not_after=1825 * DAY)
        if filename:
            self.write(filename, made)
        return made

    def device(
        self,
        registration_id: str,
        *,
        cn: str | None = None,
        issuer: Issued | None = None,
        chain: list[Issued] | None = None,
        signing_key=None,
        not_before: datetime.datetime | datetime.timedelta = -5 * MINUTE,
        not_after: datetime.datetime | datetime.timedelta = 30 * DAY,
    ) -> Device:
        """A device key and certificate (CN = `cn` or the registration id), issued by the intermediate or `issuer`.

        The chain file holds the leaf, then `chain` (default: the issuer, unless it is a self-signed root).
        Files: <registration id>.chain.pem, .leaf.pem, .key.pem (0600).
        """
        issuer = issuer or self.intermediate
        issued = issue(
            cn or registration_id, issuer, signing_key=signing_key, not_before=not_before, not_after=not_after
        )
        above = chain if chain is not None else ([] if issuer.self_signed else [issuer])
        chain_path = self.write(f"{registration_id}.chain.pem", issued, *above)
        leaf_path = self.write(f"{registration_id}.leaf.pem", issued)
        key_path = self.write_key(f"{registration_id}.key.pem", issued)
        return Device(issued, str(chain_path), str(leaf_path), str(key_path))
