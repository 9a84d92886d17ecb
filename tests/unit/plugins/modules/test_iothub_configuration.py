"""Unit tests for the iothub_configuration module with scripted IoT Hub answers (`scripted`): the exact wire
exchanges, and what a hub does not produce on demand (a 412 on every try, a 403 from a hub at its limit)."""

from __future__ import annotations

import json

import pytest

from ansible_collections.iotfleet.aziot.plugins.modules import iothub_configuration
from tests.support.dps_fakes import reply
from tests.support.iothub_fakes import HubHarness, hub_error, hub_policy_key

EDGE = {"modulesContent": {"$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "modules": {}}}}}
EDGE_V2 = {"modulesContent": {"$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "modules": {"m": {}}}}}}
CONDITION = "tags.site='plant-3'"
QUERIES_OK = {"targetConditionError": "", "customMetricQueryErrors": {}}
CHANGED_CONTENT = (
    "configuration plant-3: IoT Hub does not change a configuration's content once created; set "
    "replace_changed_content=true to delete and re-create it (its devices drop it for a moment), or give the new "
    "content a new id"
)


@pytest.fixture
def scripted(monkeypatch) -> HubHarness:
    return HubHarness(monkeypatch)


def without_content(values: dict) -> dict:
    """`values` without the content option (as a task that does not set it: Ansible counts a null as set)."""
    return {key: value for key, value in values.items() if key != "content"}


def args(harness: HubHarness, **extra) -> dict:
    values = dict(
        harness.hub_args(),
        id="plant-3",
        target_condition=CONDITION,
        priority=10,
        labels={"managed-by": "iotfleet.aziot"},
        content=EDGE,
    )
    values.update(extra)
    return values


def on_hub(content=EDGE, **changes) -> dict:
    """The configuration as the hub answers it for args()."""
    configuration = {
        "id": "plant-3",
        "schemaVersion": "1.0",
        "labels": {"managed-by": "iotfleet.aziot"},
        "content": {**content, "moduleContent": {}, "deviceContent": {}},
        "targetCondition": CONDITION,
        "priority": 10,
        "metrics": {"queries": {}, "results": {}},
        "systemMetrics": {"queries": {}, "results": {"targetedCount": 2, "appliedCount": 2}},
        "etag": "MQ==",
        "createdTimeUtc": "2026-12-07T15:00:00Z",
        "lastUpdatedTimeUtc": "2026-12-07T15:00:00Z",
    }
    configuration.update(changes)
    return configuration


DPS_CONNECTION_STRING = "HostName=x.azure-devices-provisioning.net;SharedAccessKeyName=a;SharedAccessKey=eA=="
NOT_FOUND = hub_error(404, "ConfigurationNotFound", "Configuration plant-3 not found")


def run(harness, values, *script):
    return harness.run(iothub_configuration, values, *script)


# --- scripted: the exchanges --------------------------------------------------------------------------------------


def test_create_checks_the_queries_then_puts_without_if_match(scripted):
    result = run(scripted, args(scripted), NOT_FOUND, reply(200, QUERIES_OK), reply(200, on_hub())).result
    assert result["changed"] is True
    assert result["differences"] == ["targetCondition", "priority", "labels", "metrics.queries", "content"]
    assert result["configuration"]["etag"] == "MQ=="
    assert (result["replaced"], result["requests"], result["retried_requests"]) == (False, 3, 0)
    assert scripted.methods() == [
        "GET configurations/plant-3",
        "POST configurations/testQueries",
        "PUT configurations/plant-3",
    ]
    put = scripted.calls[2]
    assert "If-Match" not in put["headers"]
    assert put["body"] == {
        "id": "plant-3",
        "schemaVersion": "1.0",
        "labels": {"managed-by": "iotfleet.aziot"},
        "content": EDGE,
        "targetCondition": CONDITION,
        "priority": 10,
        "metrics": {"queries": {}},
    }
    assert scripted.calls[1]["body"] == {"targetCondition": CONDITION, "customMetricQueries": {}}


def test_check_mode_checks_the_queries_and_writes_nothing(scripted):
    values = args(scripted, _ansible_check_mode=True, _ansible_diff=True)
    result = run(scripted, values, NOT_FOUND, reply(200, QUERIES_OK)).result
    assert result["changed"] is True and result["configuration"] == {}
    assert scripted.methods() == ["GET configurations/plant-3", "POST configurations/testQueries"]
    assert result["diff"]["before"] == ""
    assert json.loads(result["diff"]["after"])["targetCondition"] == CONDITION


def test_nothing_to_change_is_one_read(scripted):
    result = run(scripted, args(scripted), reply(200, on_hub())).result
    assert (result["changed"], result["differences"], result["requests"]) == (False, [], 1)
    assert result["configuration"]["systemMetrics"]["results"]["appliedCount"] == 2


def test_an_update_puts_with_the_etag_and_the_hubs_content(scripted):
    values = args(scripted, priority=20, metrics={"ok": "SELECT deviceId FROM devices"}, _ansible_diff=True)
    updated = on_hub(priority=20, etag="Mg==")
    result = run(scripted, values, reply(200, on_hub()), reply(200, QUERIES_OK), reply(200, updated)).result
    assert result["changed"] is True
    assert result["differences"] == ["priority", "metrics.queries"]
    put = scripted.calls[2]
    assert put["headers"]["If-Match"] == '"MQ=="'
    assert put["body"]["content"] == on_hub()["content"]
    assert (put["body"]["priority"], put["body"]["etag"]) == (20, "MQ==")
    before, after = json.loads(result["diff"]["before"]), json.loads(result["diff"]["after"])
    assert (before["priority"], after["priority"]) == (10, 20)
    assert "etag" not in before and "systemMetrics" not in before


def test_changed_content_is_refused_without_opt_in(scripted):
    run(scripted, args(scripted, content=EDGE_V2), reply(200, on_hub()), reply(200, QUERIES_OK))
    assert scripted.last.failed
    assert scripted.last.result["msg"] == CHANGED_CONTENT
    assert "PUT configurations/plant-3" not in scripted.methods()


def test_changed_content_with_opt_in_is_deleted_then_created(scripted):
    values = args(scripted, content=EDGE_V2, replace_changed_content=True)
    script = (reply(200, on_hub()), reply(200, QUERIES_OK), reply(204), reply(200, on_hub(content=EDGE_V2)))
    result = run(scripted, values, *script).result
    assert (result["changed"], result["replaced"], result["differences"]) == (True, True, ["content"])
    assert scripted.methods()[2:] == ["DELETE configurations/plant-3", "PUT configurations/plant-3"]
    assert scripted.calls[2]["headers"]["If-Match"] == '"MQ=="'
    assert "If-Match" not in scripted.calls[3]["headers"]
    assert scripted.calls[3]["body"]["content"] == EDGE_V2


def test_a_malformed_target_condition_writes_nothing(scripted):
    answer = {
        "targetConditionError": "Syntax error at line 1, column 10: expected a value",
        "customMetricQueryErrors": {},
    }
    run(scripted, args(scripted, target_condition="tags.site="), NOT_FOUND, reply(200, answer))
    assert scripted.last.result["msg"] == (
        "configuration plant-3: target_condition 'tags.site=' is malformed: Syntax error at line 1, column 10: "
        "expected a value; fix it (for example tags.site='plant-3', or '*' for every device), nothing was written"
    )
    assert scripted.last.result["requests"] == 2


def test_a_malformed_metric_query_writes_nothing(scripted):
    answer = {"targetConditionError": "", "customMetricQueryErrors": {"bad": "Unknown collection 'device'"}}
    run(scripted, args(scripted, metrics={"bad": "SELECT * FROM device"}), NOT_FOUND, reply(200, answer))
    assert scripted.last.result["msg"].startswith("configuration plant-3: metrics.bad is malformed: Unknown collection")


def test_a_stale_etag_is_read_again_and_retried(scripted):
    script = (
        reply(200, on_hub()),
        reply(200, QUERIES_OK),
        hub_error(412, "PreconditionFailed", "etag mismatch"),
        reply(200, on_hub(etag="Mw==", labels={"owner": "someone"})),
        reply(200, on_hub(priority=20, etag="NA==")),
    )
    result = run(scripted, args(scripted, priority=20), *script).result
    assert result["changed"] is True and result["configuration"]["etag"] == "NA=="
    # the queries are checked once; the second PUT carries the etag read again
    assert scripted.methods().count("POST configurations/testQueries") == 1
    assert scripted.calls[4]["headers"]["If-Match"] == '"Mw=="'
    assert any("HTTP 412 on write" in line for line in scripted.logs)


def test_a_configuration_that_keeps_changing_fails_in_one_line(scripted):
    script = [reply(200, on_hub()), reply(200, QUERIES_OK), hub_error(412, "PreconditionFailed")]
    script += [reply(200, on_hub()), hub_error(412, "PreconditionFailed")] * 3
    run(scripted, args(scripted, priority=20), *script)
    result = scripted.last.result
    assert result["msg"] == (
        "configuration plant-3: the configuration changed in IoT Hub while this task was writing it, 4 times in a "
        "row (HTTP 412); it changed meanwhile, run the task again"
    )
    assert result["requests"] == 9


def test_a_policy_without_registry_write_is_named(scripted):
    script = (NOT_FOUND, reply(200, QUERIES_OK), hub_error(401, "IotHubUnauthorizedAccess", "Unauthorized"))
    values = dict(args(scripted), connection_string=scripted.hub_args("registryread")["connection_string"])
    run(scripted, values, *script)
    result = scripted.last.result
    assert result["msg"].startswith(
        "configuration plant-3: policy registryread may not create configuration plant-3: give it the RegistryWrite "
        "right (IoT Hub > Shared access policies)"
    )
    assert (result["http_status"], result["error_name"]) == (401, "IotHubUnauthorizedAccess")
    assert hub_policy_key("registryread") not in scripted.last.text


def test_a_hub_at_its_configuration_limit_is_named(scripted):
    script = (NOT_FOUND, reply(200, QUERIES_OK), hub_error(403, "IotHubQuotaExceeded", "Too many configurations"))
    run(scripted, args(scripted), *script)
    assert "is at its limit of configurations" in scripted.last.result["msg"]
    assert scripted.last.result["error_name"] == "IotHubQuotaExceeded"


def test_throttling_is_waited_out(scripted):
    script = (hub_error(429, "ThrottlingException", "slow down", retry_after=5), reply(200, on_hub()))
    result = run(scripted, args(scripted), *script).result
    assert (result["changed"], result["requests"], result["retried_requests"]) == (False, 2, 1)
    assert scripted.sleeps == [5.0]


def test_absent_deletes_with_the_etag_and_is_then_not_changed(scripted):
    result = run(scripted, args(scripted, state="absent", _ansible_diff=True), reply(200, on_hub()), reply(204)).result
    assert (result["changed"], result["differences"], result["configuration"]) == (True, ["configuration"], {})
    assert scripted.calls[1]["headers"]["If-Match"] == '"MQ=="'
    assert result["diff"]["after"] == ""
    assert json.loads(result["diff"]["before"])["id"] == "plant-3"
    result = run(scripted, args(scripted, state="absent"), NOT_FOUND).result
    assert (result["changed"], result["requests"]) == (False, 1)


def test_absent_in_check_mode_deletes_nothing(scripted):
    result = run(scripted, args(scripted, state="absent", _ansible_check_mode=True), reply(200, on_hub())).result
    assert result["changed"] is True and result["configuration"]["id"] == "plant-3"
    assert scripted.methods() == ["GET configurations/plant-3"]


# --- bad input: one line, before any request ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, expected",
    [
        ({"id": "Plant 3"}, "configuration Plant 3: id 'Plant 3' is not a valid configuration id"),
        ({"target_condition": " "}, "configuration plant-3: target_condition must not be empty; use '*'"),
        ({"content": {"modulesContent": {}, "deviceContent": {}}}, "must have exactly one of modulesContent"),
        ({"labels": {"ring": 1}}, "configuration plant-3: labels.ring must be a string, not int 1"),
        (
            {"connection_string": DPS_CONNECTION_STRING},
            "is a DPS, not an IoT Hub",
        ),
        ({"timeout": 0}, "configuration plant-3: timeout must be a positive number of seconds"),
    ],
)
def test_bad_input_fails_in_one_line_before_any_request(scripted, extra, expected):
    run(scripted, args(scripted, **extra))
    assert scripted.last.failed
    assert expected in scripted.last.result["msg"]
    assert "\n" not in scripted.last.result["msg"]
    assert scripted.calls == []


def test_content_file_missing_or_not_json(scripted, tmp_path):
    values = without_content(args(scripted, content_file=str(tmp_path / "missing.json")))
    run(scripted, values)
    assert (
        "content_file" in scripted.last.result["msg"]
        and "does not exist on the controller" in scripted.last.result["msg"]
    )
    broken = tmp_path / "broken.json"
    broken.write_text('{"content": {"modulesContent": ')
    run(scripted, dict(values, content_file=str(broken)))
    assert f"content_file {broken} is not JSON (line 1" in scripted.last.result["msg"]
    assert scripted.calls == []


def test_a_content_file_as_az_takes_it(scripted, tmp_path):
    manifest = tmp_path / "deployment.json"
    manifest.write_text(json.dumps({"content": EDGE}))
    values = without_content(args(scripted, content_file=str(manifest)))
    result = run(scripted, values, reply(200, on_hub())).result
    assert result["changed"] is False


def test_content_and_content_file_are_exclusive_and_one_is_required(scripted, tmp_path):
    run(scripted, args(scripted, content_file=str(tmp_path / "x.json")))
    assert "mutually exclusive" in scripted.last.result["msg"]
    run(scripted, without_content(args(scripted)))
    assert "content, content_file" in scripted.last.result["msg"]
    run(scripted, args(scripted, content=None))
    assert scripted.last.result["msg"] == "configuration plant-3: give content or content_file"


def test_the_connection_string_is_no_log():
    assert iothub_configuration.argument_spec()["connection_string"]["no_log"] is True
