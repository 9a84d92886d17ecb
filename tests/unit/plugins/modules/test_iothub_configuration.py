"""Unit tests for the iothub_configuration module: against the emulator's IoT Hub API (`hub_module`: the real
transport over TLS, a fake clock) for what a hub does - create, update, the content rule, testQueries, rights, 412s,
the configuration limit and the throttle - and with scripted IoT Hub answers (`scripted`) for the exact wire
exchanges and what the emulator does not produce on demand (a 412 on every try)."""

from __future__ import annotations

import json

import pytest

from ansible_collections.iotfleet.aziot.plugins.modules import iothub_configuration
from tests.support.dps_fakes import reply
from tests.support.iothub_fakes import HubHarness, emulator_hub_client, emulator_hub_config, hub_error, hub_policy_key

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


def test_registry_passwords_never_leave_the_module(scripted):
    password = "registry-password-0123"
    settings = {"registryCredentials": {"acr": {"username": "fleet", "password": password, "address": "acr.io"}}}
    content = {"modulesContent": {"$edgeAgent": {"properties.desired": {"runtime": {"settings": settings}}}}}
    values = args(scripted, content=content, _ansible_diff=True)
    result = run(scripted, values, NOT_FOUND, reply(200, QUERIES_OK), reply(200, on_hub(content=content))).result
    assert scripted.calls[2]["body"]["content"] == content  # the hub gets it
    assert password not in scripted.last.text
    agent = result["configuration"]["content"]["modulesContent"]["$edgeAgent"]
    assert agent["properties.desired"]["runtime"]["settings"]["registryCredentials"]["acr"]["password"] == "********"


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


# --- against the emulator's IoT Hub API ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub_emulator(dps_emulator_factory, emulator_pki):
    """One emulator for this file's emulator tests (each uses its own ids); no per-minute throttle, which the
    `limited_emulator` tests exercise."""
    emulator = dps_emulator_factory(emulator_hub_config(emulator_pki, configuration_operations_per_minute=0))
    client = emulator_hub_client(emulator)
    for device_id, site in (("unit-cfg-a", "plant-3"), ("unit-cfg-b", "plant-3"), ("unit-cfg-c", "plant-4")):
        # IoT Edge devices: a deployment (modulesContent) targets only those
        client.put_device(device_id, {"deviceId": device_id, "capabilities": {"iotEdge": True}}, None)
        client.patch_twin(device_id, {"tags": {"site": site}}, None)
    return emulator


@pytest.fixture(scope="module")
def limited_emulator(dps_emulator_factory, emulator_pki):
    """A hub that holds two configurations and takes three configuration operations a minute."""
    config = emulator_hub_config(emulator_pki, configuration_limit=2, configuration_operations_per_minute=3)
    return dps_emulator_factory(config, name="limited")


@pytest.fixture
def hub_module(monkeypatch, hub_emulator) -> HubHarness:
    return HubHarness(monkeypatch, hub_emulator)


def emulated(harness: HubHarness, configuration_id: str, **extra) -> dict:
    return args(harness, id=configuration_id, **extra)


def test_four_runs_against_the_emulator(hub_module):
    values = emulated(
        hub_module, "unit-four-runs", metrics={"count": "SELECT deviceId FROM devices WHERE tags.site = 'plant-3'"}
    )
    check = run(hub_module, dict(values, _ansible_check_mode=True, _ansible_diff=True)).result
    assert (check["changed"], check["configuration"]) == (True, {})
    created = run(hub_module, dict(values, _ansible_diff=True)).result
    assert created["changed"] is True, created
    assert created["configuration"]["systemMetrics"]["results"]["targetedCount"] == 2
    assert created["configuration"]["metrics"]["results"] == {"count": 2}
    assert json.loads(created["diff"]["after"])["content"] == EDGE
    again = run(hub_module, dict(values, _ansible_check_mode=True)).result
    assert (again["changed"], again["differences"], again["requests"]) == (False, [], 1)
    last = run(hub_module, values).result
    assert (last["changed"], last["configuration"]["etag"]) == (False, created["configuration"]["etag"])
    applied = hub_module.hub_client().get_twin("unit-cfg-a")["configurations"]
    assert applied["unit-four-runs"]["status"] in ("targeted", "applied")


def test_an_update_keeps_the_content_and_moves_the_etag(hub_module):
    values = emulated(hub_module, "unit-update")
    first = run(hub_module, values).result["configuration"]
    result = run(
        hub_module, dict(values, priority=30, labels={"ring": "canary"}, target_condition="tags.site='plant-4'")
    ).result
    assert result["changed"] is True
    assert result["differences"] == ["targetCondition", "priority", "labels"]
    assert result["configuration"]["etag"] != first["etag"]
    assert result["configuration"]["systemMetrics"]["results"]["targetedCount"] == 1


def test_content_change_refused_then_replaced_with_opt_in(hub_module):
    values = emulated(hub_module, "unit-replace")
    created = run(hub_module, values).result["configuration"]
    run(hub_module, dict(values, content=EDGE_V2))
    assert hub_module.last.result["msg"] == CHANGED_CONTENT.replace("plant-3", "unit-replace")
    assert (
        hub_module.hub_client().get_configuration("unit-replace")["content"]["modulesContent"] == EDGE["modulesContent"]
    )
    check = run(
        hub_module, dict(values, content=EDGE_V2, replace_changed_content=True, _ansible_check_mode=True)
    ).result
    assert (check["changed"], check["replaced"]) == (True, True)
    replaced = run(hub_module, dict(values, content=EDGE_V2, replace_changed_content=True)).result
    assert (replaced["changed"], replaced["replaced"], replaced["differences"]) == (True, True, ["content"])
    assert replaced["configuration"]["content"]["modulesContent"] == EDGE_V2["modulesContent"]
    assert replaced["configuration"]["etag"] != created["etag"]
    again = run(hub_module, dict(values, content=EDGE_V2, replace_changed_content=True)).result
    assert (again["changed"], again["replaced"]) == (False, False)


def test_a_malformed_target_condition_is_the_hubs_answer_and_nothing_is_written(hub_module):
    run(hub_module, emulated(hub_module, "unit-malformed", target_condition="tags.site = = 'x'"))
    message = hub_module.last.result["msg"]
    assert message.startswith("configuration unit-malformed: target_condition \"tags.site = = 'x'\" is malformed: ")
    assert message.endswith("nothing was written") and "\n" not in message
    assert hub_module.hub_client().get_configuration("unit-malformed") is None


def test_a_read_only_policy_is_told_the_right_it_lacks(hub_module):
    values = dict(emulated(hub_module, "unit-read-only"), **hub_module.hub_args("registryread"))
    run(hub_module, values)
    message = hub_module.last.result["msg"]
    assert message.startswith(
        "configuration unit-read-only: policy registryread may not create configuration unit-read-only: give it the "
        "RegistryWrite right"
    )
    assert hub_module.last.result["http_status"] == 401
    assert hub_module.hub_client().get_configuration("unit-read-only") is None


def test_a_concurrent_edit_is_read_again_and_converges(hub_module):
    values = emulated(hub_module, "unit-concurrent")
    run(hub_module, values)
    other = hub_module.hub_client()
    edits = []

    def another_writer(call):
        if call["method"] == "PUT" and not edits:
            current = other.get_configuration("unit-concurrent")
            edits.append(other.put_configuration("unit-concurrent", dict(current, priority=99), current["etag"]))

    hub_module.before_request(another_writer)
    result = run(hub_module, dict(values, labels={"ring": "canary"})).result
    hub_module.before_request(None)
    assert result["changed"] is True and edits
    assert (result["configuration"]["labels"], result["configuration"]["priority"]) == ({"ring": "canary"}, 10)
    assert hub_module.methods().count("PUT configurations/unit-concurrent") == 2
    assert any("HTTP 412 on write" in line for line in hub_module.logs)


def test_absent_against_the_emulator(hub_module):
    values = emulated(hub_module, "unit-absent")
    run(hub_module, values)
    check = run(hub_module, dict(values, state="absent", _ansible_check_mode=True)).result
    assert check["changed"] is True
    assert hub_module.hub_client().get_configuration("unit-absent") is not None
    assert run(hub_module, dict(values, state="absent")).result["changed"] is True
    assert hub_module.hub_client().get_configuration("unit-absent") is None
    assert run(hub_module, dict(values, state="absent")).result["changed"] is False


def test_a_hub_at_its_limit_and_a_throttle_storm(monkeypatch, limited_emulator):
    harness = HubHarness(monkeypatch, limited_emulator)
    for configuration_id in ("unit-limit-1", "unit-limit-2"):
        assert run(harness, emulated(harness, configuration_id)).result["changed"] is True
    run(harness, emulated(harness, "unit-limit-3"))
    message = harness.last.result["msg"]
    assert "is at its limit of configurations" in message, message
    assert harness.last.result["error_name"] == "IotHubQuotaExceeded"
    # three operations this minute: the next write is throttled (429 + Retry-After) until the task's timeout
    run(harness, emulated(harness, "unit-limit-1", priority=5, timeout=45))
    result = harness.last.result
    assert result["msg"].startswith("configuration unit-limit-1: IoT Hub did not finish within timeout=45s")
    assert "HTTP 429" in result["msg"]
    assert result["retried_requests"] == 1 and harness.sleeps == [30.0]
