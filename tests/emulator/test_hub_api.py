"""The emulator's IoT Hub service API: the devices DPS assigned, in their hub, with IoT Hub's rules.

A real emulator process per module (dps_emulator_factory); devices register through the device API as a device
does, then the hub API is called with a SAS token signed for the hub's name (tests/emulator/helpers.py's signing,
written from the Azure docs, not from the emulator or the collection).
"""

from __future__ import annotations

import base64
import socket
import ssl

import pytest
import requests
import yaml
from dps_emulator.config import ConfigError, load_config

from tests.support.emulator import HUB_POLICY, HUB_POLICY_KEY, hub_settings, start_dps_emulator

from .helpers import ID_SCOPE, Client, ServiceClient, derived_key, sas_token

HUB = "hub-api-a.azure-devices.net"
OTHER_HUB = "hub-api-b.azure-devices.net"
HUB_API_VERSION = "2021-04-12"
EDGE_GROUP_KEY = base64.b64encode(b"hub-api-edge-group-key-0123456789").decode()
PLAIN_GROUP_KEY = base64.b64encode(b"hub-api-plain-group-key-012345678").decode()
READER_POLICY = "registryread"
READER_KEY = base64.b64encode(b"hub-api-registry-read-policy-key!").decode()
CONFIGURATION_LIMIT = 6
BASE_CONTENT = {
    "modulesContent": {
        "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "modules": {}}},
        "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}}},
    }
}
LAYERED_CONTENT = {
    "modulesContent": {
        "$edgeAgent": {"properties.desired.modules.probe": {"type": "docker", "settings": {"image": "probe:1"}}}
    }
}
DEVICE_CONTENT = {"deviceContent": {"properties.desired.telemetry": {"interval": 10}}}


def hub_config(**limits) -> dict:
    """Two linked hubs; an IoT Edge symmetric-key group and a plain one, both assigned to HUB with an initialTwin;
    the owner policy and a RegistryRead-only one."""
    settings = hub_settings(**limits)
    settings["shared_access_policies"].append(
        {"name": READER_POLICY, "primary_key": READER_KEY, "rights": "RegistryRead"}
    )
    return {
        "id_scope": ID_SCOPE,
        "linked_hubs": [HUB, OTHER_HUB],
        "defaults": {"assignment_delay": 0.1, "retry_after": 1},
        "enrollment_groups": [
            {
                "name": "hub-edge",
                "attestation": "symmetric_key",
                "primary_key": EDGE_GROUP_KEY,
                "iot_hub": HUB,
                "iot_edge": True,
                "initial_twin": {
                    "tags": {"site": "plant-1", "ring": "canary"},
                    "properties": {"desired": {"interval": 30}},
                },
            },
            {
                "name": "hub-plain",
                "attestation": "symmetric_key",
                "primary_key": PLAIN_GROUP_KEY,
                "iot_hub": HUB,
                "initial_twin": {"tags": {"site": "plant-2"}},
            },
        ],
        "iot_hub": settings,
    }


class HubClient(ServiceClient):
    """The IoT Hub service API of one linked hub: SAS sr = the hub's name, api-version 2021-04-12."""

    def __init__(self, emulator, hub: str = HUB, policy: str = HUB_POLICY, key: str = HUB_POLICY_KEY) -> None:
        super().__init__(emulator, policy, key, resource=hub)

    def request(self, method, path, body=None, headers=None, api_version=HUB_API_VERSION):
        return super().request(method, path, body, headers=headers, api_version=api_version)

    def patch(self, path: str, body, if_match: str | None = None) -> requests.Response:
        return self.request("PATCH", path, body, headers={"If-Match": if_match} if if_match else None)


def refused(response: requests.Response, status: int, name: str) -> str:
    """The answer is IoT Hub's error body for `name` (what the Node SDK's translateError parses); its text."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["Message"].startswith(f"ErrorCode:{name};"), body
    assert body["ExceptionMessage"].startswith("Tracking ID:"), body
    assert response.headers["iothub-errorcode"] == name
    return body["Message"]


def register(emulator, device_id: str, group_key: str = EDGE_GROUP_KEY) -> dict:
    """One DPS registration of a symmetric-key group device, as the device makes it."""
    client = Client(emulator, sas=sas_token(device_id, derived_key(group_key, device_id)))
    result = client.provision(device_id)
    assert result["status"] == "assigned" and result["registrationState"]["assignedHub"] == HUB, result
    return result


@pytest.fixture(scope="module")
def emulator(dps_emulator_factory):
    return dps_emulator_factory(
        hub_config(configuration_limit=CONFIGURATION_LIMIT, configuration_operations_per_minute=0), "dps-hub-api"
    )


@pytest.fixture
def hub(emulator):
    """The owner's client, with no configuration in HUB before and after the test."""
    client = HubClient(emulator)

    def clear() -> None:
        listing = client.get("/configurations")
        assert listing.status_code == 200, listing.text
        for configuration in listing.json():
            assert client.delete(f"/configurations/{configuration['id']}", if_match="*").status_code == 204

    clear()
    yield client
    clear()


def test_a_device_dps_assigned_is_in_its_hub_with_the_initial_twin(emulator, hub):
    register(emulator, "hub-dev-1")
    device = hub.get("/devices/hub-dev-1")
    assert device.status_code == 200, device.text
    identity = device.json()
    assert (identity["deviceId"], identity["status"], identity["connectionState"]) == (
        "hub-dev-1",
        "enabled",
        "Disconnected",
    )
    assert identity["etag"] and identity["authentication"]["type"] == "sas"
    assert identity["capabilities"] == {"iotEdge": True}
    twin = hub.get("/twins/hub-dev-1").json()
    assert twin["tags"] == {"site": "plant-1", "ring": "canary"}
    assert twin["properties"]["desired"]["interval"] == 30
    assert twin["etag"] and twin["version"] >= 1 and twin["configurations"] == {}
    listed = hub.get("/devices/")  # the Node SDK lists with the trailing slash
    assert "hub-dev-1" in [item["deviceId"] for item in listed.json()]
    # the other linked hub has its own registry
    refused(HubClient(emulator, hub=OTHER_HUB).get("/devices/hub-dev-1"), 404, "DeviceNotFound")


def test_device_status_with_etags_and_a_re_registration_keeps_the_hub_side(emulator, hub):
    register(emulator, "hub-dev-2")
    identity = hub.get("/devices/hub-dev-2").json()
    disabled = dict(identity, status="disabled", statusReason="revoked by a test")
    written = hub.put("/devices/hub-dev-2", disabled, if_match=f'"{identity["etag"]}"')
    assert written.status_code == 200, written.text
    assert (written.json()["status"], written.json()["statusReason"]) == ("disabled", "revoked by a test")
    assert written.json()["etag"] != identity["etag"]
    refused(hub.put("/devices/hub-dev-2", identity, if_match=identity["etag"]), 412, "PreconditionFailed")
    refused(hub.put("/devices/hub-dev-2", identity), 409, "DeviceAlreadyExists")
    twin = hub.get("/twins/hub-dev-2").json()
    assert hub.patch("/twins/hub-dev-2", {"tags": {"ring": "production"}}, twin["etag"]).status_code == 200
    register(emulator, "hub-dev-2")  # DPS again: IoT Hub keeps the identity's status and the twin
    again = hub.get("/devices/hub-dev-2").json()
    assert (again["status"], again["statusReason"]) == ("disabled", "revoked by a test")
    assert hub.get("/twins/hub-dev-2").json()["tags"] == {"site": "plant-1", "ring": "production"}
    enabled = hub.put("/devices/hub-dev-2", dict(again, status="enabled"), if_match="*")
    assert enabled.status_code == 200 and enabled.json()["status"] == "enabled"


def test_twin_patch_merges_tags_null_removes_with_etag(emulator, hub):
    register(emulator, "hub-dev-3")
    twin = hub.get("/twins/hub-dev-3").json()
    patched = hub.patch("/twins/hub-dev-3", {"tags": {"ring": None, "line": {"id": 7}}}, f'"{twin["etag"]}"')
    assert patched.status_code == 200, patched.text
    assert patched.json()["tags"] == {"site": "plant-1", "line": {"id": 7}}
    assert patched.json()["version"] == twin["version"] + 1 and patched.json()["etag"] != twin["etag"]
    refused(hub.patch("/twins/hub-dev-3", {"tags": {"ring": "x"}}, twin["etag"]), 412, "PreconditionFailed")
    refused(hub.patch("/twins/hub-dev-3", {"properties": {"reported": {"a": 1}}}), 400, "ArgumentInvalid")
    assert hub.get("/twins/hub-dev-3").json()["tags"] == {"site": "plant-1", "line": {"id": 7}}
    refused(hub.patch("/twins/no-such-device", {"tags": {"a": 1}}), 404, "DeviceNotFound")


def test_device_query_filters_and_pages(emulator, hub):
    for name in ("query-1", "query-2", "query-3"):
        register(emulator, name, PLAIN_GROUP_KEY)
    query = {
        "query": "SELECT * FROM devices WHERE tags.site = 'plant-2' AND deviceId IN ['query-1', 'query-2', 'query-3']"
    }
    first = hub.post("/devices/query", query, headers={"x-ms-max-item-count": "2"})
    assert first.status_code == 200, first.text
    assert [twin["deviceId"] for twin in first.json()] == ["query-1", "query-2"]
    token = first.headers["x-ms-continuation"]
    second = hub.post("/devices/query", query, headers={"x-ms-max-item-count": "2", "x-ms-continuation": token})
    assert [twin["deviceId"] for twin in second.json()] == ["query-3"]
    assert "x-ms-continuation" not in second.headers
    none = hub.post("/devices/query", {"query": "SELECT * FROM devices WHERE tags.site = 'nowhere'"})
    assert none.json() == []
    refused(hub.post("/devices/query", {"query": "SELECT * FROM devices WHERE tags.site ="}), 400, "ArgumentInvalid")


def test_configuration_crud_with_etag_and_immutable_content(hub):
    body = {"id": "crud-1", "content": DEVICE_CONTENT, "targetCondition": "tags.site = 'plant-2'", "priority": 1}
    created = hub.put("/configurations/crud-1", body)
    assert created.status_code == 200, created.text
    stored = created.json()
    assert stored["etag"] and stored["createdTimeUtc"] and stored["schemaVersion"] == "1.0"
    assert hub.get("/configurations/crud-1").json()["etag"] == stored["etag"]
    refused(hub.put("/configurations/crud-1", body), 409, "ConfigurationAlreadyExists")
    changed = dict(stored, priority=5, targetCondition="tags.site = 'plant-9'", labels={"team": "ops"})
    updated = hub.put("/configurations/crud-1", changed, if_match=f'"{stored["etag"]}"')
    assert updated.status_code == 200, updated.text
    assert (updated.json()["priority"], updated.json()["labels"]) == (5, {"team": "ops"})
    assert updated.json()["etag"] != stored["etag"] and updated.json()["createdTimeUtc"] == stored["createdTimeUtc"]
    refused(hub.put("/configurations/crud-1", changed, if_match=stored["etag"]), 412, "PreconditionFailed")
    new_content = dict(updated.json(), content={"deviceContent": {"properties.desired.telemetry": {"interval": 99}}})
    message = refused(hub.put("/configurations/crud-1", new_content, if_match="*"), 400, "ArgumentInvalid")
    assert "content" in message
    assert [item["id"] for item in hub.get("/configurations", api_version=HUB_API_VERSION).json()] == ["crud-1"]
    refused(hub.delete("/configurations/crud-1", if_match=stored["etag"]), 412, "PreconditionFailed")
    assert hub.delete("/configurations/crud-1", if_match=updated.json()["etag"]).status_code == 204
    refused(hub.get("/configurations/crud-1"), 404, "ConfigurationNotFound")


def test_configuration_limit(hub):
    def create(index: int) -> requests.Response:
        return hub.put(f"/configurations/limit-{index}", {"content": DEVICE_CONTENT, "targetCondition": "*"})

    for index in range(CONFIGURATION_LIMIT):
        assert create(index).status_code == 200
    refused(create(CONFIGURATION_LIMIT), 403, "IotHubQuotaExceeded")
    assert hub.delete("/configurations/limit-0").status_code == 204
    assert create(CONFIGURATION_LIMIT).status_code == 200


def test_configuration_operations_are_throttled_per_hub(dps_emulator_factory):
    emulator = dps_emulator_factory(hub_config(configuration_operations_per_minute=3), "dps-hub-throttle")
    hub = HubClient(emulator)
    assert hub.put("/configurations/burst", {"content": DEVICE_CONTENT, "targetCondition": "*"}).status_code == 200
    assert hub.get("/configurations").status_code == 200
    assert hub.get("/configurations/burst").status_code == 200  # a read of one is not a counted operation
    assert hub.delete("/configurations/burst").status_code == 204
    throttled = hub.get("/configurations")
    refused(throttled, 429, "ThrottlingException")
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    assert HubClient(emulator, hub=OTHER_HUB).get("/configurations").status_code == 200


def test_test_queries_reports_errors_as_iot_hub_does(hub):
    good = hub.post(
        "/configurations/testQueries",
        {
            "targetCondition": "tags.site IN ['a', 'b'] AND NOT tags.ring = 'x'",
            "customMetricQueries": {"ok": "SELECT deviceId FROM devices WHERE tags.site = 'a'"},
        },
    )
    assert good.status_code == 200, good.text
    assert good.json() == {"targetConditionError": "", "customMetricQueryErrors": {}}
    bad = hub.post(
        "/configurations/testQueries",
        {
            "targetCondition": "tags.site = ",
            "customMetricQueries": {"ok": "SELECT * FROM devices", "broken": "SELECT FROM"},
        },
    ).json()
    assert bad["targetConditionError"] and list(bad["customMetricQueryErrors"]) == ["broken"]
    body = {"content": DEVICE_CONTENT, "targetCondition": "tags.site = 'a' AND"}
    refused(hub.put("/configurations/bad-condition", body), 400, "ArgumentInvalid")
    refused(hub.get("/configurations/bad-condition"), 404, "ConfigurationNotFound")


def test_applied_and_targeted_per_device(emulator, hub):
    for name in ("apply-e1", "apply-e2"):
        register(emulator, name)
    register(emulator, "apply-p1", PLAIN_GROUP_KEY)
    twin = hub.get("/twins/apply-e2").json()
    assert hub.patch("/twins/apply-e2", {"tags": {"ring": "production"}}, twin["etag"]).status_code == 200
    ours = "deviceId IN ['apply-e1', 'apply-e2', 'apply-p1']"

    def create(configuration_id: str, content: dict, condition: str, priority: int, **extra) -> None:
        body = {"content": content, "targetCondition": condition, "priority": priority, **extra}
        answer = hub.put(f"/configurations/{configuration_id}", body)
        assert answer.status_code == 200, answer.text

    create("base-low", BASE_CONTENT, ours, 10)  # every Edge device of ours; the plain one is not Edge
    create("base-canary", BASE_CONTENT, f"{ours} AND tags.ring = 'canary'", 20)  # wins on apply-e1
    create("base-tie", BASE_CONTENT, f"{ours} AND tags.ring = 'production'", 10)  # ties base-low, newer: wins
    create("layer-canary", LAYERED_CONTENT, f"{ours} AND tags.ring = 'canary'", 1)  # layered: on top
    metric = (
        "SELECT deviceId FROM devices WHERE tags.site = 'plant-1' AND configurations.[[device-all]].status = 'applied'"
    )
    create("device-all", DEVICE_CONTENT, ours, 0, metrics={"queries": {"plant1": metric}})

    def statuses(device_id: str) -> dict:
        return {key: value["status"] for key, value in hub.get(f"/twins/{device_id}").json()["configurations"].items()}

    assert statuses("apply-e1") == {
        "base-low": "targeted",
        "base-canary": "applied",
        "layer-canary": "applied",
        "device-all": "applied",
    }
    assert statuses("apply-e2") == {"base-low": "targeted", "base-tie": "applied", "device-all": "applied"}
    assert statuses("apply-p1") == {"device-all": "applied"}
    counts = {
        item["id"]: (
            item["systemMetrics"]["results"]["targetedCount"],
            item["systemMetrics"]["results"]["appliedCount"],
        )
        for item in hub.get("/configurations").json()
    }
    assert counts == {
        "base-low": (2, 0),
        "base-canary": (1, 1),
        "base-tie": (1, 1),
        "layer-canary": (1, 1),
        "device-all": (3, 3),
    }
    assert hub.get("/configurations/device-all").json()["metrics"]["results"] == {"plant1": 2}
    admin = requests.get(
        f"{emulator.url}/_emulator/hubs/{HUB}/configurations-applied", verify=emulator.ca_cert, timeout=10
    )
    assert admin.json()["apply-e1"] == ["base-canary", "device-all", "layer-canary"]
    # evaluated when asked: a higher priority wins at once (IoT Hub takes up to 5 minutes)
    low = hub.get("/configurations/base-low").json()
    assert hub.put("/configurations/base-low", dict(low, priority=30), if_match=low["etag"]).status_code == 200
    assert statuses("apply-e1")["base-low"] == "applied" and statuses("apply-e1")["base-canary"] == "targeted"
    assert statuses("apply-e2")["base-low"] == "applied" and statuses("apply-e2")["base-tie"] == "targeted"


def test_rights_of_a_registry_read_policy(emulator, hub):
    register(emulator, "hub-dev-read")
    reader = HubClient(emulator, policy=READER_POLICY, key=READER_KEY)
    assert reader.get("/devices/hub-dev-read").status_code == 200
    assert reader.get("/configurations").status_code == 200
    message = refused(reader.patch("/twins/hub-dev-read", {"tags": {"a": 1}}), 401, "IotHubUnauthorizedAccess")
    assert "RegistryWrite" in message
    body = {"content": DEVICE_CONTENT, "targetCondition": "*"}
    refused(reader.put("/configurations/read-only", body), 401, "IotHubUnauthorizedAccess")
    refused(HubClient(emulator, key=READER_KEY).get("/devices/hub-dev-read"), 401, "IotHubUnauthorizedAccess")


def test_a_token_for_a_hub_not_linked_or_for_dps_is_refused(emulator, hub):
    register(emulator, "hub-dev-sr")
    elsewhere = HubClient(emulator, hub="hub-elsewhere.azure-devices.net")
    assert "names no IoT hub linked" in refused(elsewhere.get("/devices/hub-dev-sr"), 401, "IotHubUnauthorizedAccess")
    dps_host = HubClient(emulator, hub=f"{emulator.host}:{emulator.port}")
    refused(dps_host.get("/devices/hub-dev-sr"), 401, "IotHubUnauthorizedAccess")
    upper = HubClient(emulator, hub=HUB.upper() + "/devices/hub-dev-sr")  # case-insensitive, a path prefix
    assert upper.get("/devices/hub-dev-sr").status_code == 200
    refused(upper.get("/configurations"), 401, "IotHubUnauthorizedAccess")
    refused(hub.get("/devices/hub-dev-sr", api_version="2021-10-01"), 400, "InvalidProtocolVersion")


def test_configurations_and_the_hub_side_of_devices_survive_a_restart(tmp_path):
    first = start_dps_emulator(tmp_path, hub_config())
    try:
        register(first, "restart-dev")
        hub = HubClient(first)
        identity = hub.get("/devices/restart-dev").json()
        assert hub.put("/devices/restart-dev", dict(identity, status="disabled"), if_match="*").status_code == 200
        body = {"content": DEVICE_CONTENT, "targetCondition": "deviceId = 'restart-dev'", "priority": 3}
        created = hub.put("/configurations/kept", body).json()
    finally:
        first.stop()
    second = start_dps_emulator(tmp_path, hub_config())
    try:
        hub = HubClient(second)
        kept = hub.get("/configurations/kept").json()
        assert (kept["etag"], kept["createdTimeUtc"], kept["priority"]) == (
            created["etag"],
            created["createdTimeUtc"],
            3,
        )
        assert kept["systemMetrics"]["results"]["appliedCount"] == 1
        assert hub.get("/devices/restart-dev").json()["status"] == "disabled"
    finally:
        second.stop()
    assert second.process.returncode == 0, second.log()


def test_server_certificate_carries_the_linked_hub_names(emulator):
    context = ssl.create_default_context(cafile=emulator.ca_cert)
    for name in (HUB, OTHER_HUB):
        with (
            socket.create_connection((emulator.host, emulator.port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=name) as tls,
        ):
            assert tls.version()


def test_iot_hub_config_errors_name_the_entry(tmp_path):
    path = tmp_path / "dps.yml"
    config = hub_config()
    config["iot_hub"]["shared_access_policies"][1]["rights"] = ["RegistryRead", "EnrollmentWrite"]
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"IoT Hub shared access policy 'registryread': unknown right\(s\) EnrollmentWrite"
    ):
        load_config(path)
    config = hub_config(configuration_limit=-1)
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(ConfigError, match="configuration_limit must be a non-negative integer"):
        load_config(path)
