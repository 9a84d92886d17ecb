# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: iothub_deployments
short_description: The IoT Hub configurations (IoT Edge deployments) an inventory declares, over its cohorts
version_added: 0.1.0
author: iotfleet developers (@iotfleet)
description:
  - Turns the deployments declared in the inventory (C(iothub_deployment_deployments)) into the IoT Hub
    configurations that the role C(iotfleet.aziot.iothub_deployment) ensures with
    M(iotfleet.aziot.iothub_configuration).
  - A deployment's target condition is, unless it gives its own C(target_condition), the OR over its C(cohorts) (the
    DPS enrollment groups of the inventory, P(iotfleet.aziot.enrollment_groups#filter)'s output; every cohort when it
    names none) of the AND of that cohort's twin tags - the tags the cohort's enrollment group writes into its
    devices' twins - AND C(tags.<ring_tag> IN [...]) when it gives C(rings).
  - Give it the cohorts of the whole inventory (C(groups['pis'])), not only the play's hosts, so that C(--limit) or a
    job slice never changes a deployment.
  - Refuses, in one line naming the deployment and the fix - an unknown key, a bad or duplicate name, a bad priority,
    an unknown cohort, a cohort without tags, a target condition that would also reach a cohort the deployment does
    not name (two cohorts with the same tags), rings that none of its cohorts carries, a missing, non-JSON or
    content-less content file, two base deployments of one cohort at the same priority (IoT Hub would pick the newer).
  - Reads the content files (on the controller) to check them; the module reads them again when it writes.
options:
  _input:
    description:
      - The deployments, each a dict - C(name) (the configuration id), C(content_file) (a JSON file, absolute or
        relative to O(base_dir) - a C(content) object as C(az iot edge deployment create --content) takes, or the
        content itself; one of C(modulesContent), C(moduleContent), C(deviceContent)), C(priority) (default 0),
        C(cohorts), C(rings), C(target_condition) (instead of C(cohorts) and C(rings)), C(labels), C(metrics).
    type: list
    elements: dict
    required: true
  cohorts:
    description: The inventory's cohorts, P(iotfleet.aziot.enrollment_groups#filter) over every device.
    type: list
    elements: dict
    required: true
  base_dir:
    description: The directory relative content files are in (the inventory's, C(inventory_dir)).
    type: path
    required: true
  ring_tag:
    description: The twin tag that holds a cohort's ring.
    type: str
    default: ring
"""

EXAMPLES = r"""
---
- name: The configurations the inventory declares
  ansible.builtin.debug:
    msg: >-
      {{ iothub_deployment_deployments | iotfleet.aziot.iothub_deployments(
           groups['pis'] | iotfleet.aziot.enrollment_groups(hostvars), inventory_dir) }}
"""

RETURN = r"""
---
_value:
  description: One entry per deployment, in the declared order.
  type: list
  elements: dict
  contains:
    id:
      description: The configuration id (the deployment's name).
      type: str
    target_condition:
      description: Its target condition.
      type: str
      sample: "(tags.site='plant-3' AND tags.ring='canary') AND tags.ring IN ['canary']"
    priority:
      description: Its priority.
      type: int
    labels:
      description: Its labels, with C(managed-by=iotfleet.aziot) (the role prunes only configurations that carry it).
      type: dict
    metrics:
      description: Its custom metric queries, by name.
      type: dict
    content_file:
      description: The absolute path of its content file.
      type: str
    kind:
      description:
        - What the content is - C(modulesContent) (an IoT Edge deployment), C(moduleContent) or C(deviceContent).
      type: str
    layered:
      description:
        - Whether it is a layered IoT Edge deployment (its C($edgeAgent) sets only C(properties.desired.*) paths).
      type: bool
    cohorts:
      description: The cohorts it targets (empty with its own target condition).
      type: list
      elements: str
    hosts:
      description: The inventory hosts of those cohorts that its target condition reaches.
      type: list
      elements: str
"""

import json
import os
import re

from ansible.errors import AnsibleFilterError

MANAGED_BY = "managed-by"
MANAGER = "iotfleet.aziot"
KINDS = ("modulesContent", "moduleContent", "deviceContent")
KEYS = ("name", "content_file", "priority", "cohorts", "rings", "target_condition", "labels", "metrics")
MAX_METRICS = 5  # IoT Hub: at most 5 custom metric queries per configuration
MAX_PRIORITY = 2**31 - 1  # the REST API's priority is an int32; IoT Hub takes non-negative ones
# IoT Hub's rule for a configuration id (the iothub_configuration module's): lower case, digits and - + % _ * ! ',
# at most 128 characters.
NAME_RE = re.compile(r"^[a-z0-9\-+%_*!']{1,128}$")


class _Refusal(AnsibleFilterError):
    """One line naming the deployment and the fix."""


def _refuse(name: str, message: str) -> None:
    raise _Refusal(f"deployment {name!r}: {message}")


def _literal(name: str, value) -> str:
    """An IoT Hub query language literal for a tag value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if value is None:
        return "null"
    text = str(value)
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    _refuse(name, f"the tag value {text!r} holds both quote characters, which a target condition cannot spell")
    return ""  # unreachable


def _tag_paths(tags: dict, prefix: str = "tags") -> dict[str, object]:
    """A cohort's tags as query paths (nested tags become tags.a.b), sorted for a stable condition."""
    paths: dict[str, object] = {}
    for key in sorted(tags):
        value = tags[key]
        if isinstance(value, dict):
            paths.update(_tag_paths(value, f"{prefix}.{key}"))
        else:
            paths[f"{prefix}.{key}"] = value
    return paths


def _cohort_condition(name: str, cohort: dict) -> str:
    return " AND ".join(f"{path}={_literal(name, value)}" for path, value in _tag_paths(cohort["tags"]).items())


def _reaches(target_tags: list[dict], ring_tag: str, rings: list, tags: dict) -> bool:
    """Whether a condition made of these cohorts' tags (and rings) matches a device carrying `tags`."""
    paths = _tag_paths(tags)
    if not any(
        all(path in paths and paths[path] == value for path, value in _tag_paths(t).items()) for t in target_tags
    ):
        return False
    return not rings or tags.get(ring_tag) in rings


def _str_list(name: str, key: str, value) -> list:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        _refuse(name, f"{key} must be a list (e.g. {key}: [{value!s}])")
    return list(value)


def _content(name: str, entry: dict, base_dir: str) -> tuple[str, str, bool]:
    """The content file's absolute path, its kind and whether it is a layered deployment."""
    path = entry.get("content_file")
    if not path or not isinstance(path, str):
        _refuse(name, "content_file is missing - the JSON file of its content (an IoT Edge deployment manifest)")
    path = os.path.normpath(os.path.join(base_dir, os.path.expanduser(path)))
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        _refuse(name, f"content_file {path} does not exist; give the path of its JSON content (relative to {base_dir})")
    except (OSError, UnicodeDecodeError) as error:
        _refuse(name, f"content_file {path} cannot be read ({error.__class__.__name__}: {error}); fix its permissions")
    except json.JSONDecodeError as error:
        _refuse(
            name, f"content_file {path} is not JSON ({error.msg} at line {error.lineno} column {error.colno}); fix it"
        )
    content = data.get("content", data) if isinstance(data, dict) else None
    kinds = [kind for kind in KINDS if isinstance(content, dict) and kind in content]
    if len(kinds) != 1:
        found = f"it has {' and '.join(kinds)}" if kinds else "it has none"
        _refuse(
            name,
            f"content_file {path} must hold exactly one of {', '.join(KINDS)} ({found}), "
            'optionally inside {"content": ...}',
        )
    kind = kinds[0]
    if not isinstance(content[kind], dict) or not content[kind]:
        # IoT Hub takes an empty kind as an absent one: the module would see a content change on every run.
        _refuse(name, f"content_file {path} has an empty {kind}; give it the content to deploy (a non-empty object)")
    layered = False
    if kind == "modulesContent":
        modules = content[kind]
        # Azure's rule: a layered deployment sets properties.desired.<path> keys of $edgeAgent (or only other modules'
        # twins), never $edgeAgent's properties.desired itself.
        layered = "properties.desired" not in (modules.get("$edgeAgent") or {})
    return path, kind, layered


def _labels(name: str, labels) -> dict:
    if labels is None:
        labels = {}
    if not isinstance(labels, dict):
        _refuse(name, "labels must be a dict of strings (e.g. labels: {team: line-3})")
    labels = {str(key): str(value) for key, value in labels.items()}
    if labels.get(MANAGED_BY, MANAGER) != MANAGER:
        _refuse(
            name, f"the label {MANAGED_BY} is the collection's ({MANAGER}, what prune goes by); drop it from labels"
        )
    labels[MANAGED_BY] = MANAGER
    return labels


def _metrics(name: str, metrics) -> dict:
    if metrics is None:
        return {}
    if not isinstance(metrics, dict) or not all(isinstance(query, str) for query in metrics.values()):
        _refuse(name, "metrics must be a dict of metric name to query (e.g. applied: SELECT deviceId FROM devices ...)")
    if len(metrics) > MAX_METRICS:
        _refuse(name, f"metrics has {len(metrics)} queries; IoT Hub takes at most {MAX_METRICS}")
    return {str(key): value for key, value in metrics.items()}


def _priority(name: str, priority) -> int:
    if priority is None:
        return 0
    if isinstance(priority, bool) or not isinstance(priority, (int, str)) or not str(priority).strip().isdigit():
        _refuse(name, f"priority {priority!r} is not a non-negative integer (0 = lowest; the highest wins on a device)")
    value = int(priority)
    if value > MAX_PRIORITY:
        _refuse(name, f"priority {value} is above IoT Hub's largest ({MAX_PRIORITY})")
    return value


def _one(entry: dict, by_cohort: dict[str, dict], base_dir: str, ring_tag: str) -> dict:
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise AnsibleFilterError(
            f"a deployment without a name ({json.dumps(entry, default=str)[:120]}): give it name: <configuration id>"
        )
    unknown = sorted(set(entry) - set(KEYS))
    if unknown:
        _refuse(name, f"unknown key(s) {', '.join(unknown)}; a deployment takes {', '.join(KEYS)}")
    if not NAME_RE.match(name):
        _refuse(
            name,
            "the name is its IoT Hub configuration id: at most 128 lower-case letters, digits and - + % _ * ! ' "
            "(no spaces, dots or upper case)",
        )
    cohort_names = _str_list(name, "cohorts", entry.get("cohorts"))
    rings = _str_list(name, "rings", entry.get("rings"))
    raw = entry.get("target_condition")
    if raw is not None and (cohort_names or rings):
        _refuse(name, "give either target_condition or cohorts/rings, not both")
    if raw is not None and (not isinstance(raw, str) or not raw.strip()):
        _refuse(name, "target_condition must be a non-empty string (e.g. tags.site='plant-3', or * for every device)")
    content_file, kind, layered = _content(name, entry, base_dir)
    planned = {
        "id": name,
        "priority": _priority(name, entry.get("priority")),
        "labels": _labels(name, entry.get("labels")),
        "metrics": _metrics(name, entry.get("metrics")),
        "content_file": content_file,
        "kind": kind,
        "layered": layered,
        "cohorts": [],
        "hosts": [],
    }
    if raw is not None:
        planned["target_condition"] = raw.strip()
        return planned

    for cohort in cohort_names:
        if cohort not in by_cohort:
            known = ", ".join(sorted(by_cohort)) or "none"
            _refuse(
                name,
                f"unknown cohort {cohort!r} (the inventory's cohorts - dps_enrollment_group values - are: {known}); "
                "fix the name or add the cohort's devices to the inventory",
            )
    if rings:
        # Rings select among its cohorts (every cohort when it names none): each ring must be one of theirs.
        among = cohort_names or sorted(by_cohort)
        carried = [by_cohort[cohort]["tags"].get(ring_tag) for cohort in among]
        missing = [ring for ring in rings if ring not in carried]
        if missing:
            have = ", ".join(f"{cohort}: {by_cohort[cohort]['tags'].get(ring_tag, 'none')}" for cohort in among)
            _refuse(
                name,
                f"rings {missing} are carried by none of its cohorts ({ring_tag} tag - {have}); set {ring_tag}: "
                f"{missing[0]} in a cohort's group_vars, or drop it from rings",
            )
    # No cohorts named: every cohort (with rings, every cohort of those rings).
    chosen = cohort_names or [
        cohort for cohort in sorted(by_cohort) if not rings or by_cohort[cohort]["tags"].get(ring_tag) in rings
    ]
    if not chosen:
        _refuse(name, "the inventory has no cohorts (no devices) to target; give target_condition instead")
    for cohort in chosen:
        if not by_cohort[cohort]["tags"]:
            _refuse(
                name,
                f"cohort {cohort!r} has no twin tags (dps_enrollment_tag_vars: site, ring ...), so no target condition "
                "can select its devices; set site (or another tag variable) in its group_vars",
            )
    target_tags = [by_cohort[cohort]["tags"] for cohort in chosen]
    for other, cohort in sorted(by_cohort.items()):
        if other not in chosen and _reaches(target_tags, ring_tag, rings, cohort["tags"]):
            _refuse(
                name,
                f"its target condition would also reach cohort {other!r} (tags {json.dumps(cohort['tags'])}), which it "
                f"does not name; give {other!r} a tag of its own in its group_vars (e.g. site), or add it to cohorts",
            )
    conditions = [_cohort_condition(name, by_cohort[cohort]) for cohort in chosen]
    condition = conditions[0] if len(conditions) == 1 else " OR ".join(f"({part})" for part in conditions)
    if rings:
        ring_values = ", ".join(_literal(name, ring) for ring in rings)
        condition = f"({condition}) AND tags.{ring_tag} IN [{ring_values}]"
    planned["target_condition"] = condition
    planned["cohorts"] = list(chosen)
    planned["hosts"] = [
        host
        for cohort in chosen
        if _reaches(target_tags, ring_tag, rings, by_cohort[cohort]["tags"])
        for host in by_cohort[cohort]["hosts"]
    ]
    return planned


def iothub_deployments(deployments: list, cohorts: list, base_dir: str, ring_tag: str = "ring") -> list[dict]:
    if deployments is None:
        return []
    if not isinstance(deployments, (list, tuple)):
        raise AnsibleFilterError("iothub_deployment_deployments must be a list of deployments (name, content_file ...)")
    by_cohort = {str(cohort["name"]): cohort for cohort in cohorts}
    planned: list[dict] = []
    for entry in deployments:
        if not isinstance(entry, dict):
            raise AnsibleFilterError(f"a deployment must be a dict (name, content_file ...), not {entry!r}")
        one = _one(entry, by_cohort, str(base_dir), ring_tag)
        if any(other["id"] == one["id"] for other in planned):
            _refuse(one["id"], "declared twice; IoT Hub configuration ids are unique - rename one")
        planned.append(one)
    # Two base deployments (or two device configurations) that reach one cohort at one priority: IoT Hub applies the
    # newer one, which a delete and re-create would change. Layered deployments stack and never compete.
    for index, first in enumerate(planned):
        for second in planned[index + 1 :]:
            if first["layered"] or second["layered"] or first["kind"] != second["kind"]:
                continue
            shared = sorted(set(first["hosts"]) & set(second["hosts"]))
            if shared and first["priority"] == second["priority"]:
                _refuse(
                    second["id"],
                    f"it and {first['id']!r} both reach {shared[0]} at priority {first['priority']} (IoT Hub would "
                    "apply the newer one); give one of them a higher priority",
                )
    return planned


class FilterModule:
    def filters(self) -> dict:
        return {"iothub_deployments": iothub_deployments}
