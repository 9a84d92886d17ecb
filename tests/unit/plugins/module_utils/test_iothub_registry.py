"""Unit tests for _iothub_registry: the input rules, the queries, the tag and status comparison, and the bulk run
(RegistrySync) against an in-memory hub that answers like IoT Hub (twins by query, If-Match etags, 412)."""

from __future__ import annotations

import copy
import json

import pytest

from ansible_collections.iotfleet.aziot.plugins.module_utils import _iothub_registry as registry
from ansible_collections.iotfleet.aziot.plugins.module_utils._iothub import (
    ConcurrentChange,
    IotHubError,
    PreconditionFailed,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._iothub_registry import (
    DesiredDevice,
    RegistryError,
    RegistrySync,
)

HUB = "hub-unit.azure-devices.net"


# --- input --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device_id", ["pi-01", "Pi.01_a", "a:b=c@d$e'f(g)h!i*j?k%l+m#n,o", "x" * 128])
def test_device_ids_iot_hub_accepts(device_id):
    assert registry.device_id_problem(device_id) is None


@pytest.mark.parametrize(
    ("device_id", "words"),
    [
        ("pi 01", "' '"),
        ("pi/01", "'/'"),
        ("pï-01", "'ï'"),
        ("x" * 129, "129 characters"),
        ("", "non-empty"),
    ],
)
def test_device_ids_iot_hub_refuses(device_id, words):
    assert words in registry.device_id_problem(device_id)


def nested(depth: int) -> dict:
    tags: dict = {"leaf": "value"}
    for level in range(depth):
        tags = {f"level{level}": tags}
    return tags


def test_tags_iot_hub_accepts():
    tags = {
        "site": "plant-3",
        "location": {"region": "eu", "line": 4, "geo": {"lat": 48.1, "lon": 11.5}},
        "canary": True,
        "zones": ["a", "b", {"c": 1}],
        "big": registry.TAG_INT_MAX,
        "text": "x" * registry.TAG_STRING_MAX_BYTES,
    }
    assert registry.tags_problem(tags) is None
    assert registry.tags_problem(nested(registry.TAG_MAX_DEPTH - 1)) is None


@pytest.mark.parametrize(
    ("tags", "words"),
    [
        ({"a.b": 1}, "key 'a.b'"),
        ({"$version": 1}, "key '$version'"),
        ({"my tag": 1}, "key 'my tag'"),
        ({"ok": {"bad\x01": 1}}, "control character"),
        ({"site": None}, "tags.site is null"),
        ({"loc": {"line": None}}, "tags.loc.line is null"),
        ({"zones": ["a", None]}, "tags.zones[1] is null"),
        ({"n": registry.TAG_INT_MAX + 1}, "integer range"),
        ({"t": "é" * 2049}, "4096 bytes"),
        (nested(registry.TAG_MAX_DEPTH + 1), "10 levels"),
        (["site"], "must be a dict"),
        ({"when": object()}, "is a object"),
        ({"ratio": float("nan")}, "tags.ratio is not a finite number"),
        ({"ratio": float("inf")}, "tags.ratio is not a finite number"),
    ],
)
def test_tags_iot_hub_refuses(tags, words):
    assert words in registry.tags_problem(tags)


def test_desired_devices_checks_each_entry_and_names_the_device():
    entries = [
        {"device_id": "pi-01", "tags": {"site": "a"}, "status": "disabled", "status_reason": "revoked"},
        {"device_id": "pi-02", "tags": None, "status": None, "status_reason": None},
    ]
    devices = registry.desired_devices(entries)
    assert devices == [
        DesiredDevice("pi-01", {"site": "a"}, "disabled", "revoked"),
        DesiredDevice("pi-02"),
    ]
    with pytest.raises(RegistryError, match=r"^device pi-01 is listed twice in devices; give each device once$"):
        registry.desired_devices([entries[0], entries[0]])
    with pytest.raises(
        RegistryError, match=r"^device pi-03: status_reason is 129 characters; IoT Hub keeps at most 128"
    ):
        registry.desired_devices([{"device_id": "pi-03", "status_reason": "r" * 129}])
    with pytest.raises(RegistryError, match=r"^device pi-04: tags.site is null"):
        registry.desired_devices([{"device_id": "pi-04", "tags": {"site": None}}])
    with pytest.raises(RegistryError, match=r"^devices\[1\]: device_id 'a b' has ' '"):
        registry.desired_devices([{"device_id": "ok"}, {"device_id": "a b"}])
    assert registry.desired_devices([{"device_id": "pi-05", "status_reason": "r" * 128}])[0].status_reason


# --- queries ------------------------------------------------------------------------------------------------------


def test_queries_take_100_ids_each_and_quote_a_device_id_with_a_quote():
    ids = [f"pi-{number:03d}" for number in range(250)] + ["o'brien"]
    queries = registry.device_queries(ids)
    assert len(queries) == 3
    assert queries[0].startswith("SELECT * FROM devices WHERE deviceId IN ['pi-000','pi-001',")
    assert queries[0].count(",") == 99
    assert queries[2].endswith(""",'pi-249',"o'brien"]""")


def test_queries_stay_under_the_length_bound():
    ids = ["x" * 120 + str(number) for number in range(100)]
    queries = registry.device_queries(ids, max_chars=2000)
    assert all(len(query) <= 2000 for query in queries)
    assert sum(query.count("'") // 2 for query in queries) == 100


# --- comparing ----------------------------------------------------------------------------------------------------


def test_json_equality_is_not_pythons():
    assert not registry.same_json(True, 1)
    assert not registry.same_json({"a": 1}, {"a": True})
    assert registry.same_json(1, 1.0)
    assert registry.same_json({"a": [1, {"b": "c"}]}, {"a": [1, {"b": "c"}]})
    assert not registry.same_json([1, 2], [2, 1])
    assert not registry.same_json("1", 1)
    assert not registry.same_json(None, {})


def test_tags_patch_with_purge_makes_the_tags_exactly_the_given_ones():
    current = {"site": "a", "old": "x", "loc": {"line": 1, "bay": 2}, "flag": True}
    desired = {"site": "b", "loc": {"line": 1}, "flag": 1, "new": {"k": "v"}}
    patch = registry.tags_patch(current, desired, purge=True)
    assert patch == {"site": "b", "old": None, "loc": {"bay": None}, "flag": 1, "new": {"k": "v"}}
    assert registry.merge_patch(current, patch) == desired
    assert registry.tags_patch(desired, desired, purge=True) == {}
    assert registry.tags_patch(None, {}, purge=True) == {}
    assert registry.tags_patch({"a": 1}, {}, purge=True) == {"a": None}


def test_tags_patch_without_purge_sets_only_the_given_keys():
    current = {"site": "a", "owner": "ops", "loc": {"line": 1, "bay": 2}}
    patch = registry.tags_patch(current, {"site": "b", "loc": {"line": 1}}, purge=False)
    assert patch == {"site": "b", "loc": {"bay": None}}
    assert registry.merge_patch(current, patch) == {"site": "b", "owner": "ops", "loc": {"line": 1}}
    assert registry.tags_patch(current, {"owner": "ops"}, purge=False) == {}
    # a value that changes type is replaced whole
    assert registry.tags_patch({"loc": "x"}, {"loc": {"a": 1}}, purge=False) == {"loc": {"a": 1}}
    assert registry.tags_patch({"loc": {"a": 1}}, {"loc": [1]}, purge=False) == {"loc": [1]}


def test_status_compares_only_what_is_set():
    twin = {"status": "enabled", "statusReason": None}
    assert registry.status_changes(twin, DesiredDevice("d")) == {}
    assert registry.status_changes(twin, DesiredDevice("d", status="enabled", status_reason="")) == {}
    assert registry.status_changes(twin, DesiredDevice("d", status="disabled")) == {"status": "disabled"}
    assert registry.status_changes(
        {"status": "disabled", "statusReason": "revoked"}, DesiredDevice("d", status="enabled")
    ) == {"status": "enabled"}
    assert registry.status_changes(twin, DesiredDevice("d", status_reason="why")) == {"statusReason": "why"}


# --- the bulk run against an in-memory hub ------------------------------------------------------------------------


class MemoryHub:
    """Devices and twins as IoT Hub keeps them: the query answers twins, writes need the current etag (412 else),
    a PATCH merges tags. `before_write(method, device_id)` is called before each write (another writer's move)."""

    def __init__(self, *device_ids: str) -> None:
        self.devices: dict[str, dict] = {}
        self.calls: list[str] = []
        self.before_write = None
        for device_id in device_ids:
            self.add(device_id)

    def add(self, device_id: str, tags: dict | None = None, status: str = "enabled") -> None:
        self.devices[device_id] = {
            "identity": {
                "deviceId": device_id,
                "etag": "MQ==",
                "status": status,
                "statusReason": None,
                "authentication": {"type": "certificateAuthority", "x509Thumbprint": {}},
                "capabilities": {"iotEdge": True},
            },
            "tags": dict(tags or {}),
            "version": 1,
        }

    def twin(self, device_id: str) -> dict:
        device = self.devices[device_id]
        identity = device["identity"]
        return {
            "deviceId": device_id,
            "etag": f"AAAAAAAAAA{device['version']}=",
            "deviceEtag": identity["etag"],
            "version": device["version"],
            "status": identity["status"],
            "statusReason": identity["statusReason"],
            "tags": copy.deepcopy(device["tags"]),
            "capabilities": identity["capabilities"],
            "configurations": {"base": {"status": "targeted"}},
        }

    def edit_tags(self, device_id: str, **tags) -> None:
        self.devices[device_id]["tags"].update(tags)
        self.devices[device_id]["version"] += 1

    # the IotHubClient methods RegistrySync uses
    def query_devices(self, query: str, page_size: int = 100) -> list[dict]:
        self.calls.append("query")
        inside = query.split("IN [", 1)[1].rstrip("]")
        wanted = [literal[1:-1] for literal in inside.split(",")]
        return [self.twin(device_id) for device_id in wanted if device_id in self.devices]

    def get_twin(self, device_id: str) -> dict | None:
        self.calls.append(f"GET twins/{device_id}")
        return self.twin(device_id) if device_id in self.devices else None

    def get_device(self, device_id: str) -> dict | None:
        self.calls.append(f"GET devices/{device_id}")
        return copy.deepcopy(self.devices[device_id]["identity"]) if device_id in self.devices else None

    def patch_twin(self, device_id: str, patch: dict, etag: str) -> dict:
        self.calls.append(f"PATCH twins/{device_id} {json.dumps(patch, sort_keys=True)}")
        self.write_check("PATCH", device_id)
        if etag != self.twin(device_id)["etag"]:
            raise PreconditionFailed("stale", status=412)
        device = self.devices[device_id]
        device["tags"] = registry.merge_patch(device["tags"], patch["tags"])
        device["version"] += 1
        return self.twin(device_id)

    def put_device(self, device_id: str, body: dict, etag: str) -> dict:
        self.calls.append(f"PUT devices/{device_id} {body['status']} {body.get('statusReason')}")
        self.write_check("PUT", device_id)
        identity = self.devices[device_id]["identity"]
        if etag != identity["etag"]:
            raise PreconditionFailed("stale", status=412)
        assert body["authentication"] == identity["authentication"], "the PUT must carry the identity as read"
        identity.update(status=body["status"], statusReason=body.get("statusReason"), etag=f"{etag}x")
        return copy.deepcopy(identity)

    def write_check(self, method: str, device_id: str) -> None:
        if self.before_write:
            self.before_write(method, device_id)
        if device_id not in self.devices:
            raise IotHubError("DeviceNotFound", status=404, error_name="DeviceNotFound")

    def changed_meanwhile(self, error, attempt, doing) -> None:
        self.calls.append(f"412 on {doing}")


def sync(hub: MemoryHub, **options) -> RegistrySync:
    return RegistrySync(hub, HUB, **options)


def test_nothing_to_change_costs_one_query_per_100_devices():
    ids = [f"pi-{number:03d}" for number in range(250)]
    hub = MemoryHub(*ids)
    for device_id in ids:
        hub.edit_tags(device_id, site="a")
    result = sync(hub).run([DesiredDevice(device_id, {"site": "a"}, "enabled") for device_id in ids])
    assert hub.calls == ["query", "query", "query"]
    assert result["changed"] is False
    assert result["changed_devices"] == [] and result["missing"] == [] and result["diffs"] == []
    assert result["devices"][0] == {
        "device_id": "pi-000",
        "changed": False,
        "status": "enabled",
        "status_reason": "",
        "tags": {"site": "a"},
        "configurations": {"base": {"status": "targeted"}},
    }


def test_tags_are_patched_with_the_twin_etag_and_status_put_with_the_identity():
    hub = MemoryHub("pi-01", "pi-02", "pi-03")
    hub.edit_tags("pi-01", site="a", old="x")
    hub.edit_tags("pi-02", site="b")
    hub.edit_tags("pi-03", site="c")
    desired = [
        DesiredDevice("pi-01", {"site": "b"}),
        DesiredDevice("pi-02", {"site": "b"}, status="disabled", status_reason="revoked"),
        DesiredDevice("pi-03"),
    ]
    result = sync(hub).run(desired)
    assert hub.calls == [
        "query",
        'PATCH twins/pi-01 {"tags": {"old": null, "site": "b"}}',
        "GET devices/pi-02",
        "PUT devices/pi-02 disabled revoked",
    ]
    assert result["changed_devices"] == ["pi-01", "pi-02"]
    assert [device["changed"] for device in result["devices"]] == [True, True, False]
    assert result["devices"][1]["status"] == "disabled"
    assert result["devices"][1]["status_reason"] == "revoked"
    assert hub.devices["pi-01"]["tags"] == {"site": "b"}
    assert hub.devices["pi-02"]["identity"]["status"] == "disabled"
    assert [json.loads(diff["before"]) for diff in result["diffs"]] == [
        {"tags": {"site": "a", "old": "x"}},
        {"tags": {"site": "b"}, "status": "enabled", "status_reason": ""},
    ]
    assert json.loads(result["diffs"][1]["after"]) == {
        "tags": {"site": "b"},
        "status": "disabled",
        "status_reason": "revoked",
    }
    assert result["diffs"][0]["before_header"] == "device pi-01 (IoT Hub)"
    # the second run changes nothing
    hub.calls.clear()
    again = sync(hub).run(desired)
    assert (again["changed"], hub.calls) == (False, ["query"])


def test_check_mode_reads_only_and_shows_what_would_change():
    hub = MemoryHub("pi-01")
    hub.edit_tags("pi-01", site="a")
    result = sync(hub, check_mode=True).run([DesiredDevice("pi-01", {"ring": "canary"}, "disabled")])
    assert hub.calls == ["query"]
    assert result["changed"] is True and result["changed_devices"] == ["pi-01"]
    assert result["devices"][0]["tags"] == {"site": "a"}  # as it is now
    assert json.loads(result["diffs"][0]["after"]) == {"tags": {"ring": "canary"}, "status": "disabled"}


def test_purge_tags_false_leaves_other_tags():
    hub = MemoryHub("pi-01")
    hub.edit_tags("pi-01", site="a", owner="ops")
    result = sync(hub, purge_tags=False).run([DesiredDevice("pi-01", {"site": "b"})])
    assert hub.devices["pi-01"]["tags"] == {"site": "b", "owner": "ops"}
    assert result["devices"][0]["tags"] == {"site": "b", "owner": "ops"}


def test_missing_devices_fail_before_any_write_or_are_skipped():
    hub = MemoryHub("pi-01")
    desired = [DesiredDevice("pi-01", {"site": "b"}), DesiredDevice("pi-08"), DesiredDevice("pi-09")]
    with pytest.raises(RegistryError) as raised:
        sync(hub).run(desired)
    assert str(raised.value) == (
        f"2 devices pi-08, pi-09 are not in IoT Hub {HUB}: register them through DPS first (provision.yml), or set "
        "missing=skip to leave them out; nothing was changed"
    )
    assert hub.calls == ["query"]
    result = sync(hub, missing="skip").run(desired)
    assert result["missing"] == ["pi-08", "pi-09"]
    assert [device["device_id"] for device in result["devices"]] == ["pi-01"]
    assert result["changed_devices"] == ["pi-01"]


def test_a_concurrent_tag_edit_is_read_again_and_kept_out_of_the_patch():
    hub = MemoryHub("pi-01")
    hub.edit_tags("pi-01", site="a")
    moves = []

    def other_writer(method, device_id):
        if not moves:
            moves.append(method)
            hub.edit_tags(device_id, owner="ops")

    hub.before_write = other_writer
    result = sync(hub, purge_tags=False).run([DesiredDevice("pi-01", {"site": "b"})])
    assert hub.calls == [
        "query",
        'PATCH twins/pi-01 {"tags": {"site": "b"}}',
        "412 on the write of device pi-01",
        "GET twins/pi-01",
        'PATCH twins/pi-01 {"tags": {"site": "b"}}',
    ]
    assert hub.devices["pi-01"]["tags"] == {"site": "b", "owner": "ops"}
    assert result["changed_devices"] == ["pi-01"]


def test_a_concurrent_status_change_that_did_the_work_is_not_a_change():
    hub = MemoryHub("pi-01")

    def other_writer(method, device_id):
        identity = hub.devices[device_id]["identity"]
        if identity["status"] == "enabled":
            identity.update(status="disabled", etag="Mg==")

    hub.before_write = other_writer
    result = sync(hub).run([DesiredDevice("pi-01", status="disabled")])
    assert hub.calls == [
        "query",
        "GET devices/pi-01",
        "PUT devices/pi-01 disabled None",
        "412 on the write of device pi-01",
        "GET twins/pi-01",
    ]
    assert result["changed"] is False and result["diffs"] == []
    assert result["devices"][0]["status"] == "disabled"


def test_a_twin_that_keeps_changing_fails_after_the_retries_naming_the_device():
    hub = MemoryHub("pi-01")
    hub.before_write = lambda method, device_id: hub.edit_tags(device_id, noise=len(hub.calls))
    runner = sync(hub)
    with pytest.raises(ConcurrentChange) as raised:
        runner.run([DesiredDevice("pi-01", {"site": "b"})])
    assert str(raised.value).startswith(
        "device pi-01: the device changed in IoT Hub while this task was writing it, 4 times"
    )
    assert sum(call.startswith("PATCH") for call in hub.calls) == registry.MAX_PRECONDITION_RETRIES + 1
    assert runner.changed_devices == []


def test_a_device_deleted_between_read_and_write():
    hub = MemoryHub("pi-01", "pi-02")
    hub.before_write = lambda method, device_id: hub.devices.pop(device_id) if device_id == "pi-01" else None
    result = sync(hub, missing="skip").run([DesiredDevice("pi-01", {"a": "1"}), DesiredDevice("pi-02", {"a": "1"})])
    assert result["missing"] == ["pi-01"]
    assert result["changed_devices"] == ["pi-02"]
    assert [device["device_id"] for device in result["devices"]] == ["pi-02"]
    hub.add("pi-03")
    hub.before_write = lambda method, device_id: hub.devices.pop(device_id)
    with pytest.raises(RegistryError, match=r"^device pi-03 is not in IoT Hub .*\(deleted while this task ran\)$"):
        sync(hub).run([DesiredDevice("pi-03", status="disabled")])
