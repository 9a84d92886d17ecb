# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What an IoT Hub configuration (automatic device configuration or IoT Edge deployment) should look like, and how
it differs from what the hub has (DESIGN.md section 10).

Pure functions over IoT Hub JSON, so the module only orchestrates:
- `load_content` takes the inline content or reads a content file on the controller and refuses, in one line, what
  IoT Hub would refuse (not JSON, not exactly one of modulesContent / moduleContent / deviceContent);
- `differences` names every field that differs (targetCondition, priority, labels, metrics.queries, content);
- `build_body` makes the PUT body; `summarise` is the diff view, without the hub's read-only fields;
- `mask_configuration` hides the container registry passwords an IoT Edge deployment carries.
"""

from __future__ import annotations

import copy
import json
import os
import re
import typing as t
from dataclasses import dataclass, field

from ansible_collections.iotfleet.aziot.plugins.module_utils._dps_service import MASK

CONTENT_KINDS = ("modulesContent", "moduleContent", "deviceContent")
SCHEMA_VERSION = "1.0"
# IoT Hub takes at most five custom metric queries per configuration.
MAX_METRICS = 5
EXAMPLE_METRIC = "SELECT deviceId FROM devices WHERE properties.reported.lastDesiredStatus.code = 200"
# The fields the module manages, in the order differences are named.
FIELDS = ("targetCondition", "priority", "labels", "metrics.queries", "content")


# IoT Hub's rule for a configuration id (REST API, Configuration id): lower-case letters, digits and
# -:+%_#*?!(),=@;$' , at most 128 characters.
_CONFIGURATION_ID = re.compile(r"^[a-z0-9\-:+%_#*?!(),=@;$']{1,128}$")


class ConfigurationInputError(ValueError):
    """A user input that cannot be sent to IoT Hub (a one-line message naming the configuration and the option)."""


@dataclass
class DesiredConfiguration:
    configuration_id: str
    target_condition: str
    priority: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    content: dict = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return next(iter(self.content))


def configuration_id_problem(configuration_id: str) -> str | None:
    """Why IoT Hub would refuse `configuration_id`, or None."""
    if _CONFIGURATION_ID.match(configuration_id):
        return None
    return (
        f"id {configuration_id!r} is not a valid configuration id: IoT Hub takes lower-case letters, digits and "
        "-:+%_#*?!(),=@;$' (no spaces), at most 128 characters"
    )


def _kinds(content: dict) -> list[str]:
    return [kind for kind in CONTENT_KINDS if kind in content]


def check_content(subject: str, content: t.Any, where: str) -> dict:
    """The content object if it has exactly one of modulesContent / moduleContent / deviceContent (an object) and
    nothing else; ConfigurationInputError naming `where` otherwise."""
    if not isinstance(content, dict):
        raise ConfigurationInputError(
            f"{subject}: {where} must be a JSON object with one of {', '.join(CONTENT_KINDS)}, not "
            f"{type(content).__name__}"
        )
    kinds = _kinds(content)
    if len(kinds) != 1:
        found = f"it has {' and '.join(kinds)}" if kinds else f"it has {', '.join(sorted(content)) or 'no key'}"
        raise ConfigurationInputError(
            f"{subject}: {where} must have exactly one of {', '.join(CONTENT_KINDS)} ({found}); an IoT Edge "
            "deployment is modulesContent, a device configuration deviceContent, a module configuration moduleContent"
        )
    others = sorted(key for key in content if key not in CONTENT_KINDS)
    if others:
        raise ConfigurationInputError(
            f"{subject}: {where} has {', '.join(others)} beside {kinds[0]}; IoT Hub's content takes only "
            f"{', '.join(CONTENT_KINDS)}"
        )
    if not isinstance(content[kinds[0]], dict):
        raise ConfigurationInputError(f"{subject}: {where}'s {kinds[0]} must be a JSON object")
    if not content[kinds[0]]:
        # IoT Hub answers an empty kind like an absent one, so it could never compare equal
        raise ConfigurationInputError(
            f"{subject}: {where}'s {kinds[0]} is empty; give what the configuration sets (for an IoT Edge "
            "deployment at least $edgeAgent)"
        )
    return content


def load_content(subject: str, content: dict | None, content_file: str | None) -> dict:
    """The configuration's content, inline or from `content_file` (on the controller): either
    {"content": {...}} as `az iot edge deployment create --content` takes it, or the content object itself."""
    if content is not None:
        return check_content(subject, copy.deepcopy(content), "content")
    if content_file is None:
        raise ConfigurationInputError(f"{subject}: give content or content_file")
    where = f"content_file {content_file}"
    if not os.path.isfile(content_file):
        raise ConfigurationInputError(
            f"{subject}: {where} does not exist on the controller; give the path of the deployment manifest "
            "(JSON) relative to where the playbook runs, or an absolute one"
        )
    try:
        with open(content_file, encoding="utf-8") as handle:
            loaded = json.load(handle)
    except ValueError as error:
        reason = f"line {error.lineno} column {error.colno}: {error.msg}" if hasattr(error, "lineno") else str(error)
        raise ConfigurationInputError(
            f"{subject}: {where} is not JSON ({reason}); give a deployment manifest as az iot edge deployment "
            'create --content takes it: {"content": {"modulesContent": {...}}}'
        ) from None
    except OSError as error:
        raise ConfigurationInputError(f"{subject}: cannot read {where}: {error.strerror}") from None
    if isinstance(loaded, dict) and "content" in loaded and not _kinds(loaded):
        loaded = loaded["content"]
        where = f"{where} (its content)"
    return check_content(subject, loaded, where)


def check_labels(subject: str, labels: dict) -> dict[str, str]:
    """Labels are strings to IoT Hub; a number or boolean in YAML is refused rather than turned into text."""
    for name, value in labels.items():
        if not isinstance(value, str):
            raise ConfigurationInputError(
                f"{subject}: labels.{name} must be a string, not {type(value).__name__} {value!r}; quote it in YAML"
            )
    return dict(labels)


def check_metrics(subject: str, metrics: dict) -> dict[str, str]:
    if len(metrics) > MAX_METRICS:
        raise ConfigurationInputError(
            f"{subject}: metrics has {len(metrics)} queries; IoT Hub takes at most {MAX_METRICS} per configuration"
        )
    for name, query in metrics.items():
        if not isinstance(query, str) or not query.strip():
            raise ConfigurationInputError(
                f"{subject}: metrics.{name} must be a device query (text), for example {EXAMPLE_METRIC!r}"
            )
    return dict(metrics)


# --- comparison ---------------------------------------------------------------------------------------------------


def hub_content(configuration: dict) -> dict:
    """The hub's content without the kinds it leaves empty (IoT Hub may answer all three, two of them null)."""
    content = configuration.get("content") or {}
    return {kind: content[kind] for kind in CONTENT_KINDS if content.get(kind)}


def _hub_fields(configuration: dict) -> dict[str, t.Any]:
    return {
        "targetCondition": configuration.get("targetCondition") or "",
        "priority": configuration.get("priority") or 0,
        "labels": configuration.get("labels") or {},
        "metrics.queries": (configuration.get("metrics") or {}).get("queries") or {},
        "content": hub_content(configuration),
    }


def _desired_fields(desired: DesiredConfiguration) -> dict[str, t.Any]:
    return {
        "targetCondition": desired.target_condition,
        "priority": desired.priority,
        "labels": desired.labels,
        "metrics.queries": desired.metrics,
        "content": {desired.kind: desired.content[desired.kind]},
    }


def differences(desired: DesiredConfiguration, configuration: dict | None) -> list[str]:
    """The fields (FIELDS) in which the hub's configuration differs from the desired one; every field for one that
    does not exist."""
    if configuration is None:
        return list(FIELDS)
    current = _hub_fields(configuration)
    wanted = _desired_fields(desired)
    return [name for name in FIELDS if current[name] != wanted[name]]


def build_body(desired: DesiredConfiguration, configuration: dict | None) -> dict:
    """The PUT body. An update keeps the hub's content as the hub has it (IoT Hub refuses any change to it)."""
    body: dict[str, t.Any] = {
        "id": desired.configuration_id,
        "schemaVersion": (configuration or {}).get("schemaVersion") or SCHEMA_VERSION,
        "labels": desired.labels,
        "content": copy.deepcopy(configuration["content"])
        if configuration
        else {desired.kind: desired.content[desired.kind]},
        "targetCondition": desired.target_condition,
        "priority": desired.priority,
        "metrics": {"queries": desired.metrics},
    }
    if configuration and configuration.get("etag"):
        body["etag"] = configuration["etag"]
    return body


def summarise(configuration: dict | None) -> dict:
    """The diff view of a configuration: what the module manages, without the hub's read-only fields."""
    if not configuration:
        return {}
    view = {"id": configuration.get("id")}
    view.update(_hub_fields(configuration))
    return view


def desired_view(desired: DesiredConfiguration) -> dict:
    view = {"id": desired.configuration_id}
    view.update(_desired_fields(desired))
    return view


# --- secrets in what the modules return ---------------------------------------------------------------------------


def _registry_passwords(node: t.Any, inside: bool, found: list[tuple[dict, str]]) -> None:
    """Collect (dict, key) of every password under a registryCredentials key (nested, or in a layered deployment's
    dotted key such as properties.desired.runtime.settings.registryCredentials.acr)."""
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if inside and key == "password" and isinstance(value, str) and value:
            found.append((node, key))
        _registry_passwords(value, inside or "registryCredentials" in str(key), found)


def registry_passwords(content: t.Any) -> list[str]:
    """The container registry passwords in a configuration's content (for no_log_values)."""
    found: list[tuple[dict, str]] = []
    _registry_passwords(content, False, found)
    return [node[key] for node, key in found]


def mask_configuration(configuration: t.Any) -> t.Any:
    """A copy of a configuration (or of its diff view) with every container registry password of its content
    ($edgeAgent runtime.settings.registryCredentials.<name>.password) replaced by MASK."""
    if not isinstance(configuration, dict):
        return configuration
    masked = copy.deepcopy(configuration)
    found: list[tuple[dict, str]] = []
    _registry_passwords(masked.get("content"), False, found)
    for node, key in found:
        node[key] = MASK
    return masked
