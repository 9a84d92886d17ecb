"""Unit tests for the iothub_device module: main() with scripted IoT Hub answers (`HubHarness`), for the requests it
sends, its bad-input and failure messages, check and diff mode."""

from __future__ import annotations

import json

import pytest

from ansible_collections.iotfleet.aziot.plugins.modules import iothub_device
from tests.support.dps_fakes import reply
from tests.support.iothub_fakes import HUB, hub_error


def twin(device_id: str, version: int = 1, status: str = "enabled", reason=None, **tags) -> dict:
    """A twin as IoT Hub's device query answers it."""
    return {
        "deviceId": device_id,
        "etag": f"AAAAAAAAAA{version}=",
        "deviceEtag": "MTIzNDU2",
        "version": version,
        "status": status,
        "statusReason": reason,
        "connectionState": "Disconnected",
        "capabilities": {"iotEdge": True},
        "tags": tags,
        "properties": {"desired": {"$version": 1}, "reported": {"$version": 1}},
        "configurations": {"edge-base": {"status": "targeted"}},
    }


def identity(device_id: str, status: str = "enabled", reason=None) -> dict:
    """A device identity as GET /devices/{id} answers it (a CA-signed X.509 device)."""
    return {
        "deviceId": device_id,
        "generationId": "638390000000000000",
        "etag": "MTIzNDU2",
        "status": status,
        "statusReason": reason,
        "connectionState": "Disconnected",
        "authentication": {"type": "certificateAuthority", "x509Thumbprint": {}},
        "capabilities": {"iotEdge": True},
    }


def run(harness, devices, *script, **args):
    return harness.run(iothub_device, harness.hub_args(devices=devices, **args), *script)


def test_only_the_device_whose_tags_differ_is_patched(hub_module):
    out = run(
        hub_module,
        [{"device_id": "pi-01", "tags": {"site": "b"}}, {"device_id": "pi-02", "tags": {"site": "b"}}],
        reply(200, [twin("pi-01", site="a", old="x"), twin("pi-02", site="b")]),
        reply(200, twin("pi-01", 2, site="b")),
        _ansible_diff=True,
    )
    assert hub_module.methods() == ["POST devices/query", "PATCH twins/pi-01"]
    query = hub_module.calls[0]
    assert query["body"] == {"query": "SELECT * FROM devices WHERE deviceId IN ['pi-01','pi-02']"}
    assert query["url"].startswith(f"https://{HUB}/devices/query?api-version=2021-04-12")
    assert query["headers"]["x-ms-max-item-count"] == "100"
    patch = hub_module.calls[1]
    assert patch["body"] == {"tags": {"site": "b", "old": None}}
    assert patch["headers"]["If-Match"] == '"AAAAAAAAAA1="'
    result = out.result
    assert result["changed"] is True
    assert result["changed_devices"] == ["pi-01"]
    assert [(device["device_id"], device["changed"], device["tags"]) for device in result["devices"]] == [
        ("pi-01", True, {"site": "b"}),
        ("pi-02", False, {"site": "b"}),
    ]
    assert result["devices"][0]["configurations"] == {"edge-base": {"status": "targeted"}}
    assert (result["requests"], result["retried_requests"], result["missing"]) == (2, 0, [])
    (diff,) = result["diff"]
    assert json.loads(diff["before"]) == {"tags": {"site": "a", "old": "x"}}
    assert json.loads(diff["after"]) == {"tags": {"site": "b"}}
    assert diff["before_header"] == "device pi-01 (IoT Hub)"


def test_check_mode_only_queries(hub_module):
    out = run(
        hub_module,
        [{"device_id": "pi-01", "tags": {"site": "b"}, "status": "disabled"}],
        reply(200, [twin("pi-01", site="a")]),
        _ansible_check_mode=True,
        _ansible_diff=True,
    )
    assert hub_module.methods() == ["POST devices/query"]
    assert out.result["changed"] is True
    assert out.result["devices"][0]["tags"] == {"site": "a"}
    assert json.loads(out.result["diff"][0]["after"]) == {"tags": {"site": "b"}, "status": "disabled"}


def test_disable_puts_the_identity_as_read_with_the_new_status(hub_module):
    reason = "revoked by iotfleet.aziot revoke.yml"
    out = run(
        hub_module,
        [{"device_id": "pi-07", "status": "disabled", "status_reason": reason}],
        reply(200, [twin("pi-07")]),
        reply(200, identity("pi-07")),
        reply(200, identity("pi-07", "disabled", reason)),
    )
    assert hub_module.methods() == ["POST devices/query", "GET devices/pi-07", "PUT devices/pi-07"]
    put = hub_module.calls[2]
    assert put["body"] == dict(identity("pi-07"), status="disabled", statusReason=reason)
    assert put["headers"]["If-Match"] == '"MTIzNDU2"'
    device = out.result["devices"][0]
    assert (device["status"], device["status_reason"], device["changed"]) == ("disabled", reason, True)
    # nothing differs on the next run: one query
    again = run(
        hub_module,
        [{"device_id": "pi-07", "status": "disabled", "status_reason": reason}],
        reply(200, [twin("pi-07", status="disabled", reason=reason)]),
    )
    assert again.result["changed"] is False
    assert hub_module.methods() == ["POST devices/query"]


def test_a_stale_twin_etag_is_read_again(hub_module):
    out = run(
        hub_module,
        [{"device_id": "pi-01", "tags": {"site": "b"}}],
        reply(200, [twin("pi-01", site="a")]),
        hub_error(412, "PreconditionFailed", "Precondition failed: etag mismatch"),
        reply(200, twin("pi-01", 2, site="a", owner="ops")),
        reply(200, twin("pi-01", 3, site="b")),
    )
    assert hub_module.methods() == ["POST devices/query", "PATCH twins/pi-01", "GET twins/pi-01", "PATCH twins/pi-01"]
    assert hub_module.calls[3]["body"] == {"tags": {"site": "b", "owner": None}}
    assert hub_module.calls[3]["headers"]["If-Match"] == '"AAAAAAAAAA2="'
    assert out.result["changed_devices"] == ["pi-01"]
    assert any("reading it again (1/3)" in line for line in hub_module.logs)


def test_a_twin_that_keeps_changing_fails_naming_the_device_and_what_was_done_before(hub_module):
    stale = hub_error(412, "PreconditionFailed", "etag mismatch")
    script = [reply(200, [twin("pi-01", site="a"), twin("pi-02", site="a")]), reply(200, twin("pi-01", 2, site="b"))]
    for version in range(4):  # 412 on each of the four writes; read again after the first three
        script += [stale, reply(200, twin("pi-02", 3 + version, site="a"))]
    out = run(
        hub_module,
        [{"device_id": "pi-01", "tags": {"site": "b"}}, {"device_id": "pi-02", "tags": {"site": "b"}}],
        *script[:-1],
    )
    assert out.failed
    assert out.result["msg"] == (
        "device pi-02: the device changed in IoT Hub while this task was writing it, 4 times in a row (HTTP 412); it "
        "changed meanwhile, run the task again; 1 devices were changed before (changed_devices), run the task again "
        "to converge"
    )
    assert out.result["changed_devices"] == ["pi-01"]
    assert out.result["changed"] is True


def test_a_policy_without_registry_write_fails_naming_the_device_and_the_right(hub_module):
    out = run(
        hub_module,
        [{"device_id": "pi-01", "tags": {"site": "b"}}],
        reply(200, [twin("pi-01", site="a")]),
        hub_error(401, "IotHubUnauthorizedAccess", "Unauthorized"),
    )
    assert out.failed
    message = out.result["msg"]
    assert message.startswith(
        "device pi-01: policy iothubowner may not update the twin of device pi-01: give it the RegistryWrite right"
    )
    assert "\n" not in message
    assert (out.result["http_status"], out.result["error_name"]) == (401, "IotHubUnauthorizedAccess")
    assert out.result["changed_devices"] == []


def test_missing_devices_fail_before_any_write_or_are_skipped(hub_module):
    devices = [{"device_id": "pi-01", "tags": {"site": "b"}}, {"device_id": "pi-09", "tags": {"site": "b"}}]
    out = run(hub_module, devices, reply(200, [twin("pi-01", site="a")]))
    assert out.failed
    assert out.result["msg"] == (
        f"device pi-09 is not in IoT Hub {HUB}: register it through DPS first (provision.yml), or set missing=skip "
        "to leave it out; nothing was changed"
    )
    assert hub_module.methods() == ["POST devices/query"]
    skipped = run(
        hub_module,
        devices,
        reply(200, [twin("pi-01", site="a")]),
        reply(200, twin("pi-01", 2, site="b")),
        missing="skip",
    )
    assert skipped.result["missing"] == ["pi-09"]
    assert skipped.result["changed_devices"] == ["pi-01"]


def test_throttled_query_is_retried_after_retry_after(hub_module):
    out = run(
        hub_module,
        [{"device_id": "pi-01"}],
        hub_error(429, "ThrottlingException", "throttled", retry_after=5),
        reply(200, [twin("pi-01")]),
    )
    assert out.result["changed"] is False
    assert (out.result["requests"], out.result["retried_requests"]) == (2, 1)
    assert hub_module.sleeps == [5.0]


@pytest.mark.parametrize(
    ("devices", "message"),
    [
        (
            [{"device_id": "pi-01", "status_reason": "x" * 129}],
            "device pi-01: status_reason is 129 characters; IoT Hub keeps at most 128, shorten it",
        ),
        (
            [{"device_id": "pi-01", "tags": {"site": None}}],
            "device pi-01: tags.site is null; a twin tag cannot be null (IoT Hub removes a key patched to null): leave "
            "it out, with purge_tags=true, to remove it",
        ),
        (
            [{"device_id": "pi-01", "tags": {"site.name": "a"}}],
            "device pi-01: tags has a key 'site.name' that has '.', '$' or a space, which IoT Hub does not allow in a "
            "twin key",
        ),
        (
            [{"device_id": "pi-01"}, {"device_id": "pi-01"}],
            "device pi-01 is listed twice in devices; give each device once",
        ),
        (
            [{"device_id": "pi 01"}],
            "devices[0]: device_id 'pi 01' has ' '; IoT Hub allows ASCII letters, digits and !#$%'()*+,-.:=?@_",
        ),
    ],
)
def test_bad_input_fails_in_one_line_before_any_request(hub_module, devices, message):
    out = run(hub_module, devices)
    assert out.failed
    assert out.result["msg"] == message
    assert hub_module.calls == []


def test_nested_tags_are_made_exact(hub_module):
    out = run(
        hub_module,
        [{"device_id": "pi-01", "tags": {"location": {"line": 4}, "canary": True}}],
        reply(200, [twin("pi-01", location={"line": 4, "bay": 2}, canary=1)]),
        reply(200, twin("pi-01", 2, location={"line": 4}, canary=True)),
    )
    assert hub_module.calls[1]["body"] == {"tags": {"location": {"bay": None}, "canary": True}}
    assert out.result["devices"][0]["tags"] == {"location": {"line": 4}, "canary": True}


def test_an_empty_device_list_sends_nothing(hub_module):
    out = run(hub_module, [])
    assert (out.result["changed"], out.result["devices"], hub_module.calls) == (False, [], [])


# --- against the emulator's IoT Hub API ---------------------------------------------------------------------------


def make_devices(harness, *device_ids: str, **tags):
    """Devices in the emulator's hub (as DPS would have put them there), with `tags`; the test's own client."""
    client = harness.hub_client()
    for device_id in device_ids:
        if client.get_device(device_id) is None:
            client.put_device(device_id, {"deviceId": device_id}, None)
        if tags:
            client.patch_twin(device_id, {"tags": tags}, client.get_twin(device_id)["etag"])
    return client


def test_emulator_a_tag_edited_between_read_and_write_is_read_again(hub_emulator_module):
    client = make_devices(hub_emulator_module, "pi-emu-01", site="a")
    edits = []

    def other_writer(call):
        if call["method"] == "PATCH" and not edits:
            edits.append(call)
            client.patch_twin("pi-emu-01", {"tags": {"owner": "ops"}}, client.get_twin("pi-emu-01")["etag"])

    hub_emulator_module.before_request(other_writer)
    out = hub_emulator_module.run(
        iothub_device, hub_emulator_module.hub_args(devices=[{"device_id": "pi-emu-01", "tags": {"site": "b"}}])
    )
    assert hub_emulator_module.methods() == [
        "POST devices/query",
        "PATCH twins/pi-emu-01",
        "GET twins/pi-emu-01",
        "PATCH twins/pi-emu-01",
    ]
    assert hub_emulator_module.calls[3]["body"] == {"tags": {"site": "b", "owner": None}}
    assert out.result["devices"][0]["tags"] == {"site": "b"}
    assert client.get_twin("pi-emu-01")["tags"] == {"site": "b"}


def test_emulator_disable_and_enable_keep_the_identity(hub_emulator_module):
    reason = "revoked by iotfleet.aziot revoke.yml"
    client = make_devices(hub_emulator_module, "pi-emu-02")
    before = client.get_device("pi-emu-02")
    disable = [{"device_id": "pi-emu-02", "status": "disabled", "status_reason": reason}]
    out = hub_emulator_module.run(iothub_device, hub_emulator_module.hub_args(devices=disable))
    assert hub_emulator_module.methods() == ["POST devices/query", "GET devices/pi-emu-02", "PUT devices/pi-emu-02"]
    assert out.result["changed_devices"] == ["pi-emu-02"]
    after = client.get_device("pi-emu-02")
    assert (after["status"], after["statusReason"]) == ("disabled", reason)
    assert after["authentication"] == before["authentication"]  # the keys are the device's still
    again = hub_emulator_module.run(iothub_device, hub_emulator_module.hub_args(devices=disable))
    assert (again.result["changed"], hub_emulator_module.methods()) == (False, ["POST devices/query"])
    enable = [{"device_id": "pi-emu-02", "status": "enabled"}]
    hub_emulator_module.run(iothub_device, hub_emulator_module.hub_args(devices=enable))
    assert client.get_device("pi-emu-02")["status"] == "enabled"


def test_emulator_120_devices_cost_two_queries_when_nothing_differs(hub_emulator_module):
    device_ids = [f"pi-bulk-{number:03d}" for number in range(120)]
    make_devices(hub_emulator_module, *device_ids)
    devices = [{"device_id": device_id, "tags": {"site": "plant-3"}} for device_id in device_ids]
    first = hub_emulator_module.run(iothub_device, hub_emulator_module.hub_args(devices=devices))
    assert len(first.result["changed_devices"]) == 120
    assert hub_emulator_module.methods().count("POST devices/query") == 2
    second = hub_emulator_module.run(iothub_device, hub_emulator_module.hub_args(devices=devices))
    assert second.result["changed"] is False
    assert hub_emulator_module.methods() == ["POST devices/query"] * 2
    assert {device["tags"]["site"] for device in second.result["devices"]} == {"plant-3"}
