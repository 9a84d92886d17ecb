"""Certificates: the emulator's own TLS identity, certificate facts for DPS answers, chain checks."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_CA_CERT = "server-ca.pem"
SERVER_CA_KEY = "server-ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def iso_utc(moment: datetime.datetime) -> str:
    """DPS-style timestamp, e.g. 2024-05-01T10:00:00.123456Z."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _write_private(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def ensure_server_identity(state_dir: Path, hosts: list[str]) -> tuple[Path, Path, Path]:
    """Create (or reuse) a server CA in state_dir and issue a server cert for `hosts`.

    Returns (server cert chain PEM, server key PEM, CA cert PEM). The CA survives restarts, so clients that
    trust it keep working; the server certificate is re-issued on every start with the SANs asked for.
    """
    ca_cert_path = state_dir / SERVER_CA_CERT
    ca_key_path = state_dir / SERVER_CA_KEY
    now = utcnow()
    ca_cert = ca_key = None
    if ca_cert_path.exists() and ca_key_path.exists():
        try:
            ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
            ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
            if ca_cert.not_valid_after_utc < now + datetime.timedelta(days=1):
                ca_cert = ca_key = None
        except ValueError:
            ca_cert = ca_key = None
    if ca_cert is None or ca_key is None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "DPS emulator local CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(
            ca_key_path,
            ca_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            0o600,
        )
        _write_private(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key_path = state_dir / SERVER_KEY
    server_cert_path = state_dir / SERVER_CERT
    _write_private(
        server_key_path,
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        0o600,
    )
    _write_private(
        server_cert_path,
        server_cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM),
        0o644,
    )
    return server_cert_path, server_key_path, ca_cert_path


def thumbprints(cert: x509.Certificate) -> tuple[str, str]:
    der = cert.public_bytes(serialization.Encoding.DER)
    return hashlib.sha1(der).hexdigest().upper(), hashlib.sha256(der).hexdigest().upper()  # noqa: S324


def _name(name: x509.Name) -> str:
    # .NET (what DPS runs on) prints names most-specific first: "CN=dev1, O=Example"
    return ", ".join(attribute.rfc4514_string() for attribute in reversed(list(name)))


def certificate_info(cert: x509.Certificate) -> dict[str, Any]:
    """X509CertificateInfo as DPS reports it."""
    sha1, sha256 = thumbprints(cert)
    return {
        "subjectName": _name(cert.subject),
        "sha1Thumbprint": sha1,
        "sha256Thumbprint": sha256,
        "issuerName": _name(cert.issuer),
        "notBeforeUtc": iso_utc(cert.not_valid_before_utc),
        "notAfterUtc": iso_utc(cert.not_valid_after_utc),
        "serialNumber": format(cert.serial_number, "X"),
        "version": cert.version.value + 1,
    }


def common_name(cert: x509.Certificate) -> str | None:
    attributes = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attributes:
        return None
    value = attributes[0].value
    return value if isinstance(value, str) else value.decode("utf-8", errors="replace")


def validity_problem(cert: x509.Certificate, what: str) -> str | None:
    now = utcnow()
    if now < cert.not_valid_before_utc:
        return f"{what} '{_name(cert.subject)}' is not valid before {iso_utc(cert.not_valid_before_utc)}"
    if now > cert.not_valid_after_utc:
        return f"{what} '{_name(cert.subject)}' expired at {iso_utc(cert.not_valid_after_utc)}"
    return None


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool | None:
    """True if `issuer` signed `cert`; False on a bad signature; None if the names do not even match."""
    if cert.issuer != issuer.subject:
        return None
    try:
        cert.verify_directly_issued_by(issuer)
    except InvalidSignature:
        return False
    except (ValueError, TypeError):
        return False
    return True


@dataclass
class ChainMatch:
    """Result of walking a presented chain towards the configured group CAs."""

    group: Any | None  # the Enrollment that matched
    signing_cert: x509.Certificate | None  # the certificate that signed the leaf (for signingCertificateInfo)
    problem: str | None  # why nothing matched


def match_group(leaf: x509.Certificate, presented: list[x509.Certificate], groups: list[Any]) -> ChainMatch:
    """Walk leaf -> presented intermediates; the group whose CA signed the nearest certificate wins.

    Only the certificates the client sent are used to build the path (like DPS): a configured root reached only
    through an intermediate the client did not send is not found.
    """
    x509_groups = [group for group in groups if group.attestation == "x509" and group.ca_cert is not None]
    current = leaf
    signing_cert: x509.Certificate | None = None
    unverified: list[str] = []
    bad_signature: str | None = None
    remaining = [cert for cert in presented if cert != leaf]
    for _depth in range(10):
        for group in x509_groups:
            verdict = issued_by(current, group.ca_cert)
            if verdict is False:
                # two CAs may share a name: remember the failure, another group may still match
                bad_signature = bad_signature or (
                    f"signature of '{_name(current.subject)}' does not verify with the CA of {group.label}"
                )
                continue
            if verdict and not group.verified:
                unverified.append(group.label)
                continue
            if verdict:
                problem = validity_problem(group.ca_cert, "CA certificate")
                if problem:
                    return ChainMatch(None, None, problem)
                return ChainMatch(group, signing_cert or group.ca_cert, None)
        parent = None
        for candidate in remaining:
            verdict = issued_by(current, candidate)
            if verdict is False:
                bad_signature = bad_signature or (
                    f"signature of '{_name(current.subject)}' does not verify with the presented issuer "
                    f"'{_name(candidate.subject)}'"
                )
            if verdict:
                parent = candidate
                break
        if parent is None:
            break
        problem = validity_problem(parent, "intermediate certificate")
        if problem:
            return ChainMatch(None, None, problem)
        if signing_cert is None:
            signing_cert = parent
        remaining.remove(parent)
        current = parent
    if bad_signature:
        return ChainMatch(None, None, bad_signature)
    if unverified:
        return ChainMatch(None, None, f"CA certificate of {unverified[0]} is not verified (proof of possession)")
    if current is leaf:
        return ChainMatch(
            None,
            None,
            f"CA certificate not found for issuer '{_name(leaf.issuer)}' - no enrollment group CA signed the "
            "device certificate and the client sent no intermediate; send the full chain (leaf + intermediates)",
        )
    top = current.subject if current.issuer == current.subject else current.issuer
    return ChainMatch(
        None,
        None,
        f"CA certificate not found: the presented chain ends at '{_name(top)}', "
        "which is not the CA of any enrollment group",
    )
