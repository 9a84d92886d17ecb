"""Fault injection: throttle, error, drop, slow, rate limit."""

from __future__ import annotations

import time

import pytest
import requests
from dps_emulator.testing import start_emulator

from .helpers import GROUP_KEY, Client, config_text, derived_key, sas_token


def sym_client(emulator, registration_id: str) -> Client:
    return Client(emulator, sas=sas_token(registration_id, derived_key(GROUP_KEY, registration_id)))


def test_throttle_n_times_then_ok(clean_faults):
    emulator = clean_faults
    emulator.set_faults([{"type": "throttle", "count": 2, "retry_after": 2, "registration_id": "thr-dev"}])
    client = sym_client(emulator, "thr-dev")
    for _ in range(2):
        response = client.register("thr-dev")
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "2"
        assert response.json()["errorCode"] == 429001
    assert client.provision("thr-dev")["status"] == "assigned"
    assert emulator.set_faults([]) == []  # the exhausted fault is gone


def test_error_only_on_operation_endpoint(clean_faults):
    emulator = clean_faults
    emulator.set_faults([{"type": "error", "count": 1, "endpoint": "operation"}])
    client = sym_client(emulator, "err-dev")
    registered = client.register("err-dev")
    assert registered.status_code == 202
    operation_id = registered.json()["operationId"]
    assert client.operation("err-dev", operation_id).status_code == 500
    time.sleep(0.4)
    assert client.operation("err-dev", operation_id).json()["status"] == "assigned"


def test_drop_closes_connection(clean_faults):
    emulator = clean_faults
    emulator.set_faults([{"type": "drop", "count": 1, "endpoint": "register"}])
    client = sym_client(emulator, "drop-dev")
    with pytest.raises(requests.exceptions.ConnectionError):
        client.register("drop-dev")
    assert client.register("drop-dev").status_code == 202


def test_slow_answer(clean_faults):
    emulator = clean_faults
    emulator.set_faults([{"type": "slow", "seconds": 1.0, "count": 1, "endpoint": "status"}])
    client = sym_client(emulator, "slow-dev")
    started = time.monotonic()
    assert client.status("slow-dev").status_code == 404
    assert time.monotonic() - started >= 1.0
    with pytest.raises(requests.exceptions.Timeout):
        emulator.set_faults([{"type": "slow", "seconds": 2.0, "count": 1, "endpoint": "status"}])
        requests.post(client.url("slow-dev"), json={}, headers=client.headers, verify=emulator.ca_cert, timeout=0.5)


def test_invalid_runtime_fault_rejected(clean_faults):
    response = requests.post(
        f"{clean_faults.url}/_emulator/faults",
        json={"type": "explode"},
        verify=clean_faults.ca_cert,
        timeout=10,
    )
    assert response.status_code == 400
    assert "type must be one of" in response.json()["message"]


def test_faults_from_config_and_rate_limit(pki, devices, tmp_path):
    extra = "faults:\n  - type: error\n    count: 1\n    endpoint: register\n"
    text = config_text(devices["individual"].leaf_file, devices["disabled"].leaf_file, extra=extra)
    text = text.replace("  retry_after: 1\n", "  retry_after: 1\n  rate_limit_per_minute: 2\n")
    config = pki.directory / "faulty.yml"
    config.write_text(text, encoding="utf-8")
    emulator = start_emulator(config, tmp_path / "state")
    try:
        client = sym_client(emulator, "quota-dev")
        assert client.register("quota-dev").status_code == 500  # the configured fault, once
        assert client.register("quota-dev").status_code == 202
        assert client.register("quota-dev").status_code == 202
        limited = client.register("quota-dev")
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert "quota" in limited.json()["message"]
    finally:
        emulator.stop()
