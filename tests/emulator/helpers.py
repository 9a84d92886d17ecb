"""The emulator tests' PKI (the shared builder, tests/support/pki.py, plus the CAs these tests need), enrollment
file text, and a tiny DPS client written for these tests (independent of the collection)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import requests
from dps_emulator.testing import Emulator

from tests.support.pki import Pki

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


class EmulatorPki(Pki):
    """root -> intermediate (the shared test PKI), plus an unrelated root, a root never verified, and a root
    uploaded verified whose intermediate reaches groups only through the service API's signingCertificates.
    The enrollment file (config_text) names root.pem, unverified-root.pem and api-root.pem."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.other_root = self.ca("Unrelated Root CA", filename="other-root.pem")
        self.unverified_root = self.ca("Unverified Root CA", filename="unverified-root.pem")
        self.api_root = self.ca("API Root CA", filename="api-root.pem")
        self.api_intermediate = self.ca("API Intermediate CA", issuer=self.api_root)


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
    key = base64.b64decode(key_b64)
    return signed_sas_token(
        registration_id, lambda data: hmac.new(key, data, hashlib.sha256).digest(), expiry, variant, skn
    )


def signed_sas_token(
    registration_id: str,
    sign: Callable[[bytes], bytes],
    expiry: int | None = None,
    variant: str = "encoded",
    skn=True,
) -> str:
    """A registration SAS token whose HMAC-SHA256 `sign` computes (in a TPM, for TPM attestation)."""
    resource = f"{ID_SCOPE}/registrations/{registration_id}"
    encoded = urllib.parse.quote(resource, safe="")
    expiry = expiry if expiry is not None else int(time.time()) + 3600
    signed = {"encoded": encoded, "raw": resource, "lower": encoded.replace("%2F", "%2f")}[variant]
    digest = sign(f"{signed}\n{expiry}".encode())
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

    def register(self, registration_id: str, payload=None, tpm: dict | None = None, **kwargs) -> requests.Response:
        """PUT register; `tpm` adds {endorsementKey, storageRootKey} (base64) as TPM devices send them."""
        body = {"registrationId": registration_id}
        if payload is not None:
            body["payload"] = payload
        if tpm is not None:
            body["tpm"] = tpm
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

    def provision(self, registration_id: str, payload=None, deadline: float = 10.0, tpm: dict | None = None) -> dict:
        """PUT register then poll until the operation is done; return the final operation body."""
        response = self.register(registration_id, payload, tpm=tpm)
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
