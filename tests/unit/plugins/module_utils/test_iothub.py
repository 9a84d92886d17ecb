"""Unit tests for the IoT Hub service API client (_iothub.py) and the configuration comparison
(_iothub_configuration.py), with scripted hub answers: the wire format (URLs, api-version, If-Match, the SAS), IoT
Hub's error bodies and their one-line explanations, the 412/409 rules, continuation paging and the 429 retries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import urllib.parse

import pytest

from ansible_collections.iotfleet.aziot.plugins.module_utils import _iothub
from ansible_collections.iotfleet.aziot.plugins.module_utils._iothub import (
    ConcurrentChange,
    IotHubClient,
    IotHubError,
    PreconditionFailed,
    explain_error,
    hub_error_fields,
    mask_device,
    parse_connection_string,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._iothub_configuration import (
    ConfigurationInputError,
    DesiredConfiguration,
    build_body,
    check_labels,
    check_metrics,
    configuration_id_problem,
    differences,
    load_content,
    mask_configuration,
    registry_passwords,
)
from tests.support.dps_fakes import FakeClock, FakeTransport, reply
from tests.support.iothub_fakes import hub_error

KEY_BYTES = b"hub-policy-key-material-0123456!"
KEY = base64.b64encode(KEY_BYTES).decode()
HUB = "Contoso-Hub.azure-devices.net"
CONNECTION_STRING = f"HostName={HUB};SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}"
WALL = 1700000000.0
EDGE = {"modulesContent": {"$edgeAgent": {"properties.desired": {"schemaVersion": "1.1"}}}}
EDGE_V2 = {"modulesContent": {"$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "modules": {"m": {}}}}}}


def make_client(transport, service_url=None, clock=None, **kwargs) -> IotHubClient:
    clock = clock or FakeClock(500.0)
    return IotHubClient(
        parse_connection_string(CONNECTION_STRING, service_url),
        transport,
        "configuration plant-3",
        clock=clock,
        wall_clock=lambda: WALL,
        sleep=clock.sleep,
        **kwargs,
    )


def sas_fields(header: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in header.removeprefix("SharedAccessSignature ").split("&"))


# --- connection strings -------------------------------------------------------------------------------------------


def test_connection_string_parts_and_where_requests_go():
    credentials = parse_connection_string(CONNECTION_STRING)
    assert (credentials.host_name, credentials.policy_name, credentials.policy_key) == (HUB, "iothubowner", KEY)
    assert credentials.base_url == f"https://{HUB}"
    assert KEY not in repr(credentials)
    # service_url (the emulator, a private endpoint) changes where requests go, not what is signed
    emulated = parse_connection_string(CONNECTION_STRING, "https://127.0.0.1:8443/")
    assert (emulated.base_url, emulated.host_name) == ("https://127.0.0.1:8443", HUB)


@pytest.mark.parametrize(
    "connection_string, expected",
    [
        (
            f"HostName=contoso.azure-devices-provisioning.net;SharedAccessKeyName=provisioningserviceowner;"
            f"SharedAccessKey={KEY}",
            "is a DPS, not an IoT Hub",
        ),
        (f"HostName={HUB};DeviceId=pi-001;SharedAccessKey={KEY}", "is a device connection string"),
        (f"HostName={HUB};DeviceId=pi-001;x509=true", "is a device connection string"),
        (f"HostName={HUB};SharedAccessKeyName=iothubowner", "has no SharedAccessKey"),
        (f"HostName={HUB};SharedAccessKeyName=iothubowner;SharedAccessKey=not base64!", "is not valid base64"),
        (f"HostName={HUB};SharedAccessKeyName=a;SharedAccessKey={KEY};Endpoint=sb://x", "unexpected field 'Endpoint'"),
        (f"HostName={HUB};HostName={HUB};SharedAccessKeyName=a;SharedAccessKey={KEY}", "has HostName twice"),
        ("HostName", "is malformed"),
    ],
)
def test_unusable_connection_strings_are_refused_in_one_line_without_the_key(connection_string, expected):
    with pytest.raises(ValueError) as caught:
        parse_connection_string(connection_string)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message
    assert KEY not in message


@pytest.mark.parametrize("service_url", ["http://127.0.0.1:8443", "127.0.0.1:8443", "https://hub?x=1"])
def test_a_service_url_that_is_not_https_is_refused(service_url):
    with pytest.raises(ValueError, match=r"service_url .* must be an https:// URL"):
        parse_connection_string(CONNECTION_STRING, service_url)


def test_sas_token_signs_the_lower_case_host_name_with_the_decoded_key():
    transport = FakeTransport(reply(200, {"id": "plant-3"}))
    make_client(transport, service_url="https://127.0.0.1:8443").get_configuration("plant-3")
    fields = sas_fields(transport.calls[0]["headers"]["Authorization"])
    resource = "contoso-hub.azure-devices.net"
    expiry = int(WALL) + 300
    digest = hmac.new(KEY_BYTES, f"{resource}\n{expiry}".encode(), hashlib.sha256).digest()
    assert fields == {
        "sr": resource,
        "sig": urllib.parse.quote(base64.b64encode(digest).decode(), safe=""),
        "se": str(expiry),
        "skn": "iothubowner",
    }


# --- requests on the wire -----------------------------------------------------------------------------------------


def test_configuration_requests_on_the_wire():
    transport = FakeTransport(
        reply(404, {"Message": "ErrorCode:ConfigurationNotFound;Configuration not found"}),
        reply(200, {"id": "plant 3", "etag": "MQ=="}),
        reply(200, {"id": "plant 3", "etag": "Mg=="}),
        reply(204),
        reply(200, [{"id": "a"}, {"id": "b"}]),
    )
    client = make_client(transport, service_url="https://127.0.0.1:8443")
    assert client.get_configuration("plant 3") is None
    assert client.put_configuration("plant 3", {"id": "plant 3"}, None)["etag"] == "MQ=="
    assert client.put_configuration("plant 3", {"id": "plant 3"}, "MQ==")["etag"] == "Mg=="
    assert client.delete_configuration("plant 3", "Mg==") is True
    assert [item["id"] for item in client.list_configurations(top=20)] == ["a", "b"]
    calls = transport.calls
    assert [call["url"] for call in calls] == [
        "https://127.0.0.1:8443/configurations/plant%203?api-version=2021-04-12",
        "https://127.0.0.1:8443/configurations/plant%203?api-version=2021-04-12",
        "https://127.0.0.1:8443/configurations/plant%203?api-version=2021-04-12",
        "https://127.0.0.1:8443/configurations/plant%203?api-version=2021-04-12",
        "https://127.0.0.1:8443/configurations?top=20&api-version=2021-04-12",
    ]
    assert [call["method"] for call in calls] == ["GET", "PUT", "PUT", "DELETE", "GET"]
    # a create sends no If-Match; an update and a delete send the etag quoted, as the Node SDK's _ensureQuoted does
    assert "If-Match" not in calls[1]["headers"]
    assert calls[2]["headers"]["If-Match"] == '"MQ=="'
    assert calls[3]["headers"]["If-Match"] == '"Mg=="'
    assert calls[1]["headers"]["Content-Type"].startswith("application/json")
    assert "Content-Type" not in calls[0]["headers"]
    assert client.attempts == 5 and client.retries == 0


def test_delete_without_an_etag_matches_any_and_a_gone_configuration_is_not_deleted():
    transport = FakeTransport(reply(404, {"Message": "ErrorCode:ConfigurationNotFound;gone"}))
    assert make_client(transport).delete_configuration("plant-3", None) is False
    assert transport.calls[0]["headers"]["If-Match"] == '"*"'


@pytest.mark.parametrize(
    "answer, etag",
    [
        (hub_error(412, "PreconditionFailed", "etag mismatch"), "MQ=="),
        (hub_error(409, "ConfigurationAlreadyExists"), None),
    ],
)
def test_a_stale_etag_or_a_create_race_is_precondition_failed(answer, etag):
    with pytest.raises(PreconditionFailed) as caught:
        make_client(FakeTransport(answer)).put_configuration("plant-3", {"id": "plant-3"}, etag)
    assert caught.value.status == answer.status


def test_a_conflict_on_update_is_an_ordinary_refusal():
    with pytest.raises(IotHubError) as caught:
        make_client(FakeTransport(hub_error(409, "Conflict"))).put_configuration("plant-3", {}, "MQ==")
    assert not isinstance(caught.value, PreconditionFailed)


def test_test_queries_sends_the_condition_and_metric_queries_and_keeps_only_errors():
    answer = {"targetConditionError": "", "customMetricQueryErrors": {"ok": "", "bad": "Syntax error at 1:7"}}
    transport = FakeTransport(reply(200, answer))
    result = make_client(transport).test_queries("tags.site='plant-3'", {"ok": "SELECT deviceId FROM devices"})
    assert result == {"targetConditionError": "", "customMetricQueryErrors": {"bad": "Syntax error at 1:7"}}
    call = transport.calls[0]
    assert call["method"] == "POST"
    assert call["url"].split("?")[0].endswith("/configurations/testQueries")
    assert call["body"] == {
        "targetCondition": "tags.site='plant-3'",
        "customMetricQueries": {"ok": "SELECT deviceId FROM devices"},
    }


def test_query_devices_follows_continuation_tokens_to_the_last_page():
    transport = FakeTransport(
        reply(200, [{"deviceId": "a"}, {"deviceId": "b"}], x_ms_continuation="page-2"),
        reply(200, [{"deviceId": "c"}], x_ms_continuation="page-3"),
        reply(200, []),
    )
    twins = make_client(transport).query_devices("SELECT * FROM devices", page_size=2)
    assert [twin["deviceId"] for twin in twins] == ["a", "b", "c"]
    assert [call["body"] for call in transport.calls] == [{"query": "SELECT * FROM devices"}] * 3
    assert [call["headers"].get("x-ms-continuation") for call in transport.calls] == [None, "page-2", "page-3"]
    assert {call["headers"]["x-ms-max-item-count"] for call in transport.calls} == {"2"}
    assert all(call["url"].split("?")[0].endswith("/devices/query") for call in transport.calls)


def test_query_devices_stops_on_a_repeated_continuation_token():
    transport = FakeTransport(
        reply(200, [{"deviceId": "a"}], x_ms_continuation="same"),
        reply(200, [{"deviceId": "b"}], x_ms_continuation="same"),
    )
    with pytest.raises(IotHubError, match="same continuation token twice; stopped after 2 devices"):
        make_client(transport).query_devices("SELECT * FROM devices")


def test_devices_and_twins_on_the_wire():
    transport = FakeTransport(
        reply(200, {"deviceId": "pi/1", "etag": "AAAA", "status": "enabled"}),
        reply(200, {"deviceId": "pi/1", "etag": "AAAB", "status": "disabled"}),
        reply(404, {"Message": "ErrorCode:DeviceNotFound;Device pi/1 not found"}),
        reply(200, {"deviceId": "pi/1", "etag": "AAAAAAAAAAE=", "tags": {"site": "plant-3"}}),
    )
    client = make_client(transport)
    device = client.get_device("pi/1")
    assert client.put_device("pi/1", dict(device, status="disabled"), device["etag"])["status"] == "disabled"
    assert client.get_twin("pi/1") is None
    assert client.patch_twin("pi/1", {"tags": {"site": "plant-3"}}, None)["tags"] == {"site": "plant-3"}
    paths = [call["url"].split("?")[0].split("/", 3)[3] for call in transport.calls]
    assert paths == ["devices/pi%2F1", "devices/pi%2F1", "twins/pi%2F1", "twins/pi%2F1"]
    assert [call["method"] for call in transport.calls] == ["GET", "PUT", "GET", "PATCH"]
    assert transport.calls[1]["headers"]["If-Match"] == '"AAAA"'
    # a twin patch without an etag matches any, as the Node SDK's updateTwin with '*'
    assert transport.calls[3]["headers"]["If-Match"] == '"*"'


def test_throttling_is_retried_after_retry_after_within_the_deadline():
    clock = FakeClock(0.0)
    transport = FakeTransport(
        hub_error(429, "ThrottlingException", "too many configuration operations", retry_after=7),
        hub_error(429, "ThrottlingException", "too many configuration operations", retry_after=7),
        reply(200, {"id": "plant-3"}),
    )
    client = make_client(transport, clock=clock, timeout=60)
    assert client.get_configuration("plant-3") == {"id": "plant-3"}
    assert clock.sleeps == [7.0, 7.0]
    assert (client.attempts, client.retries) == (3, 2)


def test_a_429_storm_ends_at_the_deadline_with_one_line():
    clock = FakeClock(0.0)
    storm = [hub_error(429, "ThrottlingException", "slow down", retry_after=20) for _ in range(3)]
    client = make_client(FakeTransport(*storm), clock=clock, timeout=45)
    with pytest.raises(IotHubError) as caught:
        client.put_configuration("plant-3", {}, None)
    assert caught.value.timed_out
    assert "IoT Hub did not finish within timeout=45s" in str(caught.value)
    assert "HTTP 429" in str(caught.value)
    assert sum(clock.sleeps) < 45


# --- error bodies and their explanations --------------------------------------------------------------------------


def test_error_fields_of_the_error_code_body():
    name, number, message, tracking_id = hub_error_fields(
        hub_error(404, "DeviceNotFound", "Device pi-001 not found on hub-simulated")
    )
    assert (name, number, message) == ("DeviceNotFound", None, "Device pi-001 not found on hub-simulated")
    assert tracking_id == "0f1e2d3c4b5a49788796a5b4c3d2e1f0"


def test_error_fields_of_the_nested_json_body_and_the_header():
    inner = json.dumps({"errorCode": 404103, "trackingId": "abc", "message": "Configuration not found"})
    response = reply(404, {"Message": inner, "ExceptionMessage": ""}, iothub_errorcode="ConfigurationNotFound")
    assert hub_error_fields(response) == ("ConfigurationNotFound", 404103, "Configuration not found", "abc")
    raw = _iothub.Response(502, {}, b"<html>Bad gateway</html>")
    assert hub_error_fields(raw) == (None, None, "<html>Bad gateway</html>", None)


def refusal(answers, call):
    client = make_client(FakeTransport(*answers))
    with pytest.raises(IotHubError) as caught:
        call(client)
    return explain_error(caught.value, "configuration plant-3", client.credentials)


def test_a_first_401_is_about_the_key_or_the_clock():
    message = refusal([hub_error(401, "IotHubUnauthorizedAccess", "Unauthorized")], lambda c: c.get_configuration("x"))
    assert message.startswith("configuration plant-3: IoT Hub Contoso-Hub.azure-devices.net refused the shared access")
    assert "check SharedAccessKey in connection_string and the controller clock" in message
    assert "has RegistryRead" in message


def test_a_401_after_an_accepted_read_names_the_right_the_write_needs():
    message = refusal(
        [reply(404, {"Message": "ErrorCode:ConfigurationNotFound;no"}), hub_error(401, "IotHubUnauthorizedAccess")],
        lambda c: (c.get_configuration("plant-3"), c.put_configuration("plant-3", {}, None)),
    )
    assert message == (
        "configuration plant-3: policy iothubowner may not create configuration plant-3: give it the RegistryWrite "
        "right (IoT Hub > Shared access policies) or use a policy that has it (HTTP 401 "
        "(IotHubUnauthorizedAccess): IotHubUnauthorizedAccess)"
    )


@pytest.mark.parametrize(
    "answer",
    [
        hub_error(403, "IotHubQuotaExceeded", "Configuration count exceeds the limit of 100"),
        # what Microsoft documents for IoT Hub: 413101 ConfigurationCountLimitExceeded
        reply(
            413,
            {
                "Message": json.dumps(
                    {"errorCode": 413101, "message": "The configuration count limit has been exceeded"}
                )
            },
        ),
    ],
    ids=["emulator", "iot hub"],
)
def test_the_configuration_limit_is_explained(answer):
    message = refusal([answer], lambda c: c.put_configuration("plant-3", {}, None))
    assert "is at its limit of configurations" in message
    assert "delete ones it no longer needs (iothub_configuration state=absent)" in message
    assert "\n" not in message


def test_a_device_the_hub_does_not_have_points_at_dps():
    message = refusal([hub_error(404, "DeviceNotFound")], lambda c: c.put_device("pi-001", {}, "AAAA"))
    assert "has no such device: register it through DPS first (provision.yml)" in message


def test_concurrent_change_and_timeouts_explain_themselves():
    change = ConcurrentChange("configuration plant-3", "the configuration", "writing")
    credentials = parse_connection_string(CONNECTION_STRING)
    assert explain_error(change, "configuration plant-3", credentials) == (
        "configuration plant-3: the configuration changed in IoT Hub while this task was writing it, 4 times in a row "
        "(HTTP 412); it changed meanwhile, run the task again"
    )


def test_mask_device_hides_the_symmetric_keys_only():
    device = {
        "deviceId": "pi",
        "authentication": {"type": "sas", "symmetricKey": {"primaryKey": KEY, "secondaryKey": ""}},
    }
    masked = mask_device(device)
    assert masked["authentication"]["symmetricKey"] == {"primaryKey": "********", "secondaryKey": ""}
    assert device["authentication"]["symmetricKey"]["primaryKey"] == KEY
    assert mask_device({"deviceId": "x509", "authentication": {"type": "selfSigned"}})["deviceId"] == "x509"


# --- configuration content and comparison -------------------------------------------------------------------------

SUBJECT = "configuration plant-3"


@pytest.mark.parametrize(
    "text",
    [json.dumps({"content": EDGE}), json.dumps(EDGE)],
    ids=["as az iot edge deployment create --content takes it", "the content object"],
)
def test_content_file_in_both_shapes(tmp_path, text):
    path = tmp_path / "deployment.json"
    path.write_text(text)
    assert load_content(SUBJECT, None, str(path)) == EDGE


@pytest.mark.parametrize(
    "text, expected",
    [
        ("{not json", "is not JSON (line 1 column 2"),
        ("[1, 2]", "must be a JSON object with one of modulesContent, moduleContent, deviceContent, not list"),
        (json.dumps({"content": {}}), "(its content) must have exactly one of modulesContent"),
        (
            json.dumps({"modulesContent": {}, "deviceContent": {}}),
            "(it has modulesContent and deviceContent)",
        ),
        (json.dumps({"deviceContent": [1]}), "deviceContent must be a JSON object"),
        (json.dumps({"content": {"modulesContent": {}}}), "(its content)'s modulesContent is empty"),
        (json.dumps({"deviceContent": {}, "priority": 3}), "has priority beside deviceContent"),
    ],
)
def test_unusable_content_files_are_refused_in_one_line(tmp_path, text, expected):
    path = tmp_path / "deployment.json"
    path.write_text(text)
    with pytest.raises(ConfigurationInputError) as caught:
        load_content(SUBJECT, None, str(path))
    assert expected in str(caught.value)
    assert str(caught.value).startswith(f"{SUBJECT}: ")
    assert "\n" not in str(caught.value)


def test_a_missing_content_file_is_named(tmp_path):
    with pytest.raises(ConfigurationInputError, match=r"content_file .*missing.json does not exist on the controller"):
        load_content(SUBJECT, None, str(tmp_path / "missing.json"))


def test_labels_metrics_and_ids_are_checked_before_any_request():
    with pytest.raises(ConfigurationInputError, match=r"labels\.version must be a string, not int 2; quote it"):
        check_labels(SUBJECT, {"version": 2})
    with pytest.raises(ConfigurationInputError, match="metrics has 6 queries; IoT Hub takes at most 5"):
        check_metrics(SUBJECT, {f"m{index}": "SELECT deviceId FROM devices" for index in range(6)})
    assert configuration_id_problem("plant-3_base+canary!") is None
    assert "not a valid configuration id" in configuration_id_problem("Plant 3")
    assert configuration_id_problem("x" * 129) is not None


def desired(**changes) -> DesiredConfiguration:
    values = dict(
        configuration_id="plant-3",
        target_condition="tags.site='plant-3'",
        priority=10,
        labels={"managed-by": "iotfleet.aziot"},
        content=EDGE,
        metrics={"reported": "SELECT deviceId FROM devices"},
    )
    values.update(changes)
    return DesiredConfiguration(**values)


def hub_configuration(**changes) -> dict:
    configuration = {
        "id": "plant-3",
        "schemaVersion": "1.0",
        "labels": {"managed-by": "iotfleet.aziot"},
        "content": {**EDGE, "moduleContent": None, "deviceContent": {}},
        "targetCondition": "tags.site='plant-3'",
        "priority": 10,
        "metrics": {"queries": {"reported": "SELECT deviceId FROM devices"}, "results": {"reported": 3}},
        "systemMetrics": {"queries": {}, "results": {"targetedCount": 3, "appliedCount": 3}},
        "etag": "MQ==",
    }
    configuration.update(changes)
    return configuration


def test_differences_name_each_changed_field_and_ignore_the_hubs_own():
    assert differences(desired(), hub_configuration()) == []
    assert differences(desired(), None) == ["targetCondition", "priority", "labels", "metrics.queries", "content"]
    assert differences(desired(priority=20, labels={}), hub_configuration()) == ["priority", "labels"]
    assert differences(desired(content=EDGE_V2), hub_configuration()) == ["content"]
    assert differences(desired(metrics={}), hub_configuration(metrics=None)) == []


def test_an_update_body_keeps_the_hubs_content_and_etag():
    current = hub_configuration()
    body = build_body(desired(priority=20), current)
    assert body["content"] == current["content"]
    assert (body["priority"], body["etag"], body["schemaVersion"]) == (20, "MQ==", "1.0")
    created = build_body(desired(), None)
    assert created["content"] == EDGE
    assert "etag" not in created
    assert created["metrics"] == {"queries": {"reported": "SELECT deviceId FROM devices"}}


def test_registry_passwords_are_found_nested_and_in_layered_keys_and_masked():
    content = {
        "modulesContent": {
            "$edgeAgent": {
                "properties.desired": {
                    "runtime": {"settings": {"registryCredentials": {"acr": {"username": "u", "password": "p1"}}}},
                    "modules": {"m": {"settings": {"password": "not a registry's"}}},
                },
                "properties.desired.runtime.settings.registryCredentials.other": {"username": "v", "password": "p2"},
            }
        }
    }
    assert sorted(registry_passwords(content)) == ["p1", "p2"]
    masked = mask_configuration({"id": "x", "content": content})
    agent = masked["content"]["modulesContent"]["$edgeAgent"]
    assert agent["properties.desired"]["runtime"]["settings"]["registryCredentials"]["acr"] == {
        "username": "u",
        "password": "********",
    }
    assert agent["properties.desired.runtime.settings.registryCredentials.other"]["password"] == "********"
    assert agent["properties.desired"]["modules"]["m"]["settings"]["password"] == "not a registry's"
