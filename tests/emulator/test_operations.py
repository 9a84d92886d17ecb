"""DPS operations as DPS bills them (GET/DELETE /_emulator/operations) and the operations quota
(defaults.operations_per_minute): what counts, what does not (polls, throttled requests, IoT Hub, admin), and the
429 + Retry-After to the next calendar minute."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
from dps_emulator.app import Emulator as EmulatorApp
from dps_emulator.config import ConfigError, load_config
from dps_emulator.operations import OperationCounter, operation_of
from dps_emulator.testing import start_emulator

from .helpers import GROUP_KEY, Client, ServiceClient, config_text, derived_key, sas_token

# Every DPS route of the emulator and the operation it is billed as; a route added without a kind fails here.
EXPECTED_KINDS = {
    ("PUT", "/{idScope}/registrations/{registrationId}/register"): ("device", "register"),
    ("POST", "/{idScope}/registrations/{registrationId}"): ("device", "lookup"),
    ("GET", "/{idScope}/registrations/{registrationId}/operations/{operationId}"): ("device", "poll"),
    ("POST", "/registrations/{id}/query"): ("service", "registration_query"),
    ("GET", "/registrations/{id}"): ("service", "registration_read"),
    ("DELETE", "/registrations/{id}"): ("service", "registration_write"),
    **{
        (method, path.format(kind=kind)): ("service", f"enrollment_{verb}")
        for kind in ("enrollments", "enrollmentGroups")
        for method, path, verb in (
            ("POST", "/{kind}/query", "query"),
            ("POST", "/{kind}", "write"),
            ("GET", "/{kind}/{{id}}", "read"),
            ("PUT", "/{kind}/{{id}}", "write"),
            ("DELETE", "/{kind}/{{id}}", "write"),
            ("POST", "/{kind}/{{id}}/attestationmechanism", "read"),
        )
    },
}


def sym_client(emulator, registration_id: str) -> Client:
    return Client(emulator, sas=sas_token(registration_id, derived_key(GROUP_KEY, registration_id)))


def provision_counting_polls(client: Client, registration_id: str) -> int:
    """Register, then poll until assigned; return how many polls it took."""
    registered = client.register(registration_id)
    assert registered.status_code == 202, registered.text
    operation_id = registered.json()["operationId"]
    for polls in range(1, 100):
        polled = client.operation(registration_id, operation_id)
        if polled.status_code == 200:
            return polls
        assert polled.status_code == 202, polled.text
        time.sleep(0.1)
    raise AssertionError(f"{registration_id} was not assigned")


def away_from_minute_end(margin: float = 8.0) -> None:
    """Sleep into the next calendar minute when the current one ends within `margin` s (the quota's unit)."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.2)


def test_every_dps_route_has_its_operation_kind_and_no_other_route_is_counted(config_file: Path, tmp_path: Path):
    app = EmulatorApp(load_config(config_file), tmp_path)
    kinds = {(route.method, route.pattern): operation_of(route) for route in app.router.routes}
    dps = {key: kind for key, kind in kinds.items() if kind is not None}
    assert dps == EXPECTED_KINDS
    # IoT Hub and admin routes are no DPS operations
    assert all(route.auth in ("hub", "none") for route in app.router.routes if operation_of(route) is None)


def test_device_and_service_calls_are_billed_polls_and_non_dps_requests_are_not(clean_faults):
    emulator = clean_faults
    assert emulator.reset_operations()["total"] == 0
    client = sym_client(emulator, "ops-dev-1")
    assert client.status("ops-dev-1").status_code == 404  # a lookup that finds nothing is billed too
    polls = provision_counting_polls(client, "ops-dev-1")
    assert polls >= 2  # assignment_delay 0.3 s: at least one "assigning" answer before "assigned"
    assert client.status("ops-dev-1").status_code == 200

    service = ServiceClient(emulator)
    assert service.get("/enrollmentGroups/fleet-sym").status_code == 200
    pages = 0
    headers = {"x-ms-max-item-count": "2"}
    while True:
        page = service.post("/enrollmentGroups/query", {"query": "SELECT *"}, headers=headers)
        assert page.status_code == 200
        pages += 1
        if "x-ms-continuation" not in page.headers:
            break
        headers = {**headers, "x-ms-continuation": page.headers["x-ms-continuation"]}
    assert pages >= 2  # four groups in the file, two a page: each page is one operation
    assert service.post("/registrations/fleet-sym/query", {"query": "SELECT *"}).status_code == 200
    assert service.get("/registrations/ops-dev-1").status_code == 200

    # not operations: a wrong api-version, an injected fault, an IoT Hub request, the admin API
    assert client.status("ops-dev-1").status_code == 200
    before = emulator.operations()
    assert client.register("ops-dev-1", api_version="1999-01-01").status_code == 400
    emulator.set_faults([{"type": "throttle", "count": 1, "endpoint": "status"}])
    assert client.status("ops-dev-1").status_code == 429
    hub = requests.get(f"{emulator.url}/devices/ops-dev-1?api-version=2021-04-12", verify=emulator.ca_cert, timeout=10)
    assert hub.status_code == 401
    emulator.devices()
    assert emulator.operations()["total"] == before["total"]

    counted = emulator.operations()
    assert counted["by_kind"] == {
        "lookup": 3,
        "register": 1,
        "poll": polls,
        "enrollment_read": 1,
        "enrollment_query": pages,
        "registration_query": 1,
        "registration_read": 1,
    }
    assert counted["by_api"] == {"device": 4, "service": 3 + pages}
    assert counted["total"] == 7 + pages  # polls are not billed
    assert counted["not_billed"] == ["poll"]
    assert counted["throttled"] == 0  # an injected throttle is a fault, not the quota
    assert sum(minute["operations"] for minute in counted["per_minute"]) == counted["total"]
    assert counted["operations_per_minute"] == 0

    reset = emulator.reset_operations()
    assert (reset["total"], reset["by_kind"], reset["per_minute"]) == (0, {}, [])
    assert emulator.operations()["total"] == 0


@pytest.fixture
def quota_emulator(pki, devices, tmp_path):
    """An emulator with a quota of 4 operations a minute and 1 registration a minute."""
    text = config_text(devices["individual"].leaf_file, devices["disabled"].leaf_file)
    limits = "  rate_limit_per_minute: 1\n  operations_per_minute: 4\n"
    text = text.replace("  retry_after: 1\n", "  retry_after: 1\n" + limits)
    config = pki.directory / f"quota-{tmp_path.name}.yml"  # its certificate paths are relative to the PKI directory
    config.write_text(text, encoding="utf-8")
    emulator = start_emulator(config, tmp_path / "state")
    yield emulator
    emulator.stop()


def test_quota_refuses_operations_beyond_it_until_the_next_minute_and_does_not_bill_them(quota_emulator):
    emulator = quota_emulator
    client = sym_client(emulator, "quota-dev-1")
    service = ServiceClient(emulator)
    away_from_minute_end()
    emulator.reset_operations()
    registered = client.register("quota-dev-1")  # 1
    assert registered.status_code == 202
    # the registrations-per-minute limit throttles the second register: not billed
    assert client.register("quota-dev-1").status_code == 429
    assert client.status("quota-dev-1").status_code in (200, 404)  # 2
    assert service.get("/enrollmentGroups/fleet-sym").status_code == 200  # 3
    assert client.status("quota-dev-1").status_code in (200, 404)  # 4: the quota is reached

    refused = client.status("quota-dev-1")
    to_next_minute = 60 - time.time() % 60
    assert refused.status_code == 429
    assert refused.json()["errorCode"] == 429001
    assert "Operations quota exceeded (4 per minute)" in refused.json()["message"]
    assert abs(int(refused.headers["Retry-After"]) - to_next_minute) <= 2
    assert service.get("/enrollmentGroups/fleet-sym").status_code == 429  # the service API shares the quota
    # polling is not an operation: it still answers
    polled = client.operation("quota-dev-1", registered.json()["operationId"])
    assert polled.status_code in (200, 202)

    counted = emulator.operations()
    assert counted["total"] == 4 and counted["throttled"] == 3
    assert counted["by_kind"] == {"register": 1, "lookup": 2, "enrollment_read": 1, "poll": 1}
    assert counted["operations_per_minute"] == 4
    (minute,) = counted["per_minute"]
    assert (minute["operations"], minute["throttled"]) == (4, 3)


def test_counter_quota_starts_again_with_the_next_calendar_minute():
    now = [1_800_000_000.0 + 45.5]  # 45.5 s into a calendar minute (1_800_000_000 is a multiple of 60)
    counter = OperationCounter(clock=lambda: now[0])
    assert counter.admit("device", "register", 2).retry_after is None
    assert counter.admit("service", "registration_query", 2).retry_after is None
    assert counter.admit("device", "poll", 2).retry_after is None  # polls are neither billed nor refused
    refused = counter.admit("device", "lookup", 2)
    assert refused.retry_after == 15  # 14.5 s to the next minute, rounded up
    now[0] += 15
    assert counter.admit("device", "lookup", 2).retry_after is None
    counted = counter.snapshot(2)
    assert counted["total"] == 3 and counted["throttled"] == 1
    assert counted["by_api"] == {"device": 2, "service": 1}
    assert [(m["minute"], m["operations"], m["throttled"]) for m in counted["per_minute"]] == [
        ("2027-01-15T08:00Z", 2, 1),
        ("2027-01-15T08:01Z", 1, 0),
    ]


def test_operations_per_minute_must_be_a_count(config_file: Path):
    text = config_file.read_text(encoding="utf-8")
    bad = config_file.with_name("operations-bad.yml")
    bad.write_text(text.replace("  retry_after: 1\n", "  retry_after: 1\n  operations_per_minute: -5\n"), "utf-8")
    with pytest.raises(ConfigError, match="operations_per_minute must be a non-negative integer"):
        load_config(bad)
    good = config_file.with_name("operations-good.yml")
    good.write_text(text.replace("  retry_after: 1\n", "  retry_after: 1\n  operations_per_minute: 1000\n"), "utf-8")
    assert load_config(good).operations_per_minute == 1000
    assert load_config(config_file).operations_per_minute == 0
