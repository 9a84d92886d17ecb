"""What survives a restart besides enrollments: DPS's registration records and the "IoT Hub" device list.

One JSON file in the state dir, written atomically under a lock. The two halves are separate on purpose: deleting a
registration record (a DPS operation) leaves the device in its IoT hub, as Azure does. The device list is the linked
hubs' registry too (hub_api.py): each device carries its identity's status and etag and its twin's etag and version,
which a DPS re-registration leaves as they are.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .files import write_json_atomic
from .pki import iso_utc, utcnow

STATE_FILE = "registrations.json"
DEVICE_STATUSES = ("enabled", "disabled")


class StateError(RuntimeError):
    """A state file exists but cannot be read."""


def device_key(hub: str, device_id: str) -> str:
    return f"{hub}/{device_id}"


def hub_etag() -> str:
    """An IoT Hub-style opaque etag (base64 text, e.g. "MTIzNDU2Nzg5"); never reused in practice."""
    return base64.b64encode(str(secrets.randbits(48)).encode("ascii")).decode("ascii")


def authentication_type(device: dict[str, Any]) -> str:
    """How DPS created the identity: an X.509 group device is certificateAuthority, an X.509 individual enrollment's
    device selfSigned (its thumbprint), a symmetric-key device sas."""
    if device.get("attestation") == "x509":
        return "certificateAuthority" if device.get("enrollmentGroupId") else "selfSigned"
    return "sas"


def with_hub_fields(device: dict[str, Any]) -> dict[str, Any]:
    """Give a device what IoT Hub keeps about its identity and twin, leaving the values it already has alone (so a DPS
    re-registration, which rewrites the DPS fields only, keeps status, etags, tags and desired properties)."""
    since = device.get("createdDateTimeUtc") or iso_utc(utcnow())
    defaults: dict[str, Any] = {
        "status": "enabled",
        "statusReason": None,
        "statusUpdatedTime": since,
        "etag": None,
        "generationId": None,
        "twinEtag": None,
        "twinVersion": 1,
        "desiredVersion": 1,
        "reported": {},
        "reportedVersion": 1,
        "capabilities": {"iotEdge": False},
        "authenticationType": None,
        "tags": {},
        "desired": {},
    }
    for name, value in defaults.items():
        if device.get(name) is None:
            device[name] = copy.deepcopy(value)
    device["etag"] = device["etag"] if device.get("etag") else hub_etag()
    device["twinEtag"] = device["twinEtag"] if device.get("twinEtag") else hub_etag()
    if not device.get("generationId"):
        device["generationId"] = str(secrets.randbits(60))
    if not device.get("authenticationType"):
        device["authenticationType"] = authentication_type(device)
    return device


class RegistrationStore:
    """Registration records by lower-case registration id, and hub devices by "hub/deviceId".

    A record: {"registrationState": {...}, "attestation", "enrollment", "enrollmentGroupId", "registrationCount"}.
    A device: {"deviceId", "assignedHub", "registrationId", ..., "registrationCount", "tags", "desired"} and its hub
    identity and twin fields (with_hub_fields: "status", "statusReason", "etag", "twinEtag", "twinVersion" ...).
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATE_FILE
        self.lock = threading.RLock()
        self.records, self.devices = load_state(state_dir)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[RegistrationStore]:
        """Mutate records and devices together; saved once at the end."""
        with self.lock:
            yield self
            self._save()

    # --- registration records ------------------------------------------------------------------------------
    def get(self, registration_id: str) -> dict[str, Any] | None:
        with self.lock:
            record = self.records.get(registration_id.lower())
            return copy.deepcopy(record) if record is not None else None

    def set_record(self, registration_id: str, record: dict[str, Any]) -> None:
        self.records[registration_id.lower()] = record

    def remove_record(self, registration_id: str) -> None:
        self.records.pop(registration_id.lower(), None)

    def put(self, registration_id: str, record: dict[str, Any]) -> None:
        with self.transaction():
            self.set_record(registration_id, record)

    def by_group(self, group_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                copy.deepcopy(self.records[key])
                for key in sorted(self.records)
                if (self.records[key].get("enrollmentGroupId") or "").lower() == group_id.lower()
            ]

    # --- hub devices ---------------------------------------------------------------------------------------
    def device(self, hub: str, device_id: str) -> dict[str, Any] | None:
        with self.lock:
            device = self.devices.get(device_key(hub, device_id))
            return copy.deepcopy(device) if device is not None else None

    def set_device(self, device: dict[str, Any]) -> None:
        self.devices[device_key(device["assignedHub"], device["deviceId"])] = with_hub_fields(device)

    def hub_devices(self, hub: str) -> list[dict[str, Any]]:
        """The devices of one hub (copies), by device id."""
        with self.lock:
            chosen = [copy.deepcopy(device) for device in self.devices.values() if device.get("assignedHub") == hub]
        return sorted(chosen, key=lambda device: device.get("deviceId") or "")

    def remove_device(self, hub: str, device_id: str) -> None:
        self.devices.pop(device_key(hub, device_id), None)

    # --- whole store ---------------------------------------------------------------------------------------
    def clear(self) -> None:
        with self.transaction():
            self.records = {}
            self.devices = {}

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self.records)

    def device_snapshot(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self.devices)

    def _save(self) -> None:
        write_json_atomic(self.path, {"version": 2, "registrations": self.records, "devices": self.devices})


def _device_from_record(registration_id: str, record: dict[str, Any]) -> dict[str, Any] | None:
    """A version-1 state file had no device list: rebuild it from the assigned registrations."""
    state = record.get("registrationState", {})
    if state.get("status") != "assigned":
        return None
    device = {
        "deviceId": state.get("deviceId"),
        "assignedHub": state.get("assignedHub"),
        "registrationId": state.get("registrationId", registration_id),
        "attestation": record.get("attestation"),
        "enrollment": record.get("enrollment"),
        "enrollmentGroupId": record.get("enrollmentGroupId"),
        "createdDateTimeUtc": state.get("createdDateTimeUtc"),
        "lastUpdatedDateTimeUtc": state.get("lastUpdatedDateTimeUtc"),
        "registrationCount": record.get("registrationCount", 1),
        "substatus": state.get("substatus"),
        "tags": {},
        "desired": {},
    }
    certificate = (state.get("x509") or {}).get("certificateInfo")
    if certificate:
        device["sha1Thumbprint"] = certificate.get("sha1Thumbprint")
        device["sha256Thumbprint"] = certificate.get("sha256Thumbprint")
    return device


def load_state(state_dir: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(registration records by lower-case id, devices by "hub/deviceId") from the state dir."""
    path = state_dir / STATE_FILE
    if not path.exists():
        return {}, {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StateError(f"cannot read state file {path}: {exc}; move it away to start afresh") from None
    records = data.get("registrations") if isinstance(data, dict) else None
    if not isinstance(records, dict):
        raise StateError(f"state file {path} has no 'registrations' mapping; move it away to start afresh")
    records = {key.lower(): record for key, record in records.items()}
    devices = data.get("devices")
    if not isinstance(devices, dict):
        devices = {}
        for registration_id, record in records.items():
            device = _device_from_record(registration_id, record)
            if device is not None:
                devices[device_key(device["assignedHub"], device["deviceId"])] = device
    # a state file written before the hub API had no status or etags: the devices get them now
    return records, {key: with_hub_fields(device) for key, device in devices.items()}


def load_records(state_dir: Path) -> dict[str, dict[str, Any]]:
    return load_state(state_dir)[0]


def device_list(devices: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The "IoT Hub device list", sorted by hub then device id."""
    listing = [copy.deepcopy(device) for device in devices.values()]
    listing.sort(key=lambda device: (device.get("assignedHub") or "", device.get("deviceId") or ""))
    return listing
