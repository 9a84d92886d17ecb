"""IoT Hub configurations of every linked hub (automatic device configurations and IoT Edge deployments), the
configuration-operation throttle, and what each device gets from them - evaluated at request time.

Configurations are kept per hub in one JSON file in the state dir, written atomically under a lock (as state.py
keeps the devices). The rules are IoT Hub's (docs/dps_emulator.md, "IoT Hub service API"):

- a configuration's content is one of modulesContent (an IoT Edge deployment), moduleContent (a module
  configuration) or deviceContent (a device configuration), and never changes once created;
- an Edge deployment targets IoT Edge devices only (IoT Hub adds `capabilities.iotEdge = true` to its condition); a
  module configuration targets module twins, which the emulator has none of;
- among the configurations of one kind that target a device, the highest priority is applied, a tie going to the
  newest; every targeting *layered* deployment (modulesContent whose $edgeAgent sets `properties.desired.<path>`
  keys instead of `properties.desired`) is applied on top of the base deployment.
"""

from __future__ import annotations

import collections
import copy
import json
import logging
import math
import re
import threading
import time
from pathlib import Path
from typing import Any

from . import hub_query
from .config import Config
from .files import write_json_atomic
from .pki import iso_utc, utcnow
from .state import RegistrationStore, StateError, hub_etag
from .store import check_if_match
from .wire import HubError

LOG = logging.getLogger("dps_emulator")
CONFIGURATIONS_FILE = "hub_configurations.json"
EDGE, MODULE, DEVICE = "modulesContent", "moduleContent", "deviceContent"
CONTENT_KINDS = (EDGE, MODULE, DEVICE)
MAX_METRICS = 5
# IoT Hub: up to 128 lower-case letters, digits and - : + % _ # * ? ! ( ) , = @ ; $ '
CONFIGURATION_ID_RE = re.compile(r"^[a-z0-9\-:+%_#*?!(),=@;$']{1,128}$")
CONFIGURATION_FIELDS = {
    "id",
    "schemaVersion",
    "labels",
    "content",
    "targetCondition",
    "priority",
    "metrics",
    "systemMetrics",
    "etag",
    "createdTimeUtc",
    "lastUpdatedTimeUtc",
}
MODULES_FROM_RE = re.compile(r"^\s*from\s+devices\.modules\s+where\s+", re.IGNORECASE)
PROJECTION_RE = re.compile(r"^(\s*select\s+)(.+?)(\s+from\s+)", re.IGNORECASE | re.DOTALL)
PLACEHOLDER_RE = re.compile(r"\.?\[\[([^\]]+)\]\]")


def argument_invalid(message: str) -> HubError:
    return HubError(400, "ArgumentInvalid", message)


def configuration_not_found(configuration_id: str) -> HubError:
    return HubError(404, "ConfigurationNotFound", f"Configuration '{configuration_id}' not found.")


def content_kind(configuration: dict[str, Any]) -> str:
    content = configuration.get("content") or {}
    return next((kind for kind in CONTENT_KINDS if content.get(kind) is not None), DEVICE)


def is_layered(configuration: dict[str, Any]) -> bool:
    """A layered deployment: its $edgeAgent gives `properties.desired.<path>` keys, not `properties.desired`."""
    if content_kind(configuration) != EDGE:
        return False
    agent = configuration["content"][EDGE].get("$edgeAgent") or {}
    return "properties.desired" not in agent and any(key.startswith("properties.desired.") for key in agent)


def parse_target(text: str, kind: str) -> hub_query.Condition | None:
    """A target condition as the hub stores it; None targets nothing (an empty condition). A module
    configuration's condition starts with FROM devices.modules WHERE. Raises hub_query.QuerySyntaxError."""
    if kind == MODULE:
        match = MODULES_FROM_RE.match(text)
        if not match:
            raise hub_query.QuerySyntaxError(
                "a module configuration's condition starts with FROM devices.modules WHERE"
            )
        text = text[match.end() :]
    if not text.strip():
        return None
    return hub_query.parse(text)


def parse_metric(text: str, configuration_id: str | None = None) -> tuple[hub_query.Query, bool]:
    """A custom metric query, `SELECT deviceId FROM devices[.modules] WHERE ...` -> (query, over module twins).

    The emulator counts devices, so the projection is read as `*`; `[[id]]` placeholders name a configuration
    (configurations.[[id]].status) and become a bracketed path segment."""
    if not isinstance(text, str):
        raise hub_query.QuerySyntaxError(f"expected the query as text, got {type(text).__name__}")
    modules = bool(re.search(r"\bfrom\s+devices\.modules\b", text, re.IGNORECASE))
    text = re.sub(r"\bfrom\s+devices\.modules\b", "FROM devices", text, flags=re.IGNORECASE)
    text = PROJECTION_RE.sub(lambda match: f"{match.group(1)}*{match.group(3)}", text, count=1)
    text = PLACEHOLDER_RE.sub(lambda match: "['" + (configuration_id or match.group(1)).replace("'", "''") + "']", text)
    return hub_query.parse_query(text), modules


def query_errors(target_condition: Any, metric_queries: dict[str, Any]) -> tuple[str, dict]:
    """testQueries' answer: (targetConditionError, {metric name: error}); empty strings/mappings when valid."""
    target_error = ""
    if target_condition is not None:
        if not isinstance(target_condition, str):
            target_error = "targetCondition must be a string"
        else:
            kind = MODULE if MODULES_FROM_RE.match(target_condition) else DEVICE
            try:
                parse_target(target_condition, kind)
            except hub_query.QuerySyntaxError as exc:
                target_error = str(exc)
    metric_errors: dict[str, str] = {}
    for name, text in metric_queries.items():
        try:
            parse_metric(text)
        except hub_query.QuerySyntaxError as exc:
            metric_errors[name] = str(exc)
    return target_error, metric_errors


def x509_thumbprint(device: dict[str, Any]) -> dict[str, str | None]:
    """A selfSigned identity's thumbprints: given with PUT /devices, or the certificate DPS attested."""
    primary = device.get("primaryThumbprint")
    if primary is None and device["authenticationType"] == "selfSigned":
        primary = device.get("sha1Thumbprint")
    return {"primaryThumbprint": primary, "secondaryThumbprint": device.get("secondaryThumbprint")}


def twin_document(device: dict[str, Any]) -> dict[str, Any]:
    """The twin JSON of a hub device (without `configurations`: hub_api adds them)."""
    return {
        "deviceId": device["deviceId"],
        "etag": device["twinEtag"],
        "deviceEtag": device["etag"],
        "status": device["status"],
        "statusReason": device["statusReason"],
        "statusUpdateTime": device["statusUpdatedTime"],
        "connectionState": "Disconnected",
        "lastActivityTime": "0001-01-01T00:00:00Z",
        "cloudToDeviceMessageCount": 0,
        "authenticationType": device["authenticationType"],
        "x509Thumbprint": x509_thumbprint(device),
        "modelId": "",
        "version": device["twinVersion"],
        "capabilities": copy.deepcopy(device["capabilities"]),
        "tags": copy.deepcopy(device["tags"]),
        "properties": {
            "desired": {**copy.deepcopy(device["desired"]), "$version": device["desiredVersion"]},
            "reported": {**copy.deepcopy(device["reported"]), "$version": device["reportedVersion"]},
        },
    }


def system_metric_queries(kind: str, condition: str, configuration_id: str) -> dict[str, str]:
    """The systemMetrics queries IoT Hub shows (text only: the emulator counts from its own evaluation)."""
    # text for display, never run as SQL
    devices = "select deviceId from devices where "
    applied = f"configurations.[[{configuration_id}]].status = 'Applied'"
    if kind != EDGE:
        return {"targetedCount": devices + condition, "appliedCount": devices + applied}
    agent = "select deviceId from devices.modules where moduleId = '$edgeAgent' and " + applied  # noqa: S608
    reported = " and properties.desired.$version = properties.reported.lastDesiredVersion"
    return {
        "targetedCount": devices + "capabilities.iotEdge = true and " + condition,
        "appliedCount": agent,
        "reportedSuccessfulCount": agent + reported + " and properties.reported.lastDesiredStatus.code = 200",
        "reportedFailedCount": agent + reported + " and properties.reported.lastDesiredStatus.code != 200",
    }


class HubStore:
    """Configurations by hub and lower-case id: {"configuration": {...}, "sequence": creation order}."""

    def __init__(self, state_dir: Path, config: Config, registrations: RegistrationStore) -> None:
        self.path = state_dir / CONFIGURATIONS_FILE
        self.config = config
        self.registrations = registrations
        self.lock = threading.RLock()
        self.operations: dict[str, collections.deque[float]] = {}
        self.sequence = 0
        self.hubs: dict[str, dict[str, dict[str, Any]]] = {hub: {} for hub in config.linked_hubs}
        self._conditions: dict[tuple[str, str], hub_query.Condition | None] = {}
        self._load()

    # --- persistence ---------------------------------------------------------------------------------------
    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StateError(f"cannot read state file {self.path}: {exc}; move it away to start afresh") from None
        if not isinstance(data, dict) or not isinstance(data.get("hubs"), dict):
            raise StateError(f"state file {self.path} has no 'hubs' mapping; move it away to start afresh")
        self.sequence = int(data.get("sequence", 0))
        for hub, configurations in data["hubs"].items():
            if hub in self.hubs:
                self.hubs[hub] = configurations
            else:  # dropped at the next write
                LOG.warning("configurations of %s ignored: it is not in linked_hubs any more", hub)

    def _save(self) -> None:
        write_json_atomic(self.path, {"version": 1, "sequence": self.sequence, "hubs": self.hubs})

    # --- throttle ------------------------------------------------------------------------------------------
    def count_operation(self, hub: str) -> None:
        """One configuration operation (create, update, delete, list) of `hub`; 429 + Retry-After when the hub had
        configuration_operations_per_minute of them in the last minute."""
        limit = self.config.iot_hub.configuration_operations_per_minute
        if not limit:
            return
        now = time.monotonic()
        with self.lock:
            times = self.operations.setdefault(hub, collections.deque())
            while times and now - times[0] >= 60:
                times.popleft()
            if len(times) >= limit:
                wait = max(1, math.ceil(60 - (now - times[0])))
                raise HubError(
                    429,
                    "ThrottlingException",
                    f"Configuration operations on {hub} are throttled ({limit} per minute); retry after {wait} s.",
                    {"Retry-After": str(wait)},
                )
            times.append(now)

    # --- reads ---------------------------------------------------------------------------------------------
    def get(self, hub: str, configuration_id: str) -> dict[str, Any]:
        with self.lock:
            entry = self.hubs[hub].get(configuration_id.lower())
            if entry is None:
                raise configuration_not_found(configuration_id)
            return copy.deepcopy(entry["configuration"])

    def list(self, hub: str) -> list[dict[str, Any]]:
        with self.lock:
            entries = sorted(self.hubs[hub].values(), key=lambda entry: entry["sequence"])
            return [copy.deepcopy(entry["configuration"]) for entry in entries]

    # --- writes --------------------------------------------------------------------------------------------
    def _validated(self, configuration_id: str, body: Any) -> dict[str, Any]:
        what = f"configuration '{configuration_id}'"
        if not CONFIGURATION_ID_RE.match(configuration_id):
            raise argument_invalid(
                f"{what}: the id must be 1-128 lower-case letters, digits and -:+%_#*?!(),=@;$' characters."
            )
        if not isinstance(body, dict):
            raise argument_invalid(f"{what}: the body must be a Configuration JSON object.")
        unknown = sorted(set(body) - CONFIGURATION_FIELDS)
        if unknown:
            raise argument_invalid(f"{what}: unknown field(s) {', '.join(unknown)}.")
        if body.get("id") not in (None, configuration_id):
            raise argument_invalid(f"{what}: the body's id {body['id']!r} is not the id in the URL.")
        content = body.get("content")
        given = [kind for kind in CONTENT_KINDS if isinstance(content, dict) and content.get(kind) is not None]
        if len(given) != 1 or any(not isinstance(content[kind], dict) for kind in given):
            raise argument_invalid(
                f"{what}: content must hold exactly one of modulesContent, moduleContent or deviceContent (an object)."
            )
        if set(content) - set(CONTENT_KINDS):
            raise argument_invalid(
                f"{what}: unknown content field(s) {', '.join(sorted(set(content) - set(CONTENT_KINDS)))}."
            )
        kind = given[0]
        target = body.get("targetCondition", "")
        if not isinstance(target, str):
            raise argument_invalid(f"{what}: targetCondition must be a string.")
        try:
            parse_target(target, kind)
        except hub_query.QuerySyntaxError as exc:
            raise argument_invalid(f"{what}: the target condition is invalid: {exc}") from None
        priority = body.get("priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool) or priority < 0:
            raise argument_invalid(f"{what}: priority must be a non-negative integer.")
        labels = body.get("labels") or {}
        if not isinstance(labels, dict) or not all(isinstance(value, str) for value in labels.values()):
            raise argument_invalid(f"{what}: labels must map names to strings.")
        metrics = body.get("metrics") or {}
        queries = metrics.get("queries") if isinstance(metrics, dict) else None
        queries = queries or {}
        if not isinstance(queries, dict) or not all(isinstance(value, str) for value in queries.values()):
            raise argument_invalid(f"{what}: metrics.queries must map metric names to query strings.")
        if len(queries) > MAX_METRICS:
            raise argument_invalid(f"{what}: at most {MAX_METRICS} custom metrics, got {len(queries)}.")
        for name, text in queries.items():
            try:
                parse_metric(text)
            except hub_query.QuerySyntaxError as exc:
                raise argument_invalid(f"{what}: metric '{name}' is invalid: {exc}") from None
        schema = body.get("schemaVersion") or "1.0"
        if not isinstance(schema, str):
            raise argument_invalid(f"{what}: schemaVersion must be a string, e.g. 1.0.")
        return {
            "id": configuration_id,
            "schemaVersion": schema,
            "labels": dict(labels),
            "content": {kind: copy.deepcopy(content[kind])},
            "targetCondition": target,
            "priority": priority,
            "metrics": {"queries": dict(queries)},
        }

    def put(self, hub: str, configuration_id: str, body: Any, if_match: str | None) -> dict[str, Any]:
        configuration = self._validated(configuration_id, body)
        what = f"configuration '{configuration_id}'"
        now = iso_utc(utcnow())
        with self.lock:
            stored = self.hubs[hub].get(configuration_id.lower())
            if stored is None:
                if if_match is not None and if_match.strip() != "*":
                    raise configuration_not_found(configuration_id)
                limit = self.config.iot_hub.configuration_limit
                if len(self.hubs[hub]) >= limit:
                    raise HubError(
                        403,
                        "IotHubQuotaExceeded",
                        f"{hub} already has {limit} configurations (the limit); delete one before creating {what}.",
                    )
                self.sequence += 1
                sequence = self.sequence
                configuration["createdTimeUtc"] = now
            else:
                previous = stored["configuration"]
                if if_match is None:
                    raise HubError(
                        409,
                        "ConfigurationAlreadyExists",
                        f"{what.capitalize()} already exists; to update it send If-Match with its etag (or *).",
                    )
                check_if_match(if_match, previous["etag"], what)
                if configuration["content"] != previous["content"]:
                    raise argument_invalid(
                        f"{what}: the content of a configuration cannot be modified once created; only "
                        "targetCondition, priority, labels and metrics can change (create a new configuration for "
                        "new content)."
                    )
                sequence = stored["sequence"]
                configuration["createdTimeUtc"] = previous["createdTimeUtc"]
            configuration["lastUpdatedTimeUtc"] = now
            configuration["etag"] = hub_etag()
            self.hubs[hub][configuration_id.lower()] = {"configuration": configuration, "sequence": sequence}
            self._save()
        LOG.info("%s %s on %s", what, "updated" if stored else "created", hub)
        return copy.deepcopy(configuration)

    def delete(self, hub: str, configuration_id: str, if_match: str | None) -> None:
        with self.lock:
            stored = self.hubs[hub].get(configuration_id.lower())
            if stored is None:
                raise configuration_not_found(configuration_id)
            check_if_match(if_match, stored["configuration"]["etag"], f"configuration '{configuration_id}'")
            del self.hubs[hub][configuration_id.lower()]
            self._save()
        LOG.info("configuration '%s' deleted on %s", configuration_id, hub)

    # --- evaluation ----------------------------------------------------------------------------------------
    def _condition(self, configuration: dict[str, Any]) -> hub_query.Condition | None:
        key = (content_kind(configuration), configuration["targetCondition"])
        if key not in self._conditions:
            self._conditions[key] = parse_target(configuration["targetCondition"], key[0])  # valid: checked on PUT
        return self._conditions[key]

    def targets(self, configuration: dict[str, Any], twin: dict[str, Any]) -> bool:
        kind = content_kind(configuration)
        if kind == MODULE:
            return False  # module twins: the emulator has no module identities
        if kind == EDGE and (twin.get("capabilities") or {}).get("iotEdge") is not True:
            return False
        condition = self._condition(configuration)
        return condition is not None and condition.matches(twin)

    def statuses(self, hub: str, twin: dict[str, Any]) -> dict[str, str]:
        """{configuration id: "targeted" | "applied"} for every configuration of `hub` targeting this twin."""
        with self.lock:
            entries = [entry for entry in self.hubs[hub].values() if self.targets(entry["configuration"], twin)]
        statuses = {entry["configuration"]["id"]: "targeted" for entry in entries}
        winners: dict[str, dict[str, Any]] = {}
        for entry in entries:
            configuration = entry["configuration"]
            if is_layered(configuration):
                statuses[configuration["id"]] = "applied"
                continue
            kind = content_kind(configuration)
            best = winners.get(kind)
            rank = (configuration["priority"], entry["sequence"])
            if best is None or rank > (best["configuration"]["priority"], best["sequence"]):
                winners[kind] = entry
        for entry in winners.values():
            statuses[entry["configuration"]["id"]] = "applied"
        return statuses

    def twins(self, hub: str) -> list[dict[str, Any]]:
        """Every twin of `hub` with its `configurations` map, by device id."""
        twins = []
        for device in self.registrations.hub_devices(hub):
            twin = twin_document(device)
            twin["configurations"] = {
                configuration_id: {"status": status}
                for configuration_id, status in sorted(self.statuses(hub, twin).items())
            }
            twins.append(twin)
        return twins

    def applied(self, hub: str) -> dict[str, list[str]]:
        """{device id: [configuration ids applied to it]} (the admin endpoint)."""
        return {
            twin["deviceId"]: [key for key, value in twin["configurations"].items() if value["status"] == "applied"]
            for twin in self.twins(hub)
        }

    def with_metrics(
        self, hub: str, configuration: dict[str, Any], twins: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """The configuration as IoT Hub answers it: systemMetrics and the custom metrics' results, counted now."""
        twins = self.twins(hub) if twins is None else twins
        configuration_id = configuration["id"]
        kind = content_kind(configuration)
        statuses = [twin["configurations"].get(configuration_id, {}).get("status") for twin in twins]
        queries = system_metric_queries(kind, configuration["targetCondition"] or "<none>", configuration_id)
        results = {name: 0 for name in queries}  # reported counts stay 0: no device connects to the emulator
        results["targetedCount"] = sum(1 for status in statuses if status is not None)
        results["appliedCount"] = sum(1 for status in statuses if status == "applied")
        metric_results = {}
        for name, text in configuration["metrics"]["queries"].items():
            query, over_modules = parse_metric(text, configuration_id)
            metric_results[name] = 0 if over_modules else sum(1 for twin in twins if query.matches(twin))
        view = copy.deepcopy(configuration)
        view["systemMetrics"] = {"queries": queries, "results": results}
        view["metrics"] = {"queries": dict(configuration["metrics"]["queries"]), "results": metric_results}
        return view
