"""Shared access signatures, written from the DPS docs (not from any client): device registration and service API."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
import urllib.parse
from dataclasses import dataclass


class SasError(ValueError):
    """The Authorization header is malformed, expired or does not verify."""


@dataclass
class SasToken:
    resource: str  # decoded sr
    resource_as_sent: str  # sr exactly as it appeared in the header
    signature: bytes
    expiry: int
    key_name: str | None


def derive_device_key(group_key: bytes, registration_id: str) -> bytes:
    """Enrollment-group device key: HMAC-SHA256(groupKey, utf8(registrationId)) (raw bytes, not base64)."""
    return hmac.new(group_key, registration_id.encode("utf-8"), hashlib.sha256).digest()


def parse_sas(header: str) -> SasToken:
    prefix = "SharedAccessSignature "
    if not header.startswith(prefix):
        raise SasError("Authorization header must start with 'SharedAccessSignature '")
    fields_as_sent: dict[str, str] = {}
    for part in header[len(prefix) :].strip().split("&"):
        name, sep, value = part.partition("=")
        if not sep:
            raise SasError(f"malformed SAS field {part!r}")
        fields_as_sent[name.strip().lower()] = value.strip()
    missing = [name for name in ("sr", "sig", "se") if name not in fields_as_sent]
    if missing:
        raise SasError(f"SAS token lacks {', '.join(missing)}")
    try:
        signature = base64.b64decode(urllib.parse.unquote(fields_as_sent["sig"]), validate=True)
    except (binascii.Error, ValueError):
        raise SasError("SAS sig is not base64") from None
    try:
        expiry = int(fields_as_sent["se"])
    except ValueError:
        raise SasError("SAS se is not a unix timestamp") from None
    skn = fields_as_sent.get("skn")
    return SasToken(
        resource=urllib.parse.unquote(fields_as_sent["sr"]),
        resource_as_sent=fields_as_sent["sr"],
        signature=signature,
        expiry=expiry,
        key_name=urllib.parse.unquote(skn) if skn is not None else None,
    )


def signed_strings(token: SasToken) -> list[str]:
    """Every form of `sr` real clients sign: raw, as sent, url-encoded with upper- and lower-case escapes."""
    encoded = urllib.parse.quote(token.resource, safe="")
    lower = encoded.replace("%2F", "%2f").replace("%3A", "%3a")
    return list(dict.fromkeys([token.resource, token.resource_as_sent, encoded, lower]))


def check_token(token: SasToken, id_scope: str, registration_id: str, now: float | None = None) -> None:
    """Raise SasError if the token is for another resource, has an unexpected key name, or expired."""
    expected = f"{id_scope}/registrations/{registration_id}"
    if token.resource.lower() != expected.lower():
        raise SasError(f"SAS sr {token.resource!r} does not match {expected!r}")
    if token.key_name not in (None, "", "registration"):
        raise SasError(f"SAS skn must be 'registration' (or absent), got {token.key_name!r}")
    if token.expiry <= (time.time() if now is None else now):
        raise SasError(f"SAS token expired at {token.expiry} (unix time)")


def signature_matches(token: SasToken, key: bytes) -> bool:
    for resource in signed_strings(token):
        message = f"{resource}\n{token.expiry}".encode()
        if hmac.compare_digest(hmac.new(key, message, hashlib.sha256).digest(), token.signature):
            return True
    return False


def service_resource_allows(token: SasToken, accepted_hosts: list[str], path: str) -> bool:
    """Does the token's `sr` name this service host (and a segment prefix of `path`, if it has one)?

    `sr` is "the URI prefix (by segment) of the endpoints that can be accessed, starting with the host name"; the
    docs ask for it lower-cased, so it is compared case-insensitively.
    """
    resource = token.resource.lower().strip("/")
    for scheme in ("https://", "http://"):
        if resource.startswith(scheme):
            resource = resource[len(scheme) :]
    host, _, prefix = resource.partition("/")
    if host not in accepted_hosts:
        return False
    wanted = [segment for segment in prefix.split("/") if segment]
    have = [segment for segment in path.lower().strip("/").split("/") if segment]
    return have[: len(wanted)] == wanted
