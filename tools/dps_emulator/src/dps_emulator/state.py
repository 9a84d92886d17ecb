"""Registrations that survive a restart: one JSON file in the state dir, written atomically under a lock."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

STATE_FILE = "registrations.json"


class StateError(RuntimeError):
    """The state file exists but cannot be read."""


class RegistrationStore:
    """Registration id -> {"registrationState": {...}, "attestation": ..., "registrationCount": n}."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATE_FILE
        self.lock = threading.RLock()
        self.records: dict[str, dict[str, Any]] = load_records(state_dir)

    def get(self, registration_id: str) -> dict[str, Any] | None:
        with self.lock:
            record = self.records.get(registration_id)
            return json.loads(json.dumps(record)) if record is not None else None

    def put(self, registration_id: str, record: dict[str, Any]) -> None:
        with self.lock:
            self.records[registration_id] = record
            self._save()

    def clear(self) -> None:
        with self.lock:
            self.records = {}
            self._save()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return json.loads(json.dumps(self.records))

    def _save(self) -> None:
        data = json.dumps({"version": 1, "registrations": self.records}, indent=2, sort_keys=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def load_records(state_dir: Path) -> dict[str, dict[str, Any]]:
    path = state_dir / STATE_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StateError(f"cannot read state file {path}: {exc}; move it away to start afresh") from None
    records = data.get("registrations") if isinstance(data, dict) else None
    if not isinstance(records, dict):
        raise StateError(f"state file {path} has no 'registrations' mapping; move it away to start afresh")
    return records


def device_list(records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The "IoT Hub device list": every registration that ended assigned, sorted by hub then device id."""
    devices = []
    for registration_id, record in records.items():
        state = record.get("registrationState", {})
        if state.get("status") != "assigned":
            continue
        device = {
            "deviceId": state.get("deviceId"),
            "assignedHub": state.get("assignedHub"),
            "registrationId": registration_id,
            "attestation": record.get("attestation"),
            "enrollment": record.get("enrollment"),
            "enrollmentGroupId": record.get("enrollmentGroupId"),
            "createdDateTimeUtc": state.get("createdDateTimeUtc"),
            "lastUpdatedDateTimeUtc": state.get("lastUpdatedDateTimeUtc"),
            "registrationCount": record.get("registrationCount", 1),
            "substatus": state.get("substatus"),
        }
        certificate = (state.get("x509") or {}).get("certificateInfo")
        if certificate:
            device["sha1Thumbprint"] = certificate.get("sha1Thumbprint")
            device["sha256Thumbprint"] = certificate.get("sha256Thumbprint")
        devices.append(device)
    devices.sort(key=lambda device: (device["assignedHub"] or "", device["deviceId"] or ""))
    return devices
