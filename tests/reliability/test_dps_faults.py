"""Fault matrix, DPS side: iotfleet.aziot.dps_register through ansible-playbook against the emulator's faults.

Already proven in tests/integration/test_dps_register_emulator.py (not repeated here, listed in docs/reliability.md):
a 429 storm with Retry-After that the retries absorb, a connection dropped while polling the operation, a disabled
enrollment and a leaf-only chain.

Here, one playbook runs every fault case (each on its own registration id, faults filtered by registration id), then
the faults are cleared and the inputs fixed, and the module runs again twice for every device: the first run
converges (assigned), the second changes nothing, and the emulator's device list shows each device registered once.
"""

from __future__ import annotations

import base64

from matrix_helpers import GROUP_KEY, HUB, connection, registered_devices

from tests.support.modules import run_module
from tests.support.pki import DAY, Device, Pki
from tests.support.playbook import run_playbook

WRONG_KEY = base64.b64encode(b"not-the-key-of-this-enrollment!!").decode()


def register_task(name: str, register: str, registration_id: str, **args) -> dict:
    module_args = {
        "id_scope": "{{ id_scope }}",
        "registration_id": registration_id,
        "provisioning_host": "{{ provisioning_host }}",
        "ca_path": "{{ ca_path }}",
        "timeout": 20,
        **args,
    }
    return {"name": name, "iotfleet.aziot.dps_register": module_args, "register": register, "failed_when": False}


def x509(device: Device) -> dict:
    return {"client_cert": device.chain_file, "client_key": device.key_file}


def one_line(message: str) -> bool:
    return bool(message) and "\n" not in message and "Traceback" not in message


def test_dps_fault_matrix(emulator, pki: Pki, tmp_path) -> None:
    other = Pki(tmp_path / "unknown-ca", label="Unknown")
    devices = {name: pki.device(name) for name in ("rel-storm", "rel-5xx", "rel-5xx-storm", "rel-drop", "rel-slow")}
    bad_inputs = {
        "rel-cn": pki.device("rel-cn", cn="someone-else"),
        "rel-unknown-ca": other.device("rel-unknown-ca"),
        "rel-expired": pki.device("rel-expired", not_before=-3 * DAY, not_after=-DAY),
        "rel-future": pki.device("rel-future", not_before=DAY, not_after=3 * DAY),
    }
    emulator.set_faults(
        [
            {"type": "throttle", "retry_after": 1, "registration_id": "rel-storm"},  # a storm longer than timeout
            {"type": "error", "status": 500, "count": 2, "registration_id": "rel-5xx"},  # two 500s, then fine
            {"type": "error", "status": 503, "registration_id": "rel-5xx-storm"},  # 503 until the fault is cleared
            {"type": "drop", "count": 1, "endpoint": "register", "registration_id": "rel-drop"},  # reset, no answer
            {"type": "slow", "seconds": 8, "registration_id": "rel-slow"},  # slower than request_timeout/timeout
            {"type": "slow", "seconds": 2.5, "endpoint": "status", "registration_id": "rel-sas-expired"},
        ]
    )
    fast = {"timeout": 6, "request_timeout": 3}
    tasks = [
        register_task("429 storm", "storm", "rel-storm", **x509(devices["rel-storm"]), **fast),
        register_task("Two 500s", "five_hundred", "rel-5xx", **x509(devices["rel-5xx"])),
        register_task("503 storm", "five_hundred_storm", "rel-5xx-storm", **x509(devices["rel-5xx-storm"]), **fast),
        register_task("Reset on register", "drop", "rel-drop", **x509(devices["rel-drop"])),
        register_task("Slower than the timeout", "slow", "rel-slow", **x509(devices["rel-slow"]), **fast),
        register_task("CN is not the registration id", "cn", "rel-cn", **x509(bad_inputs["rel-cn"])),
        register_task("Unknown CA", "unknown_ca", "rel-unknown-ca", **x509(bad_inputs["rel-unknown-ca"])),
        register_task("Expired device certificate", "expired", "rel-expired", **x509(bad_inputs["rel-expired"])),
        register_task("Not yet valid device certificate", "future", "rel-future", **x509(bad_inputs["rel-future"])),
        register_task(
            "Wrong symmetric key", "wrong_key", "rel-wrong-key", attestation="symmetric_key", symmetric_key=WRONG_KEY
        ),
        register_task(
            "SAS token expired on the way",
            "sas_expired",
            "rel-sas-expired",
            attestation="symmetric_key",
            group_key="{{ group_key }}",
            sas_ttl=1,
        ),
    ]
    variables = dict(connection(emulator), group_key=GROUP_KEY)
    try:
        run = run_playbook(tmp_path, tasks, variables, name="faults")
    finally:
        emulator.clear_faults()
    results = run.results
    assert results, run.output()

    # Recoverable: retried inside the deadline, assigned.
    assert results["five_hundred"]["status"] == "assigned" and results["five_hundred"]["retried_requests"] == 2, results
    assert results["drop"]["status"] == "assigned" and results["drop"]["retried_requests"] == 1, results["drop"]

    expected = {  # result -> (registration id, words the one-line message must hold)
        "storm": ("rel-storm", ["DPS did not finish within timeout=6s", "HTTP 429", "raise timeout"]),
        "five_hundred_storm": ("rel-5xx-storm", ["DPS did not finish within timeout=6s", "HTTP 503"]),
        "slow": ("rel-slow", ["DPS did not finish within timeout=6s", "timed out"]),
        "cn": ("rel-cn", ["does not match certificate CN 'someone-else'", "DPS requires them to be equal"]),
        "unknown_ca": ("rel-unknown-ca", ["DPS refused the certificate", "verified CA"]),
        "expired": ("rel-expired", ["expired", "renew the device certificate"]),
        "future": ("rel-future", ["not valid before", "check the device clock", "renew the device certificate"]),
        "wrong_key": ("rel-wrong-key", ["DPS refused the SAS token", "check symmetric_key/group_key"]),
        "sas_expired": ("rel-sas-expired", ["DPS refused the SAS token", "expired", "device clock"]),
    }
    for name, (registration_id, words) in expected.items():
        result = results[name]
        message = result.get("msg", "")
        assert result.get("failed_when_result") is False and message, (name, result)
        assert one_line(message), (name, message)
        assert registration_id in message.split(":")[0] or f"'{registration_id}'" in message, (name, message)
        for word in words:
            assert word in message, (name, word, message)

    assigned = registered_devices(emulator)
    for name in ("rel-cn", "rel-unknown-ca", "rel-expired", "rel-future", "rel-wrong-key", "rel-sas-expired"):
        assert name not in assigned, name  # refused: nothing registered
    for name in ("rel-storm", "rel-5xx-storm"):
        assert name not in assigned, name  # the faults answered every register before it reached DPS

    # Faults cleared, inputs fixed: every device converges (changed, then unchanged), each registered once.
    bad_symmetric = ("rel-wrong-key", "rel-sas-expired")
    fixed = dict(devices)
    fixed.update({name: pki.device(name) for name in bad_inputs})
    # The re-runs call the module directly (its own process, see tests/support/modules.py): the same code, without
    # the ansible-playbook start-up for each of the 26 runs.
    common = {key: variables[key] for key in ("id_scope", "provisioning_host", "ca_path")}
    symmetric = {"attestation": "symmetric_key", "group_key": GROUP_KEY}
    runs = {name: dict(common, registration_id=name, timeout=20, **x509(files)) for name, files in fixed.items()}
    runs.update({name: dict(common, registration_id=name, timeout=20, **symmetric) for name in bad_symmetric})
    rerun = {}
    for name, args in runs.items():
        for attempt in (1, 2):
            module_run = run_module("dps_register", args, tmp_path / "rerun" / name, isolated=True)
            assert module_run.result is not None, module_run.output()
            rerun[f"{name}_{attempt}"] = module_run.result
    assigned = registered_devices(emulator)
    for name in runs:
        first, second = (rerun[f"{name}_{attempt}"] for attempt in (1, 2))
        assert first["status"] == "assigned" and second["status"] == "assigned", (name, first, second)
        assert first["assigned_hub"] == HUB
        already = name in ("rel-5xx", "rel-drop")  # assigned during the fault phase
        assert first["changed"] is not already, (name, first)
        assert second["changed"] is False, (name, second)
        assert assigned[name]["registrationCount"] == 1, (name, assigned[name])
