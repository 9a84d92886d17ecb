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


def same_certificate(one: x509.Certificate, other: x509.Certificate) -> bool:
    """The same CA: same subject and same public key (a re-issued CA certificate counts as the same CA)."""
    if one.subject != other.subject:
        return False
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return one.public_key().public_bytes(serialization.Encoding.DER, spki) == other.public_key().public_bytes(
        serialization.Encoding.DER, spki
    )


def self_signed(cert: x509.Certificate) -> bool:
    return issued_by(cert, cert) is True


@dataclass
class ChainMatch:
    """Result of walking a presented chain towards the enrollment groups' CAs."""

    group: Any | None  # the Enrollment that matched
    signing_cert: x509.Certificate | None  # the certificate that signed the leaf (for signingCertificateInfo)
    problem: str | None  # why nothing matched


def match_group(
    leaf: x509.Certificate,
    presented: list[x509.Certificate],
    groups: list[Any],
    verified: list[x509.Certificate],
) -> ChainMatch:
    """The enrollment group a device certificate belongs to, by Microsoft's X.509 group rule.

    The chain is built from the leaf through the certificates the client *presented* (like DPS), and may end with
    one certificate DPS already has - an uploaded CA or a group's CA - that signed the last presented one. The
    chain must reach a CA verified by proof of possession (`verified`); a group CA (e.g. an intermediate in a
    group's signingCertificates) need not be verified itself when a verified CA sits above it in that chain. The
    group whose CA signed the certificate nearest the leaf wins. A leaf sent alone therefore reaches only a CA
    that signed it directly, and only if that CA is verified.
    """

    def is_verified(cert: x509.Certificate) -> bool:
        return any(same_certificate(cert, ca) for ca in verified)

    x509_groups = [group for group in groups if group.attestation == "x509" and group.ca_certs]
    bad_signature: str | None = None
    path = [leaf]
    remaining = [cert for cert in presented if cert != leaf]
    current = leaf
    for _depth in range(10):
        if self_signed(current):
            break
        parent = None
        for candidate in remaining:
            verdict = issued_by(current, candidate)
            if verdict is False:
                bad_signature = bad_signature or (
                    f"signature of '{_name(current.subject)}' does not verify with the presented issuer "
                    f"'{_name(candidate.subject)}'"
                )
            elif verdict:
                parent = candidate
                break
        if parent is None:
            break
        problem = validity_problem(parent, "intermediate certificate")
        if problem:
            return ChainMatch(None, None, problem)
        path.append(parent)
        remaining.remove(parent)
        current = parent
    presented_length = len(path)
    if not self_signed(current):
        # one more step with a certificate DPS holds: a verified CA first, then any group CA
        known = [(ca, True) for ca in verified] + [(ca, False) for group in x509_groups for ca in group.ca_certs]
        for candidate, _is_verified in sorted(known, key=lambda item: not item[1]):
            verdict = issued_by(current, candidate)
            if verdict is False:
                bad_signature = bad_signature or (
                    f"signature of '{_name(current.subject)}' does not verify with the CA '{_name(candidate.subject)}'"
                )
            elif verdict:
                problem = validity_problem(candidate, "CA certificate")
                if problem:
                    return ChainMatch(None, None, problem)
                path.append(candidate)
                break
    verified_at = [index for index, cert in enumerate(path) if index > 0 and is_verified(cert)]
    unverified: tuple[Any, x509.Certificate] | None = None
    for index, cert in enumerate(path):
        for group in x509_groups:
            for ca in group.ca_certs:
                if same_certificate(cert, ca):
                    continue  # a CA does not sign itself into its own group
                verdict = issued_by(cert, ca)
                if verdict is False:
                    bad_signature = bad_signature or (
                        f"signature of '{_name(cert.subject)}' does not verify with the CA of {group.label}"
                    )
                    continue
                if not verdict:
                    continue
                if not (is_verified(ca) or any(position > index for position in verified_at)):
                    unverified = unverified or (group, ca)
                    continue
                problem = validity_problem(ca, "CA certificate")
                if problem:
                    return ChainMatch(None, None, problem)
                return ChainMatch(group, path[1] if len(path) > 1 else ca, None)
    if bad_signature:
        return ChainMatch(None, None, bad_signature)
    if unverified is not None:
        group, ca = unverified
        return ChainMatch(
            None,
            None,
            f"CA certificate '{_name(ca.subject)}' of {group.label} is not verified (proof of possession) and the "
            "presented chain reaches no verified CA above it; send the full chain (leaf + intermediates) up to a "
            "verified CA",
        )
    if presented_length == 1:
        return ChainMatch(
            None,
            None,
            f"CA certificate not found for issuer '{_name(leaf.issuer)}' - no enrollment group CA signed the "
            "device certificate and the client sent no intermediate; send the full chain (leaf + intermediates)",
        )
    top = path[-1]
    top_name = top.subject if self_signed(top) else top.issuer
    return ChainMatch(
        None,
        None,
        f"CA certificate not found: the presented chain ends at '{_name(top_name)}', "
        "which is not the CA of any enrollment group",
    )
