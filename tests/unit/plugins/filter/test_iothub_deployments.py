"""The IoT Hub configurations an inventory declares (filters iotfleet.aziot.iothub_deployments, iothub_device_tags and
iothub_stale_configurations; role iothub_deployment)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.iotfleet.aziot.plugins.filter.enrollment_groups import enrollment_groups
from ansible_collections.iotfleet.aziot.plugins.filter.iothub_deployments import FilterModule, iothub_deployments
from ansible_collections.iotfleet.aziot.plugins.filter.iothub_device_tags import iothub_device_tags
from ansible_collections.iotfleet.aziot.plugins.filter.iothub_stale_configurations import (
    iothub_stale_configurations,
)

BASE = {
    "modulesContent": {
        "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "runtime": {}, "systemModules": {}}},
        "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}}},
    }
}
LAYERED = {"modulesContent": {"$edgeAgent": {"properties.desired.modules.probe": {"type": "docker"}}}}


def _hostvars() -> dict[str, dict]:
    def host(group: str, **tags: str) -> dict:
        return {"dps_enrollment_group": group, "device_identity_ca_cert_path": f"/pki/{group}-ca.cert.pem", **tags}

    return {
        "pa-1": host("plant-a", site="plant-a", ring="production"),
        "pa-2": host("plant-a", site="plant-a", ring="production"),
        "pb-1": dict(host("plant-b", site="plant-b", ring="canary"), dps_registration_registration_id="line-b-1"),
    }


def _cohorts(hostvars: dict | None = None) -> list[dict]:
    hostvars = hostvars or _hostvars()
    return enrollment_groups(list(hostvars), hostvars, ["site", "ring"])


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    (tmp_path / "deployments").mkdir()
    (tmp_path / "deployments" / "base.json").write_text(json.dumps({"content": BASE}), encoding="utf-8")
    (tmp_path / "deployments" / "layer.json").write_text(json.dumps(LAYERED), encoding="utf-8")
    return tmp_path


def _plan(base_dir: Path, *deployments: dict, cohorts: list[dict] | None = None) -> list[dict]:
    return iothub_deployments(list(deployments), _cohorts() if cohorts is None else cohorts, str(base_dir))


def _refusal(base_dir: Path, *deployments: dict, cohorts: list[dict] | None = None) -> str:
    with pytest.raises(AnsibleFilterError) as error:
        _plan(base_dir, *deployments, cohorts=cohorts)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_cohorts_become_an_or_of_their_tags_and_rings_an_in(base_dir: Path) -> None:
    base = {"name": "sensor-base", "content_file": "deployments/base.json", "cohorts": ["plant-a", "plant-b"]}
    canary = {"name": "sensor-canary", "content_file": "deployments/layer.json", "rings": ["canary"], "priority": 20}
    planned = _plan(
        base_dir, base, dict(canary, labels={"team": "line-3"}, metrics={"ok": "SELECT deviceId FROM devices"})
    )
    first, second = planned
    assert first["id"] == "sensor-base" and first["priority"] == 0
    assert first["target_condition"] == (
        "(tags.ring='production' AND tags.site='plant-a') OR (tags.ring='canary' AND tags.site='plant-b')"
    )
    assert first["hosts"] == ["pa-1", "pa-2", "pb-1"] and first["cohorts"] == ["plant-a", "plant-b"]
    assert first["content_file"] == str(base_dir / "deployments" / "base.json")
    assert first["kind"] == "modulesContent" and first["layered"] is False
    assert first["labels"] == {"managed-by": "iotfleet.aziot"} and first["metrics"] == {}
    # Rings without cohorts: the cohorts of those rings, and the ring itself in the condition.
    assert second["target_condition"] == "(tags.ring='canary' AND tags.site='plant-b') AND tags.ring IN ['canary']"
    assert second["hosts"] == ["pb-1"] and second["layered"] is True and second["priority"] == 20
    assert second["labels"] == {"team": "line-3", "managed-by": "iotfleet.aziot"}
    assert second["metrics"] == {"ok": "SELECT deviceId FROM devices"}
    assert FilterModule().filters()["iothub_deployments"] is iothub_deployments


def test_a_raw_target_condition_and_an_absolute_content_file_are_taken_as_they_are(base_dir: Path) -> None:
    entry = {"name": "all", "content_file": str(base_dir / "deployments" / "base.json"), "target_condition": " * "}
    (planned,) = _plan(base_dir, entry)
    assert planned["target_condition"] == "*" and planned["cohorts"] == [] and planned["hosts"] == []


def test_the_content_itself_without_a_content_wrapper_and_tag_literals(base_dir: Path) -> None:
    (base_dir / "device.json").write_text(json.dumps({"deviceContent": {"properties.desired.x": 1}}), encoding="utf-8")
    hostvars = {"d-1": {"dps_enrollment_group": "g", "device_identity_ca_cert_path": "/g", "site": "o'hare", "ring": 3}}
    (planned,) = _plan(base_dir, {"name": "d", "content_file": "device.json"}, cohorts=_cohorts(hostvars))
    assert planned["kind"] == "deviceContent" and planned["layered"] is False
    # Only a module's twin: a layered deployment too.
    (base_dir / "twin.json").write_text(json.dumps({"modulesContent": {"probe": {"properties.desired.x": 1}}}), "utf-8")
    assert _plan(base_dir, {"name": "t", "content_file": "twin.json"}, cohorts=_cohorts(hostvars))[0]["layered"]
    assert planned["target_condition"] == 'tags.ring=3 AND tags.site="o\'hare"'


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"cohorts": ["plant-c"]}, "deployment 'x': unknown cohort 'plant-c' (the inventory's cohorts"),
        ({"priority": -1}, "deployment 'x': priority -1 is not a non-negative integer"),
        ({"priority": "high"}, "deployment 'x': priority 'high' is not a non-negative integer"),
        ({"priority": True}, "deployment 'x': priority True is not a non-negative integer"),
        ({"priority": 2**31}, "deployment 'x': priority 2147483648 is above IoT Hub's largest"),
        ({"rings": ["pilot"]}, "deployment 'x': rings ['pilot'] are carried by none of its cohorts (ring tag"),
        ({"cohorts": ["plant-a"], "rings": ["canary"]}, "deployment 'x': rings ['canary'] are carried by none"),
        ({"cohorts": "plant-a"}, "deployment 'x': cohorts must be a list"),
        ({"target_condition": "*", "cohorts": ["plant-a"]}, "give either target_condition or cohorts/rings"),
        ({"target_condition": ""}, "target_condition must be a non-empty string"),
        ({"cohort": ["plant-a"]}, "deployment 'x': unknown key(s) cohort; a deployment takes name,"),
        ({"labels": {"managed-by": "me"}}, "the label managed-by is the collection's"),
        ({"metrics": {str(n): "SELECT" for n in range(6)}}, "metrics has 6 queries; IoT Hub takes at most 5"),
        ({"content_file": "deployments/nope.json"}, "content_file {dir}/deployments/nope.json does not exist"),
        ({"content_file": None}, "deployment 'x': content_file is missing"),
    ],
)
def test_bad_declarations_are_refused_in_one_line(base_dir: Path, entry: dict, expected: str) -> None:
    deployment = dict({"name": "x", "content_file": "deployments/base.json"}, **entry)
    assert expected.format(dir=base_dir) in _refusal(base_dir, deployment)


def test_bad_names_and_duplicates(base_dir: Path) -> None:
    base = {"content_file": "deployments/base.json", "cohorts": ["plant-a"]}
    assert "at most 128 lower-case letters" in _refusal(base_dir, dict(base, name="Sensor Base"))
    assert "a deployment without a name" in _refusal(base_dir, base)
    message = _refusal(base_dir, dict(base, name="a"), dict(base, name="a", priority=3))
    assert message.startswith("deployment 'a': declared twice")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "is not JSON (Expecting property name enclosed in double quotes at line 1 column 2)"),
        ('{"content": {}}', "must hold exactly one of modulesContent, moduleContent, deviceContent (it has none)"),
        ('{"moduleContent": {}, "deviceContent": {}}', "(it has moduleContent and deviceContent)"),
        ('["modulesContent"]', "(it has none)"),
        ('{"deviceContent": {}}', "has an empty deviceContent; give it the content to deploy"),
        ('{"modulesContent": []}', "has an empty modulesContent; give it the content to deploy"),
    ],
)
def test_content_files_that_are_not_content_are_refused(base_dir: Path, text: str, expected: str) -> None:
    (base_dir / "bad.json").write_text(text, encoding="utf-8")
    message = _refusal(base_dir, {"name": "bad", "content_file": "bad.json"})
    assert message.startswith(f"deployment 'bad': content_file {base_dir / 'bad.json'} ") and expected in message


def test_a_condition_that_would_reach_a_cohort_it_does_not_name_is_refused(base_dir: Path) -> None:
    hostvars = _hostvars()
    # plant-c carries plant-a's tags: a condition over plant-a's tags reaches it too.
    hostvars["pc-1"] = dict(hostvars["pa-1"], dps_enrollment_group="plant-c", device_identity_ca_cert_path="/pki/c")
    cohorts = _cohorts(hostvars)
    entry = {"name": "a", "content_file": "deployments/base.json", "cohorts": ["plant-a"]}
    message = _refusal(base_dir, entry, cohorts=cohorts)
    assert message.startswith("deployment 'a': its target condition would also reach cohort 'plant-c'")
    # Named too, both are meant: fine. A superset of tags is reached as well.
    assert _plan(base_dir, dict(entry, cohorts=["plant-a", "plant-c"]), cohorts=cohorts)[0]["hosts"] == [
        "pa-1",
        "pa-2",
        "pc-1",
    ]
    hostvars["pc-1"]["environment"] = "test"
    superset = enrollment_groups(list(hostvars), hostvars, ["site", "ring", "environment"])
    assert "would also reach cohort 'plant-c'" in _refusal(base_dir, entry, cohorts=superset)


def test_a_cohort_without_tags_cannot_be_targeted(base_dir: Path) -> None:
    hostvars = {"f-1": {"device_identity_ca_cert_path": "/pki/fleet"}}
    message = _refusal(base_dir, {"name": "f", "content_file": "deployments/base.json"}, cohorts=_cohorts(hostvars))
    assert message.startswith("deployment 'f': cohort 'fleet' has no twin tags")
    assert "no cohorts (no devices)" in _refusal(
        base_dir, {"name": "f", "content_file": "deployments/base.json"}, cohorts=[]
    )


def test_two_base_deployments_of_one_cohort_at_one_priority_are_refused(base_dir: Path) -> None:
    first = {"name": "one", "content_file": "deployments/base.json", "cohorts": ["plant-a"], "priority": 5}
    second = dict(first, name="two", cohorts=["plant-a", "plant-b"])
    message = _refusal(base_dir, first, second)
    assert message.startswith("deployment 'two': it and 'one' both reach pa-1 at priority 5")
    # Another priority, or a layered deployment: no contest.
    assert len(_plan(base_dir, first, dict(second, priority=6))) == 2
    assert len(_plan(base_dir, first, dict(second, content_file="deployments/layer.json"))) == 2


def test_no_deployments_plan_nothing(base_dir: Path) -> None:
    assert _plan(base_dir) == [] and iothub_deployments(None, [], str(base_dir)) == []
    with pytest.raises(AnsibleFilterError, match="must be a list of deployments"):
        iothub_deployments({"name": "x"}, [], str(base_dir))


def test_device_tags_are_the_cohorts_and_the_device_id_the_registration_id() -> None:
    devices = iothub_device_tags(["pb-1", "pa-1"], _cohorts(), _hostvars())
    assert devices == [
        {"device_id": "line-b-1", "tags": {"site": "plant-b", "ring": "canary"}},
        {"device_id": "pa-1", "tags": {"site": "plant-a", "ring": "production"}},
    ]
    with pytest.raises(AnsibleFilterError, match=r"^pz-9: in none of the cohorts"):
        iothub_device_tags(["pz-9"], _cohorts(), _hostvars())


def test_stale_configurations_are_only_the_collections() -> None:
    hub = [
        {"id": "kept", "labels": {"managed-by": "iotfleet.aziot"}},
        {"id": "gone", "labels": {"managed-by": "iotfleet.aziot"}},
        {"id": "by-hand", "labels": {"team": "x"}},
        {"id": "no-labels", "labels": None},
        {"id": "other-tool", "labels": {"managed-by": "terraform"}},
    ]
    assert iothub_stale_configurations(hub, [{"id": "kept"}]) == ["gone"]
