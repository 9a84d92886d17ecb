"""DPS operations as DPS bills them: counted per API, per kind, per calendar minute and in total.

Every device-API call (register, registration status lookup) and every service-API call (enrollments, enrollment
groups, registration records; each page of a query) is one operation. Operation-status polling (GET
.../operations/{id}) is not: it is counted apart, under the kind "poll". IoT Hub and admin requests are not DPS's.

Minutes are calendar minutes (UTC, hh:mm:00 to hh:mm:59), the unit of the operations quota: a request beyond the quota
in the current minute is throttled until the next minute starts, and a throttled request is not billed.
"""

from __future__ import annotations

import collections
import datetime
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .router import Route

DEVICE_KINDS = {"register": "register", "status": "lookup", "operation": "poll"}
NOT_BILLED = frozenset({"poll"})
# Minutes kept in per_minute (a day): a run longer than that keeps its last day.
HISTORY_MINUTES = 1440


def operation_of(route: Route) -> tuple[str, str] | None:
    """(api, kind) of a request on `route`; None for IoT Hub and admin routes, which are no DPS operations."""
    if route.auth == "device" and route.endpoint in DEVICE_KINDS:
        return "device", DEVICE_KINDS[route.endpoint]
    if route.auth == "service":
        noun = "registration" if route.endpoint == "registrations" else "enrollment"
        if route.pattern.lower().endswith("/query"):
            verb = "query"
        elif route.permission is not None and route.permission.endswith("Write"):
            verb = "write"
        else:
            verb = "read"
        return "service", f"{noun}_{verb}"
    return None


@dataclass(frozen=True)
class Admission:
    """One counted request: what refund() needs to take it back. `retry_after` is set when the quota refused it."""

    api: str
    kind: str
    minute: int
    retry_after: int | None = None


class OperationCounter:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.since = self.clock()
            self.total = 0
            self.throttled = 0
            self.by_api: collections.Counter[str] = collections.Counter()
            self.by_kind: collections.Counter[str] = collections.Counter()
            # calendar minute (unix time // 60) -> [billed operations, throttled requests], oldest first
            self.minutes: collections.OrderedDict[int, list[int]] = collections.OrderedDict()

    def _minute(self, minute: int) -> list[int]:
        if minute not in self.minutes:
            self.minutes[minute] = [0, 0]
            while len(self.minutes) > HISTORY_MINUTES:
                self.minutes.popitem(last=False)
        return self.minutes[minute]

    def admit(self, api: str, kind: str, limit: int) -> Admission:
        """Count one request of `kind`; when `limit` (operations per minute, 0 = none) were billed in the current
        minute, count it as throttled instead and say how long until the next minute."""
        with self.lock:
            now = self.clock()
            minute = int(now // 60)
            if kind in NOT_BILLED:
                self.by_kind[kind] += 1
                return Admission(api, kind, minute)
            counts = self._minute(minute)
            if limit and counts[0] >= limit:
                counts[1] += 1
                self.throttled += 1
                return Admission(api, kind, minute, max(1, math.ceil((minute + 1) * 60 - now)))
            counts[0] += 1
            self.total += 1
            self.by_api[api] += 1
            self.by_kind[kind] += 1
            return Admission(api, kind, minute)

    def refund(self, admission: Admission) -> None:
        """A counted request was throttled after all (the registrations-per-minute limit): not billed."""
        if admission.retry_after is not None:
            return  # counted as throttled already
        with self.lock:
            self.by_kind[admission.kind] -= 1
            if admission.kind in NOT_BILLED:
                return
            self.total -= 1
            self.throttled += 1
            self.by_api[admission.api] -= 1
            if admission.minute in self.minutes:
                counts = self.minutes[admission.minute]
                counts[0] -= 1
                counts[1] += 1

    def snapshot(self, limit: int) -> dict[str, Any]:
        with self.lock:
            return {
                "total": self.total,
                "by_api": {api: count for api, count in sorted(self.by_api.items()) if count},
                "by_kind": {kind: count for kind, count in sorted(self.by_kind.items()) if count},
                "not_billed": sorted(NOT_BILLED),
                "throttled": self.throttled,
                "per_minute": [
                    {"minute": _minute_text(minute), "operations": billed, "throttled": throttled}
                    for minute, (billed, throttled) in self.minutes.items()
                ],
                "operations_per_minute": limit,
                "since": datetime.datetime.fromtimestamp(self.since, datetime.UTC).isoformat(timespec="seconds"),
            }


def _minute_text(minute: int) -> str:
    return datetime.datetime.fromtimestamp(minute * 60, datetime.UTC).strftime("%Y-%m-%dT%H:%MZ")
