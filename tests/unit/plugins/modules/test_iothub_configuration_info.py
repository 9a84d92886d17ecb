"""Unit tests for the iothub_configuration_info module: against the emulator's IoT Hub API (a hub with devices and
configurations: the counts are the emulator's), and with scripted IoT Hub answers (`scripted`) for the exact
requests."""

from __future__ import annotations

import pytest

from ansible_collections.iotfleet.aziot.plugins.modules import iothub_configuration_info
from tests.support.dps_fakes import reply
from tests.support.iothub_fakes import HubHarness, emulator_hub_client, emulator_hub_config, hub_error


@pytest.fixture
def scripted(monkeypatch) -> HubHarness:
    return HubHarness(monkeypatch)


def configuration(configuration_id: str, applied: int = 0) -> dict:
    return {
        "id": configuration_id,
        "targetCondition": "*",
        "content": {"deviceContent": {"properties.desired.x": 1}},
        "metrics": {"queries": {"done": "SELECT deviceId FROM devices"}, "results": {"done": applied}},
        "systemMetrics": {"queries": {}, "results": {"targetedCount": 3, "appliedCount": applied}},
    }


def run(harness, values, *script):
    return harness.run(iothub_configuration_info, values, *script)


def test_one_configuration_with_its_metrics(scripted):
    result = run(
        scripted, scripted.hub_args(id="plant-3", _ansible_check_mode=True), reply(200, configuration("plant-3", 2))
    )
    out = result.result
    assert (out["changed"], out["exists"], out["requests"], out["retried_requests"]) == (False, True, 1, 0)
    assert out["configurations"][0]["systemMetrics"]["results"] == {"targetedCount": 3, "appliedCount": 2}
    assert out["configurations"][0]["metrics"]["results"] == {"done": 2}
    assert scripted.methods() == ["GET configurations/plant-3"]


def test_a_configuration_the_hub_does_not_have(scripted):
    out = run(scripted, scripted.hub_args(id="plant-9"), hub_error(404, "ConfigurationNotFound")).result
    assert (out["changed"], out["exists"], out["configurations"]) == (False, False, [])


def test_every_configuration_sorted_by_id(scripted):
    answer = reply(200, [configuration("b"), configuration("a")])
    out = run(scripted, scripted.hub_args(), answer).result
    assert [item["id"] for item in out["configurations"]] == ["a", "b"]
    assert "exists" not in out
    assert scripted.calls[0]["url"].endswith("/configurations?top=1000&api-version=2021-04-12")


def test_a_policy_without_registry_read_is_named(scripted):
    script = (hub_error(401, "IotHubUnauthorizedAccess", "Unauthorized"),)
    run(scripted, scripted.hub_args("registrywrite"), *script)
    message = scripted.last.result["msg"]
    assert message.startswith("configurations: IoT Hub hub-unit-iothub.azure-devices.net refused the shared access")
    assert "has RegistryRead" in message
    assert scripted.last.result["http_status"] == 401


def test_an_empty_id_is_refused(scripted):
    run(scripted, scripted.hub_args(id=" "))
    assert scripted.last.result["msg"] == "id must not be empty; leave it out to read every configuration"
    assert scripted.calls == []


# --- against the emulator's IoT Hub API ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub_emulator(dps_emulator_factory, emulator_pki):
    """A hub with two devices (plant-3, plant-4) and two device configurations, one targeting each site."""
    emulator = dps_emulator_factory(emulator_hub_config(emulator_pki, configuration_operations_per_minute=0))
    client = emulator_hub_client(emulator)
    for device_id, site in (("unit-info-a", "plant-3"), ("unit-info-b", "plant-4")):
        client.put_device(device_id, {"deviceId": device_id}, None)
        client.patch_twin(device_id, {"tags": {"site": site}}, None)
    for configuration_id, site in (("unit-info-3", "plant-3"), ("unit-info-all", None)):
        body = {
            "id": configuration_id,
            "content": {"deviceContent": {"properties.desired.telemetry": {"interval": 30}}},
            "targetCondition": f"tags.site='{site}'" if site else "*",
            "priority": 1 if site else 0,
            "metrics": {"queries": {"plant3": "SELECT deviceId FROM devices WHERE tags.site = 'plant-3'"}},
        }
        client.put_configuration(configuration_id, body, None)
    return emulator


def test_one_configuration_from_the_emulator(monkeypatch, hub_emulator):
    harness = HubHarness(monkeypatch, hub_emulator)
    out = run(harness, harness.hub_args(id="unit-info-3", _ansible_check_mode=True)).result
    assert (out["changed"], out["exists"], out["requests"]) == (False, True, 1)
    (configuration,) = out["configurations"]
    assert configuration["systemMetrics"]["results"]["targetedCount"] == 1
    assert configuration["systemMetrics"]["results"]["appliedCount"] == 1
    assert configuration["metrics"]["results"] == {"plant3": 1}
    assert run(harness, harness.hub_args(id="unit-info-9")).result["exists"] is False


def test_every_configuration_from_the_emulator(monkeypatch, hub_emulator):
    harness = HubHarness(monkeypatch, hub_emulator)
    out = run(harness, harness.hub_args()).result
    counts = {item["id"]: item["systemMetrics"]["results"] for item in out["configurations"]}
    # '*' targets both devices; on unit-info-a the higher priority unit-info-3 wins, so '*' is applied on one
    assert counts == {
        "unit-info-3": {"targetedCount": 1, "appliedCount": 1},
        "unit-info-all": {"targetedCount": 2, "appliedCount": 1},
    }
    run(harness, harness.hub_args("registrywrite"))
    assert "has RegistryRead" in harness.last.result["msg"]
