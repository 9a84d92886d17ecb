# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet report (playbooks/fleet_status.yml): one row per device from DPS's records, the device certificates,
the inventory and - when the IoT hub was read - each device's hub identity (status, twin tags, the configurations
applied to it), a summary, the certificate expiries per month, and the expiry watch. Runs on the controller."""

from __future__ import annotations

import base64
import binascii
import datetime
import os
import typing as t
from collections import Counter

from ansible_collections.iotfleet.aziot.plugins.module_utils._pki import (
    PkiError,
    format_time,
    load_certificate,
    not_after,
)

EXPIRY_MONTHS = 12

SOURCE_COPY = "controller copy"
SOURCE_DEVICE = "device"
SOURCE_INDIVIDUAL = "individual enrollment"

# A device's hub status when the hub was read and has no device of its id (not read: "").
HUB_ABSENT = "absent"
TAGS_FROM_TWIN = "IoT Hub twin"


def _dig(record: t.Any, *path: str) -> t.Any:
    for key in path:
        if not isinstance(record, dict):
            return None
        record = record.get(key)
    return record


def _parse_utc(value: str) -> datetime.datetime:
    """DPS's timestamps: ISO 8601 with a Z and up to 7 fraction digits."""
    text = value.strip().replace("Z", "+00:00")
    if "." in text:
        head, _dot, rest = text.partition(".")
        digits = "".join(char for char in rest if char.isdigit())
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest[len(digits) :]}"
    parsed = datetime.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.astimezone(datetime.timezone.utc)


def days_left(expiry: datetime.datetime, now: datetime.datetime) -> int:
    """Whole days until `expiry` (negative once it is past)."""
    return int((expiry - now).total_seconds() // 86400)


def certificate_facts(device: dict, individual: dict | None, now: datetime.datetime) -> dict:
    """Subject, issuer, not after, days left and where they were read: the controller's copy, else what the device
    sent, else the individual enrollment's certificate info. {} when none is known, {"error": ...} when unreadable."""
    path = device.get("certificate_path") or ""
    pem = device.get("certificate_pem") or ""
    info = _dig(individual, "attestation", "x509", "clientCertificates", "primary", "info") or {}
    try:
        if path and os.path.isfile(path):
            source = SOURCE_COPY
            with open(path, "rb") as handle:
                cert = load_certificate(handle.read(), path)
        elif pem:
            source = SOURCE_DEVICE
            cert = load_certificate(base64.b64decode(pem), "the certificate read from the device")
        elif info.get("notAfterUtc"):
            source = SOURCE_INDIVIDUAL
            expiry = _parse_utc(str(info["notAfterUtc"]))
            return {
                "subject": str(info.get("subjectName") or ""),
                "issuer": str(info.get("issuerName") or ""),
                "not_after": format_time(expiry),
                "days_left": days_left(expiry, now),
                "source": source,
            }
        else:
            return {}
    except (OSError, ValueError, binascii.Error, PkiError) as error:
        return {"error": f"unreadable certificate ({source}): {error}"}
    expiry = not_after(cert)
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "not_after": format_time(expiry),
        "days_left": days_left(expiry, now),
        "source": source,
    }


def _name_key(name: str) -> tuple[str, ...]:
    """A distinguished name compared regardless of the order its parts are written in (RFC 4514 reverses them)."""
    return tuple(sorted(part.strip().lower() for part in name.split(",") if part.strip()))


def _group_of_issuer(groups: list[dict], issuer: str) -> dict | None:
    """The enrollment group whose signing certificate issued the device certificate: the group DPS matches."""
    if not issuer:
        return None
    wanted = _name_key(issuer)
    for group in groups:
        for slot in ("primary", "secondary"):
            subject = _dig(group, "attestation", "x509", "signingCertificates", slot, "info", "subjectName")
            if subject and _name_key(str(subject)) == wanted:
                return group
    return None


def twin_tags(enrollment: dict | None) -> dict:
    """The tags an enrollment's initialTwin gives (DPS's own `$` metadata left out)."""
    tags = _dig(enrollment, "initialTwin", "tags") or {}
    return {key: value for key, value in tags.items() if not str(key).startswith("$")}


def _hub_device_index(hub_devices: list[dict]) -> dict[str, dict]:
    """iothub_device_info's devices by device id. IoT Hub device ids are case-sensitive, DPS registration ids are
    not: an exact match wins, else the one that differs only in case."""
    index: dict[str, dict] = {}
    for device in hub_devices:
        device_id = str(device.get("device_id") or "")
        index.setdefault(device_id.lower(), device)
        index[device_id] = device
    return index


def applied_configurations(hub_device: dict | None) -> list[str]:
    """The ids of the configurations the twin says are applied to the device (targeted only: left out), sorted."""
    found = (hub_device or {}).get("configurations") or {}
    return sorted(str(name) for name, state in found.items() if _dig(state, "status") == "applied")


def _plural_days(days: int) -> str:
    return f"{days} day" if days in (1, -1) else f"{days} days"


def build_rows(
    devices: list[dict],
    enrollment_groups: list[dict],
    enrollments: list[dict],
    group_registrations: dict[str, list[dict]],
    registrations: list[dict],
    warn_days: int,
    now: datetime.datetime,
    hub_devices: list[dict] | None = None,
) -> list[dict]:
    """One row per device, in the order given.

    `devices`: {host, registration_id, enrollment_group (the inventory's, may be empty), certificate_path (the
    controller's copy, read when it exists), certificate_pem (base64, read from the device)}.
    `group_registrations`: registration records by the enrollment group they were listed for; `registrations`: the
    records looked up one by one (individually enrolled devices). Registration ids compare case-insensitively, as
    DPS compares them.
    `hub_devices`: the devices iothub_device_info read from the IoT hub ({device_id, status, status_reason, tags,
    configurations}); None when the hub was not read - the rows then say nothing of it. A device the hub was read
    for and does not have is `absent`; one it has shows its twin's tags (the hub's, which iothub_deployment keeps in
    step with the inventory) instead of the enrollment's.
    """
    hub_index = _hub_device_index(hub_devices) if hub_devices is not None else None
    groups_by_id = {str(group.get("enrollmentGroupId")): group for group in enrollment_groups}
    individual_by_id = {str(item.get("registrationId", "")).lower(): item for item in enrollments}
    records: dict[str, dict] = {}
    for group_id, found in group_registrations.items():
        for record in found or []:
            records[str(record.get("registrationId", "")).lower()] = dict(record, enrollment_group=group_id)
    for record in registrations:
        records[str(record.get("registrationId", "")).lower()] = dict(record)

    rows = []
    for device in devices:
        registration_id = str(device.get("registration_id") or device["host"])
        key = registration_id.lower()
        record = records.get(key, {})
        individual = individual_by_id.get(key)
        cert = certificate_facts(device, individual, now)
        # The device's cohort: the group it registered through, else the inventory's, else the group whose CA
        # issued its certificate (the group DPS would match it to without its individual enrollment).
        group_id = record.get("enrollment_group") or device.get("enrollment_group") or ""
        group = groups_by_id.get(group_id) if group_id else _group_of_issuer(enrollment_groups, cert.get("issuer", ""))
        if group is not None:
            group_id = str(group.get("enrollmentGroupId"))
        # initialTwin reaches the twin when IoT Hub creates the device, at its first registration; a later
        # enrollment does not change it. A device with an individual enrollment (replace.yml, revoke.yml) first
        # registered through its cohort's group - unless its individual enrollment gives tags of its own.
        tags = twin_tags(individual)
        tags_from = "individual enrollment" if tags else ""
        if not tags and group is not None:
            tags, tags_from = twin_tags(group), f"enrollment group {group_id}"
        hub_device = None
        if hub_index is not None:
            device_id = str(record.get("deviceId") or registration_id)
            hub_device = hub_index.get(device_id) or hub_index.get(device_id.lower())
            if hub_device is not None:
                tags = dict(hub_device.get("tags") or {})
                tags_from = TAGS_FROM_TWIN
        hub_status = ""
        if hub_index is not None:
            hub_status = str(hub_device.get("status") or "") if hub_device is not None else HUB_ABSENT
        if individual is not None:
            blocked = individual.get("provisioningStatus", "enabled") == "disabled"
        else:
            blocked = group is not None and group.get("provisioningStatus", "enabled") == "disabled"

        notes = []
        if blocked:
            where = "its individual enrollment" if individual is not None else "its enrollment group"
            notes.append(f"blocked: {where} is disabled")
        if not record:
            notes.append("no registration record in DPS")
        elif record.get("errorMessage"):
            notes.append(str(record["errorMessage"]))
        if hub_status == "disabled":
            reason = str(hub_device.get("status_reason") or "")
            notes.append(f"disabled in IoT Hub ({reason})" if reason else "disabled in IoT Hub")
        elif hub_status == HUB_ABSENT and record.get("status") == "assigned":
            notes.append("assigned by DPS but not in the IoT hub read")
        left = cert.get("days_left")
        if "error" in cert:
            notes.append(cert["error"])
        elif not cert:
            notes.append("certificate unknown: no controller copy")
        elif left < 0:
            notes.append("certificate expired")
        elif left < warn_days:
            notes.append(f"expires in {_plural_days(left)}")

        if individual is not None:
            enrollment = f"individual {registration_id}"
        else:
            enrollment = f"group {group_id}" if group_id else ""
        rows.append(
            {
                "device": registration_id,
                "host": device["host"],
                "status": record.get("status") or "unregistered",
                "hub": record.get("assignedHub") or "",
                "device_id": record.get("deviceId") or "",
                "hub_status": hub_status,
                "hub_status_reason": str((hub_device or {}).get("status_reason") or ""),
                "configurations": applied_configurations(hub_device),
                "cohort": group_id,
                "enrollment": enrollment,
                "tags": tags,
                "tags_from": tags_from,
                "blocked": blocked,
                "subject": cert.get("subject", ""),
                "issuer": cert.get("issuer", ""),
                "not_after": cert.get("not_after", ""),
                "days_left": left,
                "certificate_source": cert.get("source", ""),
                "expiring": left is not None and left < warn_days,
                "note": "; ".join(notes),
            }
        )
    return rows


def _counts(values: t.Iterable[str]) -> dict[str, int]:
    """How many of each, the most frequent first (then by name)."""
    counted = Counter(values)
    return dict(sorted(counted.items(), key=lambda item: (-item[1], item[0])))


def summarise(rows: list[dict]) -> dict:
    """Devices per registration status, per cohort and per IoT hub, per hub status and per configuration applied
    (those two empty when the hub was not read), and the certificate counts."""
    hub_rows = [row for row in rows if row.get("hub_status")]
    return {
        "devices": len(rows),
        "assigned": sum(1 for row in rows if row["status"] == "assigned"),
        "blocked": sum(1 for row in rows if row["blocked"]),
        "expiring": sum(1 for row in rows if row["expiring"]),
        "expired": sum(1 for row in rows if row["days_left"] is not None and row["days_left"] < 0),
        "unknown_certificate": sum(1 for row in rows if row["days_left"] is None),
        "by_status": _counts(row["status"] for row in rows),
        "by_cohort": _counts(row["cohort"] or "-" for row in rows),
        "by_hub": _counts(row["hub"] or "-" for row in rows),
        "hub_disabled": sum(1 for row in hub_rows if row["hub_status"] == "disabled"),
        "by_hub_status": _counts(row["hub_status"] for row in hub_rows),
        "by_configuration": _counts(name for row in hub_rows for name in row.get("configurations") or ["-"]),
    }


def _add_months(year: int, month: int, count: int) -> tuple[int, int]:
    index = year * 12 + month - 1 + count
    return index // 12, index % 12 + 1


def expiries(rows: list[dict], now: datetime.datetime, months: int = EXPIRY_MONTHS) -> dict:
    """Certificates that expire in each of the `months` calendar months from this one (UTC), those already expired,
    and those that expire later: the renewal waves ahead."""
    buckets = []
    for offset in range(months):
        year, month = _add_months(now.year, now.month, offset)
        buckets.append({"month": f"{year:04d}-{month:02d}", "devices": 0})
    by_month = {bucket["month"]: bucket for bucket in buckets}
    expired = later = 0
    for row in rows:
        if not row["not_after"]:
            continue
        if row["days_left"] is not None and row["days_left"] < 0:
            expired += 1
            continue
        bucket = by_month.get(row["not_after"][:7])
        if bucket is not None:
            bucket["devices"] += 1
        else:
            later += 1
    return {"months": buckets, "expired": expired, "later": later}


def due(rows: list[dict], within_days: int) -> list[dict]:
    """The expiry watch: devices whose certificate expires in less than `within_days` days."""
    return [
        {"device": row["device"], "days_left": row["days_left"], "not_after": row["not_after"]}
        for row in rows
        if row["days_left"] is not None and row["days_left"] < within_days
    ]


def due_text(found: list[dict]) -> str:
    return ", ".join(f"{item['device']} ({_plural_days(item['days_left'])} left)" for item in found)


def build_report(rows: list[dict], warn_days: int, now: datetime.datetime, fail_within_days: int | None = None) -> dict:
    """Everything the report shows about the rows of build_rows(): summary, expiries per month, and the expiry
    watch's findings."""
    found = due(rows, fail_within_days) if fail_within_days is not None else []
    return {
        "hub_read": any(row.get("hub_status") for row in rows),
        "generated": now.strftime("%Y-%m-%d"),
        "generated_at": format_time(now),
        "warn_days": warn_days,
        "devices": rows,
        "summary": summarise(rows),
        "expiries": expiries(rows, now),
        "due": found,
        "due_text": due_text(found),
    }
