"""Injected faults (throttle, error, slow, drop), the registrations-per-minute limit and the DPS operations quota, for
every API surface."""

from __future__ import annotations

import collections
import math
import threading
import time
from typing import Any

from .config import SERVICE_ENDPOINTS, Fault
from .operations import Admission, OperationCounter
from .wire import ERROR_INTERNAL, ERROR_THROTTLED, Drop, Response, error


class FaultInjector:
    def __init__(self, faults: list[Fault], rate_limit_per_minute: int, operations_per_minute: int = 0) -> None:
        self.lock = threading.Lock()
        self.faults: list[Fault] = list(faults)
        self.rate_limit_per_minute = rate_limit_per_minute
        self.register_times: collections.deque[float] = collections.deque()
        self.operations_per_minute = operations_per_minute
        self.operations = OperationCounter()

    @staticmethod
    def _matches(fault: Fault, endpoint: str, target_id: str | None) -> bool:
        service_wide = fault.endpoint == "service" and endpoint in SERVICE_ENDPOINTS
        if fault.endpoint is not None and fault.endpoint != endpoint and not service_wide:
            return False
        if fault.registration_id is not None:
            return target_id is not None and fault.registration_id.lower() == target_id.lower()
        return True

    def apply(self, endpoint: str, target_id: str | None) -> Response | None:
        """Act on the first matching fault (slow faults add up and combine with another one)."""
        delay = 0.0
        action: Fault | None = None
        with self.lock:
            for fault in self.faults:
                if not self._matches(fault, endpoint, target_id):
                    continue
                if fault.type != "slow" and action is not None:
                    continue
                if fault.count is not None:
                    fault.count -= 1
                if fault.type == "slow":
                    delay += fault.seconds
                else:
                    action = fault
            self.faults = [fault for fault in self.faults if fault.count is None or fault.count > 0]
        if delay:
            time.sleep(delay)
        if action is None:
            return None
        if action.type == "drop":
            raise Drop
        if action.type == "throttle":
            return error(
                429,
                ERROR_THROTTLED,
                "Operations are being throttled by the service (injected fault).",
                {"Retry-After": str(action.retry_after)},
            )
        return error(action.status, ERROR_INTERNAL, "Internal server error (injected fault).")

    def rate_limited(self) -> Response | None:
        """Count one register request; a 429 once `rate_limit_per_minute` were accepted in the last minute."""
        limit = self.rate_limit_per_minute
        if not limit:
            return None
        now = time.monotonic()
        with self.lock:
            while self.register_times and now - self.register_times[0] >= 60:
                self.register_times.popleft()
            if len(self.register_times) >= limit:
                wait = max(1, math.ceil(60 - (now - self.register_times[0])))
                return error(
                    429,
                    ERROR_THROTTLED,
                    f"Registration quota exceeded ({limit} per minute); retry after {wait} s.",
                    {"Retry-After": str(wait)},
                )
            self.register_times.append(now)
        return None

    def admit_operation(self, api: str, kind: str) -> tuple[Admission, Response | None]:
        """Count one DPS request (operations.operation_of); a 429 once `operations_per_minute` operations were billed
        in the current calendar minute, with Retry-After up to the next minute. Polls are never refused here."""
        admission = self.operations.admit(api, kind, self.operations_per_minute)
        if admission.retry_after is None:
            return admission, None
        limit, wait = self.operations_per_minute, admission.retry_after
        return admission, error(
            429,
            ERROR_THROTTLED,
            f"Operations quota exceeded ({limit} per minute); retry after {wait} s.",
            {"Retry-After": str(wait)},
        )

    def add(self, faults: list[Fault]) -> None:
        with self.lock:
            self.faults.extend(faults)

    def clear(self) -> None:
        with self.lock:
            self.faults = []

    def listing(self) -> list[dict[str, Any]]:
        with self.lock:
            return [fault.to_dict() for fault in self.faults]
