"""Unit tests for the iothub_device_info module: main() with scripted IoT Hub answers (`HubHarness`)."""

from __future__ import annotations

from ansible_collections.iotfleet.aziot.plugins.modules import iothub_device_info
from tests.support.dps_fakes import reply
from tests.support.iothub_fakes import HUB, hub_error


def twin(device_id: str, status: str = "enabled", **tags) -> dict:
    return {
        "deviceId": device_id,
        "etag": "AAAAAAAAAAE=",
        "status": status,
        "statusReason": "revoked" if status == "disabled" else None,
        "connectionState": "Disconnected",
        "capabilities": {"iotEdge": True},
        "tags": tags,
        "configurations": {"edge-base": {"status": "applied"}},
    }


def test_given_devices_in_order_and_the_missing_ones(hub_module):
    out = hub_module.run(
        iothub_device_info,
        hub_module.hub_args(device_ids=["pi-02", "pi-01", "pi-09", "pi-02"]),
        reply(200, [twin("pi-01", site="a"), twin("pi-02", "disabled")]),
    )
    assert hub_module.calls[0]["body"] == {"query": "SELECT * FROM devices WHERE deviceId IN ['pi-02','pi-01','pi-09']"}
    result = out.result
    assert result["changed"] is False
    assert result["missing"] == ["pi-09"]
    assert result["devices"] == [
        {
            "device_id": "pi-02",
            "status": "disabled",
            "status_reason": "revoked",
            "tags": {},
            "configurations": {"edge-base": {"status": "applied"}},
            "capabilities": {"iotEdge": True},
            "connection_state": "Disconnected",
        },
        {
            "device_id": "pi-01",
            "status": "enabled",
            "status_reason": "",
            "tags": {"site": "a"},
            "configurations": {"edge-base": {"status": "applied"}},
            "capabilities": {"iotEdge": True},
            "connection_state": "Disconnected",
        },
    ]


def test_every_device_page_by_page(hub_module):
    out = hub_module.run(
        iothub_device_info,
        hub_module.hub_args(),
        reply(200, [twin("pi-03"), twin("pi-01")], x_ms_continuation="page-2"),
        reply(200, [twin("pi-02")]),
    )
    assert [call["body"] for call in hub_module.calls] == [{"query": "SELECT * FROM devices"}] * 2
    assert hub_module.calls[1]["headers"]["x-ms-continuation"] == "page-2"
    assert [device["device_id"] for device in out.result["devices"]] == ["pi-01", "pi-02", "pi-03"]
    assert out.result["missing"] == []
    assert out.result["requests"] == 2


def test_a_policy_without_registry_read_fails_in_one_line(hub_module):
    out = hub_module.run(
        iothub_device_info,
        hub_module.hub_args("registrywrite", device_ids=["pi-01"]),
        hub_error(401, "IotHubUnauthorizedAccess", "Unauthorized"),
    )
    assert out.failed
    assert out.result["msg"].startswith(
        f"1 IoT Hub devices: IoT Hub {HUB} refused the shared access signature of policy registrywrite: check "
        "SharedAccessKey in connection_string and the controller clock, and that the policy has RegistryRead"
    )
    assert (out.result["http_status"], out.result["requests"]) == (401, 1)


def test_a_bad_device_id_fails_before_any_request(hub_module):
    out = hub_module.run(iothub_device_info, hub_module.hub_args(device_ids=["pi/01"]))
    assert out.failed
    assert out.result["msg"].startswith("device_ids: device_id 'pi/01' has '/'")
    assert hub_module.calls == []


def test_emulator_every_device_and_given_ones(hub_emulator_module):
    client = hub_emulator_module.hub_client()
    device_ids = [f"pi-info-{number:03d}" for number in range(105)]
    for device_id in device_ids:
        client.put_device(device_id, {"deviceId": device_id}, None)
    every = hub_emulator_module.run(iothub_device_info, hub_emulator_module.hub_args())
    assert hub_emulator_module.methods() == ["POST devices/query"] * 2  # two pages of at most 100
    listed = [device["device_id"] for device in every.result["devices"]]
    assert listed == sorted(listed) and set(device_ids) <= set(listed)
    given = hub_emulator_module.run(
        iothub_device_info, hub_emulator_module.hub_args(device_ids=["pi-info-004", "nope"])
    )
    assert [device["device_id"] for device in given.result["devices"]] == ["pi-info-004"]
    assert given.result["devices"][0]["status"] == "enabled"
    assert given.result["missing"] == ["nope"]
