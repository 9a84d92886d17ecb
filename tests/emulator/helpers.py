"""Test PKI, enrollment file text and a tiny DPS client written for these tests (independent of the collection)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dps_emulator.testing import Emulator

ID_SCOPE = "0ne00EMUL01"
API_VERSION = "2021-06-01"
GROUP_KEY = base64.b64encode(b"group-key-0123456789abcdef-group!").decode()
DISABLED_GROUP_KEY = base64.b64encode(b"disabled-group-key-0123456789abcd").decode()
INDIVIDUAL_KEY = base64.b64encode(b"individual-key-0123456789abcdef!!").decode()
SERVICE_HOST = "dps-emul.azure-devices-provisioning.net"
OWNER_KEY = base64.b64encode(b"owner-policy-primary-key-0123456789abcdef").decode()
OWNER_SECONDARY_KEY = base64.b64encode(b"owner-policy-secondary-key-0123456789abcd").decode()
READER_KEY = base64.b64encode(b"enrollment-read-policy-key-0123456789abc").decode()
REGISTRATION_READER_KEY = base64.b64encode(b"registration-read-policy-key-0123456789").decode()
SERVICE_API_VERSION = "2021-10-01"
NOW = datetime.datetime.now(datetime.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(
    cn: str,
    issuer_cert: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey | None,
    ca: bool,
    key: ec.EllipticCurvePrivateKey | None = None,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_cert.subject if issuer_cert else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - datetime.timedelta(days=1))
        .not_valid_after(not_after or NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return cert, key


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class DeviceCert:
    cert: x509.Certificate
    chain_file: str  # leaf + intermediate
    leaf_file: str  # leaf only
    key_file: str

    def full(self) -> tuple[str, str]:
        return (self.chain_file, self.key_file)

    def leaf_only(self) -> tuple[str, str]:
        return (self.leaf_file, self.key_file)


class Pki:
    """root -> intermediate -> device leafs, plus an unrelated root."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.root, self.root_key = make_cert("Test Root CA", None, None, ca=True)
        self.intermediate, self.intermediate_key = make_cert("Test Intermediate CA", self.root, self.root_key, ca=True)
        self.other_root, self.other_root_key = make_cert("Unrelated Root CA", None, None, ca=True)
        self.unverified_root, self.unverified_root_key = make_cert("Unverified Root CA", None, None, ca=True)
        # uploaded through the config's `certificates` (verified); its intermediate is given to groups through the
        # service API's signingCertificates only
        self.api_root, self.api_root_key = make_cert("API Root CA", None, None, ca=True)
        self.api_intermediate, self.api_intermediate_key = make_cert(
            "API Intermediate CA", self.api_root, self.api_root_key, ca=True
        )
        (directory / "api-root.pem").write_bytes(pem(self.api_root))
        (directory / "unverified-root.pem").write_bytes(pem(self.unverified_root))
        (directory / "root.pem").write_bytes(pem(self.root))
        (directory / "intermediate.pem").write_bytes(pem(self.intermediate))
        (directory / "other-root.pem").write_bytes(pem(self.other_root))

    def device(self, cn: str, issuer: str = "intermediate", **validity: datetime.datetime) -> DeviceCert:
        if issuer == "intermediate":
            issuer_cert, issuer_key, chain_extra = self.intermediate, self.intermediate_key, [self.intermediate]
        elif issuer == "api":
            issuer_cert, issuer_key, chain_extra = (
                self.api_intermediate,
                self.api_intermediate_key,
                [self.api_intermediate],
            )
        elif issuer == "other":
            issuer_cert, issuer_key, chain_extra = self.other_root, self.other_root_key, []
        elif issuer == "unverified":
            issuer_cert, issuer_key, chain_extra = self.unverified_root, self.unverified_root_key, []
        elif issuer == "forged":
            # claims the intermediate as issuer but is signed by an unrelated key
            issuer_cert, issuer_key, chain_extra = (
                self.intermediate,
                ec.generate_private_key(ec.SECP256R1()),
                [self.intermediate],
            )
        else:
            raise ValueError(issuer)
        cert, key = make_cert(cn, issuer_cert, issuer_key, ca=False, **validity)
        stem = self.dir / f"{cn}.{issuer}"
        Path(f"{stem}.chain.pem").write_bytes(pem(cert) + b"".join(pem(extra) for extra in chain_extra))
        Path(f"{stem}.leaf.pem").write_bytes(pem(cert))
        Path(f"{stem}.key").write_bytes(key_pem(key))
        return DeviceCert(cert, f"{stem}.chain.pem", f"{stem}.leaf.pem", f"{stem}.key")


def config_text(individual_cert: str, disabled_cert: str, retry_after: int = 1, extra: str = "") -> str:
    return f"""\
id_scope: {ID_SCOPE}
linked_hubs:
  - hub-a.azure-devices.net
  - hub-b.azure-devices.net
defaults:
  assignment_delay: 0.3
  retry_after: {retry_after}
service_host: {SERVICE_HOST}
shared_access_policies:
  - name: provisioningserviceowner
    primary_key: {OWNER_KEY}
    secondary_key: {OWNER_SECONDARY_KEY}
    rights: [ServiceConfig, EnrollmentRead, EnrollmentWrite, RegistrationStatusRead, RegistrationStatusWrite]
  - name: enrollmentread
    primary_key: {READER_KEY}
    rights: EnrollmentRead
  - name: registrationread
    primary_key: {REGISTRATION_READER_KEY}
    rights: [RegistrationStatusRead]
certificates:
  - name: api-root
    certificate: api-root.pem
    verified: true
  - name: unverified-upload
    certificate: unverified-root.pem
    verified: false
enrollment_groups:
  - name: fleet-x509
    attestation: x509
    ca_cert: root.pem
    verified: true
    iot_hub: hub-a.azure-devices.net
  - name: fleet-unverified
    attestation: x509
    ca_cert: unverified-root.pem
    verified: false
  - name: fleet-sym
    attestation: symmetric_key
    primary_key: {GROUP_KEY}
  - name: fleet-sym-disabled
    attestation: symmetric_key
    primary_key: {DISABLED_GROUP_KEY}
    provisioning_status: disabled
individual_enrollments:
  - registration_id: dev-individual-1
    attestation: x509
    cert: {individual_cert}
    iot_hub: hub-b.azure-devices.net
  - registration_id: dev-disabled
    attestation: x509
    cert: {disabled_cert}
    provisioning_status: disabled
  - registration_id: sym-individual-1
    attestation: symmetric_key
    primary_key: {INDIVIDUAL_KEY}
{extra}"""


# --- a tiny DPS client written for these tests (independent of the collection's client) ---------------------
def sas_token(registration_id: str, key_b64: str, expiry: int | None = None, variant: str = "encoded", skn=True) -> str:
    resource = f"{ID_SCOPE}/registrations/{registration_id}"
    encoded = urllib.parse.quote(resource, safe="")
    expiry = expiry if expiry is not None else int(time.time()) + 3600
    signed = {"encoded": encoded, "raw": resource, "lower": encoded.replace("%2F", "%2f")}[variant]
    digest = hmac.new(base64.b64decode(key_b64), f"{signed}\n{expiry}".encode(), hashlib.sha256).digest()
    signature = urllib.parse.quote(base64.b64encode(digest).decode(), safe="")
    token = f"SharedAccessSignature sr={encoded}&sig={signature}&se={expiry}"
    return token + "&skn=registration" if skn else token


def derived_key(group_key_b64: str, registration_id: str) -> str:
    digest = hmac.new(base64.b64decode(group_key_b64), registration_id.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class Client:
    def __init__(self, emulator: Emulator, cert: tuple[str, str] | None = None, sas: str | None = None) -> None:
        self.emulator = emulator
        self.cert = cert
        self.headers = {"Content-Type": "application/json; charset=utf-8", "Content-Encoding": "utf-8"}
        if sas:
            self.headers["Authorization"] = sas

    def url(self, path: str, api_version: str = API_VERSION, scope: str = ID_SCOPE) -> str:
        return f"{self.emulator.url}/{scope}/registrations/{path}?api-version={api_version}"

    def register(self, registration_id: str, payload=None, **kwargs) -> requests.Response:
        body = {"registrationId": registration_id}
        if payload is not None:
            body["payload"] = payload
        return requests.put(
            self.url(f"{registration_id}/register", **kwargs),
            json=body,
            headers=self.headers,
            cert=self.cert,
            verify=self.emulator.ca_cert,
            timeout=10,
        )

    def operation(self, registration_id: str, operation_id: str) -> requests.Response:
        return requests.get(
            self.url(f"{registration_id}/operations/{operation_id}"),
            headers=self.headers,
            cert=self.cert,
            verify=self.emulator.ca_cert,
            timeout=10,
        )

    def status(self, registration_id: str) -> requests.Response:
        return requests.post(
            self.url(registration_id),
            json={"registrationId": registration_id},
            headers=self.headers,
            cert=self.cert,
            verify=self.emulator.ca_cert,
            timeout=10,
        )

    def provision(self, registration_id: str, payload=None, deadline: float = 10.0) -> dict:
        """PUT register then poll until the operation is done; return the final operation body."""
        response = self.register(registration_id, payload)
        assert response.status_code == 202, response.text
        assert response.headers["Content-Type"].startswith("application/json")
        assert int(response.headers["Retry-After"]) >= 1
        operation_id = response.json()["operationId"]
        assert response.json()["status"] == "assigning"
        assert operation_id in response.headers["Location"]
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            polled = self.operation(registration_id, operation_id)
            if polled.status_code == 200:
                return polled.json()
            assert polled.status_code == 202, polled.text
            assert polled.json()["status"] == "assigning"
            assert "Retry-After" in polled.headers
            time.sleep(0.1)
        raise AssertionError(f"{registration_id} not assigned within {deadline} s")


# --- a tiny DPS service API client written for these tests (SAS signing from the Azure docs, not the collection) -
def service_sas(
    resource: str,
    policy: str,
    key_b64: str,
    expiry: int | None = None,
    variant: str = "encoded",
) -> str:
    """SharedAccessSignature sr=<url-encoded lower-case resource>&sig=...&se=...&skn=<policy>."""
    resource = resource.lower()
    encoded = urllib.parse.quote(resource, safe="")
    expiry = expiry if expiry is not None else int(time.time()) + 3600
    signed = {"encoded": encoded, "raw": resource, "lower": encoded.replace("%3A", "%3a").replace("%2F", "%2f")}
    digest = hmac.new(base64.b64decode(key_b64), f"{signed[variant]}\n{expiry}".encode(), hashlib.sha256).digest()
    signature = urllib.parse.quote(base64.b64encode(digest).decode(), safe="")
    return f"SharedAccessSignature sr={encoded}&sig={signature}&se={expiry}&skn={policy}"


class ServiceClient:
    """Calls the service API of an emulator, signed for the host:port it connects to (or `resource`)."""

    def __init__(
        self,
        emulator: Emulator,
        policy: str = "provisioningserviceowner",
        key: str = OWNER_KEY,
        resource: str | None = None,
        authorization: str | None = None,
    ) -> None:
        self.emulator = emulator
        self.policy = policy
        self.key = key
        self.resource = resource or f"{emulator.host}:{emulator.port}"
        self.authorization = authorization

    def request(
        self,
        method: str,
        path: str,
        body=None,
        headers: dict[str, str] | None = None,
        api_version: str | None = SERVICE_API_VERSION,
    ) -> requests.Response:
        all_headers = {"Content-Type": "application/json; charset=utf-8"}
        all_headers["Authorization"] = self.authorization or service_sas(self.resource, self.policy, self.key)
        all_headers.update(headers or {})
        url = self.emulator.url + path + (f"?api-version={api_version}" if api_version else "")
        return requests.request(
            method,
            url,
            json=body,
            headers=all_headers,
            verify=self.emulator.ca_cert,
            timeout=10,
        )

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def put(self, path: str, body, if_match: str | None = None, **kwargs) -> requests.Response:
        headers = {"If-Match": if_match} if if_match is not None else {}
        return self.request("PUT", path, body, headers=headers, **kwargs)

    def delete(self, path: str, if_match: str | None = None, **kwargs) -> requests.Response:
        headers = {"If-Match": if_match} if if_match is not None else {}
        return self.request("DELETE", path, headers=headers, **kwargs)

    def post(self, path: str, body=None, headers: dict[str, str] | None = None, **kwargs) -> requests.Response:
        return self.request("POST", path, body, headers=headers, **kwargs)


def symmetric_group(group_id: str, primary_key: str | None = None, **fields) -> dict:
    attestation: dict = {"type": "symmetricKey"}
    if primary_key:
        attestation["symmetricKey"] = {"primaryKey": primary_key}
    return {"enrollmentGroupId": group_id, "attestation": attestation, **fields}


def symmetric_individual(registration_id: str, primary_key: str | None = None, **fields) -> dict:
    attestation: dict = {"type": "symmetricKey"}
    if primary_key:
        attestation["symmetricKey"] = {"primaryKey": primary_key}
    return {"registrationId": registration_id, "attestation": attestation, **fields}


def pem_text(cert: x509.Certificate) -> str:
    return pem(cert).decode("ascii")
