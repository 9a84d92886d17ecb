# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""IoT Hub device identities and twins in bulk: what iothub_device and iothub_device_info do with the client.

One module run handles a whole fleet (up to 10,000 devices): the twins are read with a few queries
(`SELECT * FROM devices WHERE deviceId IN [...]`, 100 ids a query, paged by the client), and only the differences
are written, per device: `PATCH /twins/{id}` for tags (If-Match the twin etag; a removed key patched to null) and,
for a status change only, `GET` + `PUT /devices/{id}` (If-Match the device etag; the query's twin lacks the
identity's keys, which a PUT must carry). A write refused with HTTP 412 re-reads that device and tries again, at
most MAX_PRECONDITION_RETRIES times. Everything is read, and every device the hub does not have is known, before
the first write.

The client is `_iothub.IotHubClient` (query_devices, get_twin, patch_twin, get_device, put_device); nothing here
sends a request itself.
"""

from __future__ import annotations

import copy
import json
import math
import typing as t
from dataclasses import dataclass, field

from ansible_collections.iotfleet.aziot.plugins.module_utils._iothub import (
    MAX_PRECONDITION_RETRIES,
    ConcurrentChange,
    IotHubError,
    PreconditionFailed,
)

# Device ids per `deviceId IN [...]` query, and a bound on a query's length so that 100 long ids (up to 128
# characters each) are split over several queries; IoT Hub's own limit on query text is not documented.
QUERY_CHUNK = 100
QUERY_MAX_CHARS = 8000
QUERY_PAGE_SIZE = 100

# IoT Hub's rules (Microsoft: "Create an identity registry", "Understand and use device twins in IoT Hub").
DEVICE_ID_MAX = 128
DEVICE_ID_SPECIALS = frozenset("-.%_*?!(),:=@$'+#")
STATUS_REASON_MAX = 128
STATUSES = ("enabled", "disabled")
TAG_KEY_MAX_BYTES = 1024
TAG_STRING_MAX_BYTES = 4096
TAG_MAX_DEPTH = 10
TAG_INT_MIN = -4503599627370496
TAG_INT_MAX = 4503599627370495
# How many device ids a one-line error names before "and N more".
NAMED_IN_ERRORS = 10

MISSING_FAIL = "fail"
MISSING_SKIP = "skip"


class RegistryError(Exception):
    """A one-line failure of the bulk run that is not an IoT Hub answer (bad input, missing devices)."""


# --- input --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DesiredDevice:
    """What the task asks of one device; None = not set, left as the hub has it."""

    device_id: str
    tags: dict | None = None
    status: str | None = None
    status_reason: str | None = None


def device_id_problem(device_id: t.Any) -> str | None:
    """Why `device_id` cannot be an IoT Hub device id, or None."""
    if not isinstance(device_id, str) or not device_id:
        return "device_id must be a non-empty string"
    if len(device_id) > DEVICE_ID_MAX:
        return f"device_id {device_id[:20]}... is {len(device_id)} characters; IoT Hub allows {DEVICE_ID_MAX}"
    bad = sorted(
        {char for char in device_id if not (char.isascii() and char.isalnum()) and char not in DEVICE_ID_SPECIALS}
    )
    if bad:
        shown = " ".join(repr(char) for char in bad)
        return (
            f"device_id {device_id!r} has {shown}; IoT Hub allows ASCII letters, digits and "
            f"{''.join(sorted(DEVICE_ID_SPECIALS))}"
        )
    return None


def _key_problem(key: t.Any) -> str | None:
    if not isinstance(key, str) or not key:
        return "is not a non-empty string"
    if any(char in ".$ " for char in key):
        return "has '.', '$' or a space, which IoT Hub does not allow in a twin key"
    if any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in key):
        return "has a control character, which IoT Hub does not allow in a twin key"
    if len(key.encode("utf-8")) > TAG_KEY_MAX_BYTES:
        return f"is longer than {TAG_KEY_MAX_BYTES} bytes"
    return None


def tags_problem(tags: t.Any, path: str = "tags", depth: int = 0) -> str | None:
    """Why `tags` cannot be a twin's tags, naming the offending path (tags.site), or None.

    IoT Hub takes objects (nested up to TAG_MAX_DEPTH), arrays, strings (up to 4 KB), booleans and numbers (integers
    within +-2^52); keys without '.', '$', spaces and control characters. null is not a value: in a twin patch it
    removes the key.
    """
    if isinstance(tags, dict):
        if depth > TAG_MAX_DEPTH:
            return f"{path} nests objects deeper than IoT Hub's {TAG_MAX_DEPTH} levels"
        for key, value in tags.items():
            problem = _key_problem(key)
            if problem:
                return f"{path} has a key {key!r} that {problem}"
            problem = tags_problem(value, f"{path}.{key}", depth + 1)
            if problem:
                return problem
        return None
    if depth == 0:
        return f"{path} must be a dict of tag names to values, not {type(tags).__name__}"
    if tags is None:
        return (
            f"{path} is null; a twin tag cannot be null (IoT Hub removes a key patched to null): leave it out, with "
            "purge_tags=true, to remove it"
        )
    if isinstance(tags, list):
        for index, item in enumerate(tags):
            problem = tags_problem(item, f"{path}[{index}]", depth) if item is not None else None
            if item is None:
                return f"{path}[{index}] is null; IoT Hub does not keep null in a twin"
            if problem:
                return problem
        return None
    if isinstance(tags, bool):
        return None
    if isinstance(tags, int):
        if not TAG_INT_MIN <= tags <= TAG_INT_MAX:
            return f"{path} = {tags} is outside IoT Hub's integer range ({TAG_INT_MIN} to {TAG_INT_MAX})"
        return None
    if isinstance(tags, float):
        if not math.isfinite(tags):
            return f"{path} is not a finite number"
        return None
    if isinstance(tags, str):
        if len(tags.encode("utf-8")) > TAG_STRING_MAX_BYTES:
            return f"{path} is longer than IoT Hub's {TAG_STRING_MAX_BYTES} bytes for a string"
        return None
    return f"{path} is a {type(tags).__name__}; a twin tag is a string, number, boolean, list or dict"


def desired_devices(entries: t.Sequence[t.Mapping[str, t.Any]]) -> list[DesiredDevice]:
    """The `devices` option checked and turned into DesiredDevice; RegistryError (one line naming the device)."""
    devices: list[DesiredDevice] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        device_id = entry.get("device_id")
        problem = device_id_problem(device_id)
        if problem:
            raise RegistryError(f"devices[{index}]: {problem}")
        subject = f"device {device_id}"
        if device_id in seen:
            raise RegistryError(f"{subject} is listed twice in devices; give each device once")
        seen.add(device_id)
        tags = entry.get("tags")
        if tags is not None:
            problem = tags_problem(tags)
            if problem:
                raise RegistryError(f"{subject}: {problem}")
        status = entry.get("status")
        if status is not None and status not in STATUSES:
            raise RegistryError(f"{subject}: status must be one of {', '.join(STATUSES)}, not {status!r}")
        reason = entry.get("status_reason")
        if reason is not None and len(reason) > STATUS_REASON_MAX:
            raise RegistryError(
                f"{subject}: status_reason is {len(reason)} characters; IoT Hub keeps at most {STATUS_REASON_MAX}, "
                "shorten it"
            )
        devices.append(DesiredDevice(device_id, copy.deepcopy(tags), status, reason))
    return devices


# --- queries ------------------------------------------------------------------------------------------------------


def quote_literal(text: str) -> str:
    """A string literal of IoT Hub's query language: single-quoted, or double-quoted when it holds a ' (a device id
    may; it never holds a ")."""
    if "'" not in text:
        return f"'{text}'"
    if '"' in text:
        raise ValueError(f"{text!r} holds both quote characters; it cannot be a query literal")
    return f'"{text}"'


def device_queries(
    device_ids: t.Sequence[str], chunk: int = QUERY_CHUNK, max_chars: int = QUERY_MAX_CHARS
) -> list[str]:
    """`SELECT * FROM devices WHERE deviceId IN [...]` queries covering `device_ids`, each with at most `chunk` ids
    and (unless one id alone is longer) at most `max_chars` characters."""
    prefix = "SELECT * FROM devices WHERE deviceId IN ["
    queries: list[str] = []
    literals: list[str] = []
    length = len(prefix) + 1
    for device_id in device_ids:
        literal = quote_literal(device_id)
        added = len(literal) + (1 if literals else 0)
        if literals and (len(literals) >= chunk or length + added > max_chars):
            queries.append(prefix + ",".join(literals) + "]")
            literals, length, added = [], len(prefix) + 1, len(literal)
        literals.append(literal)
        length += added
    if literals:
        queries.append(prefix + ",".join(literals) + "]")
    return queries


def read_twins(client: t.Any, device_ids: t.Sequence[str], page_size: int = QUERY_PAGE_SIZE) -> dict[str, dict]:
    """The twins of `device_ids` the hub has, by device id (a device it does not have is absent)."""
    wanted = set(device_ids)
    twins: dict[str, dict] = {}
    for query in device_queries(device_ids):
        for twin in client.query_devices(query, page_size):
            device_id = twin.get("deviceId")
            if device_id in wanted:
                twins[device_id] = twin
    return twins


# --- comparing ----------------------------------------------------------------------------------------------------


def same_json(left: t.Any, right: t.Any) -> bool:
    """JSON equality: true is not 1 (as Python's == says), 1 is 1.0, objects compare key by key, arrays in order."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, (int, float)) and isinstance(right, (int, float)):
        return left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(same_json(left[key], right[key]) for key in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(same_json(left[index], right[index]) for index in range(len(left)))
    if isinstance(left, str) or isinstance(right, str):
        return isinstance(left, str) and isinstance(right, str) and left == right
    return left is None and right is None


def tags_patch(current: t.Any, desired: dict, purge: bool) -> dict:
    """The JSON merge patch (what PATCH /twins sends under "tags") that makes the twin's tags `current` into
    `desired`; {} when nothing differs.

    With `purge`, the tags become exactly `desired` (a key the twin has and `desired` lacks is patched to null).
    Without, only the keys of `desired` are compared and set; each of them becomes exactly its value (a nested
    object too: its extra keys are patched to null, as a merge patch would otherwise keep them).
    """
    current = current if isinstance(current, dict) else {}
    patch: dict = {}
    if purge:
        for key in current:
            if key not in desired:
                patch[key] = None
    for key, value in desired.items():
        if key not in current:
            patch[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(current[key], dict):
            nested = tags_patch(current[key], value, purge=True)
            if nested:
                patch[key] = nested
        elif not same_json(current[key], value):
            patch[key] = copy.deepcopy(value)
    return patch


def merge_patch(target: t.Any, patch: t.Any) -> t.Any:
    """RFC 7386: `target` with the merge patch `patch` applied (what the hub does with a twin PATCH's tags)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def status_changes(record: t.Mapping[str, t.Any], desired: DesiredDevice) -> dict[str, str]:
    """The identity fields (status, statusReason) of `record` (a twin or a device) that differ from `desired`; a
    reason the hub has none of and an empty one are the same."""
    changes: dict[str, str] = {}
    if desired.status is not None and record.get("status") != desired.status:
        changes["status"] = desired.status
    if desired.status_reason is not None and (record.get("statusReason") or "") != desired.status_reason:
        changes["statusReason"] = desired.status_reason
    return changes


# --- views --------------------------------------------------------------------------------------------------------


def device_view(twin: t.Mapping[str, t.Any]) -> dict:
    """A device in iothub_device's result."""
    return dict(
        device_id=twin.get("deviceId"),
        changed=False,
        status=twin.get("status"),
        status_reason=twin.get("statusReason") or "",
        tags=copy.deepcopy(twin.get("tags") or {}),
        configurations=copy.deepcopy(twin.get("configurations") or {}),
    )


def info_view(twin: t.Mapping[str, t.Any]) -> dict:
    """A device in iothub_device_info's result."""
    return dict(
        device_id=twin.get("deviceId"),
        status=twin.get("status"),
        status_reason=twin.get("statusReason") or "",
        tags=copy.deepcopy(twin.get("tags") or {}),
        configurations=copy.deepcopy(twin.get("configurations") or {}),
        capabilities=copy.deepcopy(twin.get("capabilities") or {}),
        connection_state=twin.get("connectionState"),
    )


def compared_view(record: t.Mapping[str, t.Any], desired: DesiredDevice) -> dict:
    """What the task compares of a device (only what it sets), for the diff."""
    view: dict = {}
    if desired.status is not None:
        view["status"] = record.get("status")
    if desired.status_reason is not None:
        view["status_reason"] = record.get("statusReason") or ""
    if desired.tags is not None:
        view["tags"] = copy.deepcopy(record.get("tags") or {})
    return view


def _text(view: dict) -> str:
    return json.dumps(view, indent=2, sort_keys=True) + "\n"


def diff_entry(device_id: str, before: dict, after: dict) -> dict:
    return dict(
        before=_text(before),
        after=_text(after),
        before_header=f"device {device_id} (IoT Hub)",
        after_header=f"device {device_id}",
    )


def named(device_ids: t.Sequence[str]) -> str:
    """'a, b, c' or 'a, b, ... and 5 more' for one-line errors."""
    shown = ", ".join(device_ids[:NAMED_IN_ERRORS])
    more = len(device_ids) - NAMED_IN_ERRORS
    return shown + (f" and {more} more" if more > 0 else "")


def missing_message(missing: t.Sequence[str], hub: str, before_any_write: bool = True) -> str:
    """The one-line error of missing=fail."""
    one = len(missing) == 1
    noun = "device" if one else f"{len(missing)} devices"
    them = "it" if one else "them"
    when = "; nothing was changed" if before_any_write else " (deleted while this task ran)"
    return (
        f"{noun} {named(missing)} {'is' if one else 'are'} not in IoT Hub {hub}: register {them} through DPS first "
        f"(provision.yml), or set missing=skip to leave {them} out{when}"
    )


# --- one bulk run -------------------------------------------------------------------------------------------------


class _Vanished(Exception):
    """The device was deleted from the hub between this run's read and its write."""


@dataclass
class Outcome:
    """One device after the run: its entry in the result, and its diff when it changed (or would)."""

    view: dict
    diff: dict | None = None


@dataclass
class RegistrySync:
    """Bring many devices' twin tags and status in line with DesiredDevice records (iothub_device)."""

    client: t.Any
    hub: str
    purge_tags: bool = True
    missing: str = MISSING_FAIL
    check_mode: bool = False
    # Ids of the devices written so far, in order: a failure part-way reports them.
    changed_devices: list[str] = field(default_factory=list)
    # The device being compared and written, for a failure's message (None while reading).
    current: str | None = None

    def run(self, devices: t.Sequence[DesiredDevice]) -> dict:
        """Read every twin, then write what differs. The module's result but the request counts, with every
        device's diff under "diffs"."""
        twins = read_twins(self.client, [device.device_id for device in devices])
        missing = [device.device_id for device in devices if device.device_id not in twins]
        if missing and self.missing == MISSING_FAIL:
            raise RegistryError(missing_message(missing, self.hub))
        outcomes: list[Outcome] = []
        for device in devices:
            if device.device_id not in twins:
                continue
            self.current = device.device_id
            try:
                outcomes.append(self.converge(device, twins[device.device_id]))
            except _Vanished:
                if self.missing == MISSING_FAIL:
                    raise RegistryError(missing_message([device.device_id], self.hub, before_any_write=False)) from None
                missing.append(device.device_id)
        self.current = None
        changed = [outcome.view["device_id"] for outcome in outcomes if outcome.view["changed"]]
        return dict(
            changed=bool(changed),
            devices=[outcome.view for outcome in outcomes],
            changed_devices=changed,
            missing=missing,
            diffs=[outcome.diff for outcome in outcomes if outcome.diff is not None],
        )

    def plan(self, device: DesiredDevice, twin: t.Mapping[str, t.Any]) -> tuple[dict, dict]:
        """(tags patch, identity changes) that bring `twin` to `device`; both empty when nothing differs."""
        patch = tags_patch(twin.get("tags"), device.tags, self.purge_tags) if device.tags is not None else {}
        return patch, status_changes(twin, device)

    def converge(self, device: DesiredDevice, twin: dict) -> Outcome:
        """Compare one device and write what differs, reading its twin again after a 412."""
        before = compared_view(twin, device)
        patch, changes = self.plan(device, twin)
        if not patch and not changes:
            return Outcome(device_view(twin))
        if self.check_mode:
            predicted = dict(twin, tags=merge_patch(twin.get("tags") or {}, patch), **changes)
            return Outcome(
                dict(device_view(twin), changed=True),
                diff_entry(device.device_id, before, compared_view(predicted, device)),
            )
        wrote = False
        for attempt in range(MAX_PRECONDITION_RETRIES + 1):
            try:
                if patch:
                    twin = self.client.patch_twin(device.device_id, {"tags": patch}, twin.get("etag") or "*")
                    wrote = self.wrote(device.device_id)
                    patch = {}
                if changes:
                    twin, put = self.put_status(device, twin)
                    wrote = self.wrote(device.device_id) if put else wrote
                break
            except PreconditionFailed as error:
                if attempt == MAX_PRECONDITION_RETRIES:
                    raise ConcurrentChange(f"device {device.device_id}", "the device", "writing") from None
                self.client.changed_meanwhile(error, attempt, f"the write of device {device.device_id}")
                twin = self.client.get_twin(device.device_id)
                if twin is None:
                    raise _Vanished() from None
                patch, changes = self.plan(device, twin)
                if not patch and not changes:
                    break
            except IotHubError as error:
                if error.status == 404:
                    raise _Vanished() from None
                raise
        view = dict(device_view(twin), changed=wrote)
        return Outcome(view, diff_entry(device.device_id, before, compared_view(twin, device)) if wrote else None)

    def put_status(self, device: DesiredDevice, twin: dict) -> tuple[dict, bool]:
        """GET the identity and, when its status / reason still differ, PUT it back with the new ones (If-Match its
        etag). (the twin with the identity's status now, whether a PUT was sent)."""
        identity = self.client.get_device(device.device_id)
        if identity is None:
            raise _Vanished()
        changes = status_changes(identity, device)
        if changes:
            identity = self.client.put_device(device.device_id, dict(identity, **changes), identity.get("etag") or "*")
        return dict(twin, status=identity.get("status"), statusReason=identity.get("statusReason")), bool(changes)

    def wrote(self, device_id: str) -> bool:
        """Record that `device_id` was written (a failure later in the run reports it); True."""
        if device_id not in self.changed_devices:
            self.changed_devices.append(device_id)
        return True
