"""Fault matrix, fleet level: playbooks/provision.yml (the roles) over a simulated fleet, and DPS under load.

Devices are simulated on the controller, as in bench/: `ansible_connection: local`, one directory tree per device
(the roles' path variables point into it), and a per-device Python wrapper as the device interpreter, so a test
can tell which device ran something. The DPS side is the session emulator of matrix_helpers (X.509 group on the
test root CA, a symmetric-key group).

- one unreachable and one failing device among many: the others finish, the recap names the two, the re-run
  changes only them, the run after changes nothing; nobody registered twice;
- 150 devices registering at once (forks=150) with random faults injected per device: all assigned, none
  registered twice, the re-run changes nothing;
- the whole provisioning (roles) at -vvv: no private key, symmetric key or SAS signature in the output or in any
  file outside its place; the CA key opened by the controller only, never by a device; keys 0600;
- inventory mistakes: caught by the validation before any device is touched (no device interpreter ever started),
  one message naming the host and the variable.
"""

from __future__ import annotations

import json
import os
import random
import socket
import stat
import time
from pathlib import Path

import pytest
import yaml
from matrix_helpers import (
    AUDIT_HOOK,
    GROUP_KEY,
    HUB,
    ID_SCOPE,
    assert_no_secret,
    derived_key,
    device_interpreter,
    output_and_files,
    pem_body_lines,
    registered_devices,
    sas_signatures,
)

from tests.support.paths import BIN, REPO_ROOT
from tests.support.pki import Pki
from tests.support.playbook import PlaybookRun, clean_env, run_playbook

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the roles give device files to root (run as root)")

PROVISION = REPO_ROOT / "playbooks" / "provision.yml"


def closed_port() -> int:
    """A local TCP port nobody listens on (an ssh to it is refused at once: the device is 'off')."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Fleet:
    """An inventory of simulated devices (group `pis`) wired to the session PKI and emulator."""

    def __init__(self, work: Path, pki: Pki, emulator, hosts: list[str]) -> None:
        self.work = work
        self.devices = work / "devices"
        self.devices.mkdir(parents=True, exist_ok=True)
        self.inventory = work / "inventory.yml"
        self.hosts: dict[str, dict] = {host: {} for host in hosts}
        self.group_vars = {
            "ansible_connection": "local",
            "device_root": f"{self.devices}/{{{{ inventory_hostname }}}}",
            "device_identity_install_dependencies": False,
            "device_identity_cert_dir": "{{ device_root }}/var/aziot/certs",
            "device_identity_secrets_dir": "{{ device_root }}/var/aziot/secrets",
            "device_identity_ca_cert_path": str(pki.intermediate_path),
            "device_identity_ca_key_path": str(pki.intermediate_key_path),
            "device_identity_root_cert_path": str(pki.root_path),
            "pki_create": False,
            "pki_root_cert_path": str(pki.root_path),
            "pki_ca_cert_path": str(pki.intermediate_path),
            "pki_ca_key_path": str(pki.intermediate_key_path),
            "dps_registration_id_scope": ID_SCOPE,
            "dps_registration_provisioning_host": f"{emulator.host}:{emulator.port}",
            "dps_registration_server_ca_src": emulator.ca_cert,
            "dps_registration_server_ca_path": "{{ device_root }}/var/aziot/certs/dps-server-ca.pem",
            "dps_registration_client_cert": "{{ device_identity_full_chain_path }}",
            "dps_registration_client_key": "{{ device_identity_key_path }}",
            "dps_registration_timeout": 30,
            # The session emulator's enrollment groups come from its configuration, not from provision.yml.
            "provision_dps_enrollments": False,
        }
        self.open_logs = work / "open-logs"
        self.open_logs.mkdir(exist_ok=True)

    def interpreter(self, host: str) -> str:
        """The device's Python: logs every file it opens to open-logs/<host>.log (hooks/audit)."""
        wrapper_dir = self.work / "interpreters" / host
        wrapper_dir.mkdir(parents=True, exist_ok=True)
        return device_interpreter(wrapper_dir, self.open_logs / f"{host}.log")

    def touched(self) -> list[str]:
        """The devices whose interpreter ran at least once."""
        return sorted(path.stem for path in self.open_logs.glob("*.log"))

    def write(self) -> None:
        hosts = {
            host: dict({"ansible_python_interpreter": self.interpreter(host)}, **extra)
            for host, extra in self.hosts.items()
        }
        inventory = {"pis": {"hosts": hosts, "vars": self.group_vars}}
        self.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False), encoding="utf-8")

    def provision(self, verbosity: int = 0, forks: int = 10, env: dict | None = None) -> PlaybookRun:
        self.write()
        return run_playbook(
            self.work, PROVISION, inventory=self.inventory, forks=forks, verbosity=verbosity, env=env, name="provision"
        )


def changed_hosts(run: PlaybookRun) -> set[str]:
    return {host for host, counts in run.recap.items() if counts["changed"]}


def fleet_devices(emulator, prefix: str) -> dict[str, dict]:
    return {rid: device for rid, device in registered_devices(emulator).items() if rid.startswith(prefix)}


def test_unreachable_and_failing_devices_among_many(emulator, pki: Pki, tmp_path: Path) -> None:
    hosts = [f"fl-dev-{index:02d}" for index in range(1, 9)]
    offline, failing = "fl-dev-03", "fl-dev-06"
    fleet = Fleet(tmp_path, pki, emulator, hosts)
    # The offline device: ssh to a port nobody listens on. The failing one: DPS answers it 503 until the fault is
    # cleared, and its timeout is short.
    fleet.hosts[offline] = {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": closed_port()}
    fleet.hosts[failing] = {"dps_registration_timeout": 5}
    emulator.set_faults([{"type": "error", "status": 503, "registration_id": failing}])
    try:
        first = fleet.provision()
    finally:
        emulator.clear_faults()

    assert first.returncode != 0, first.output()
    assert set(hosts) <= set(first.recap), first.recap
    # The offline device stops in the connection check (playbooks/tasks/check_connection.yml), one line with the fix.
    assert first.recap[offline]["failed"] == 1, first.recap
    port = fleet.hosts[offline]["ansible_port"]
    assert f'"msg": "{offline}: nothing answers SSH at 127.0.0.1:{port} (connection refused)' in first.stdout
    assert first.recap[failing]["failed"] == 1, first.recap
    healthy = [host for host in hosts if host not in (offline, failing)]
    for host in healthy:
        assert first.recap[host]["failed"] == 0 and first.recap[host]["unreachable"] == 0, first.recap
        assert first.recap[host]["changed"] > 0, first.recap
    # One line that names the device and the fix.
    error = [line for line in first.stdout.splitlines() if f"{failing}: DPS did not finish within timeout=5s" in line]
    assert error and "run again later or raise timeout" in error[0] and "HTTP 503" in error[0], first.output()
    assert not (fleet.devices / offline).exists()  # never touched
    # The failing device got its key, certificate and chain (whole files, 0600 key) before DPS failed it.
    key = fleet.devices / failing / "var/aziot/secrets/device-id.key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.read_text().endswith("-----END PRIVATE KEY-----\n")
    devices = fleet_devices(emulator, "fl-dev-")
    assert sorted(devices) == healthy, sorted(devices)

    # The device is back online, DPS is healthy again: the re-run changes exactly the two.
    fleet.hosts[offline] = {}
    second = fleet.provision()
    assert second.returncode == 0, second.output()
    assert changed_hosts(second) == {offline, failing}, second.recap
    third = fleet.provision()
    assert third.returncode == 0 and not changed_hosts(third), third.recap
    devices = fleet_devices(emulator, "fl-dev-")
    assert sorted(devices) == hosts, sorted(devices)
    for host, device in devices.items():
        assert device["registrationCount"] == 1 and device["assignedHub"] == HUB, (host, device)


def random_faults(rng: random.Random, registration_ids: list[str]) -> tuple[list[dict], dict[str, str]]:
    """A fault (or none) for each device, drawn from what a throttled, flaky DPS does."""
    faults, drawn = [], {}
    for registration_id in registration_ids:
        kind = rng.choice(["none", "none", "throttle", "error", "drop", "slow"])
        drawn[registration_id] = kind
        if kind == "none":
            continue
        fault = {"type": kind, "registration_id": registration_id, "endpoint": rng.choice(FAULT_ENDPOINTS)}
        if kind == "throttle":
            fault.update(count=rng.randint(1, 3), retry_after=1)
        elif kind == "error":
            fault.update(count=rng.randint(1, 2), status=rng.choice([500, 503]))
        elif kind == "drop":
            fault.update(count=1)
        else:
            fault.update(count=1, seconds=round(rng.uniform(0.5, 2.0), 1))
        faults.append(fault)
    # And a burst for everybody: the first 40 requests of the fleet are throttled.
    faults.append({"type": "throttle", "count": 40, "retry_after": 1})
    return faults, drawn


FAULT_ENDPOINTS = ("register", "operation", "status")


def test_150_devices_register_at_once_with_random_faults(emulator, pki: Pki, tmp_path: Path) -> None:
    """150 devices, forks=150, one dps_register task each (half X.509 group, half symmetric-key group)."""
    seed = int(os.environ.get("RELIABILITY_SEED", "150"))
    rng = random.Random(seed)
    hosts = [f"fl-load-{index:03d}" for index in range(150)]
    x509 = {host: pki.device(host) for host in hosts[::2]}
    inventory = {
        "fleet": {
            "hosts": {
                host: (
                    {"client_cert": x509[host].chain_file, "client_key": x509[host].key_file}
                    if host in x509
                    else {"device_key": derived_key(GROUP_KEY, host)}
                )
                for host in hosts
            },
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": str(BIN / "python")},
        }
    }
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory), encoding="utf-8")
    register = {
        "id_scope": ID_SCOPE,
        "provisioning_host": f"{emulator.host}:{emulator.port}",
        "registration_id": "{{ inventory_hostname }}",
        "ca_path": emulator.ca_cert,
        "timeout": 90,
        "request_timeout": 10,
        "attestation": "{{ 'x509' if client_cert is defined else 'symmetric_key' }}",
        "client_cert": "{{ client_cert | default(omit) }}",
        "client_key": "{{ client_key | default(omit) }}",
        "symmetric_key": "{{ device_key | default(omit) }}",
    }
    playbook = [
        {
            "name": "150 devices register at once",
            "hosts": "fleet",
            "gather_facts": False,
            "tasks": [
                {"name": "Register", "iotfleet.aziot.dps_register": register, "register": "reg", "no_log": True},
                {
                    "name": "Keep what the device saw",
                    "ansible.builtin.set_fact": {
                        "outcome": "{{ {'status': reg.status | default(''), 'changed': reg.changed,"
                        " 'retries': reg.retried_requests | default(0), 'msg': reg.msg | default('')} }}"
                    },
                },
                {
                    "name": "Write the outcomes for the test",
                    "ansible.builtin.copy": {
                        "content": "{{ dict(ansible_play_hosts_all | zip(ansible_play_hosts_all"
                        " | map('extract', hostvars, 'outcome'))) | to_json }}",
                        "dest": str(tmp_path / "{{ outcome_file }}"),
                        "mode": "0600",
                    },
                    "run_once": True,
                    "delegate_to": "localhost",
                    "changed_when": False,  # test plumbing: the recap counts only the devices' own changes
                },
            ],
        }
    ]
    (tmp_path / "register.yml").write_text(yaml.safe_dump(playbook, sort_keys=False), encoding="utf-8")

    def run(outcome_file: str) -> tuple[PlaybookRun, dict]:
        played = run_playbook(
            tmp_path,
            tmp_path / "register.yml",
            {"outcome_file": outcome_file},
            inventory=tmp_path / "inventory.yml",
            forks=150,
            name=outcome_file,
        )
        path = tmp_path / outcome_file
        return played, (json.loads(path.read_text()) if path.exists() else {})

    faults, drawn = random_faults(rng, hosts)
    emulator.set_faults(faults)
    started = time.monotonic()
    try:
        first, outcomes = run("first.json")
    finally:
        emulator.clear_faults()
    elapsed = time.monotonic() - started
    assert first.returncode == 0, f"seed={seed}\n{first.output()}"
    assert sorted(outcomes) == hosts
    for host, outcome in outcomes.items():
        assert outcome["status"] == "assigned" and outcome["changed"], (seed, host, drawn[host], outcome)
    assert sum(outcome["retries"] for outcome in outcomes.values()) >= 40  # the faults really hit
    devices = fleet_devices(emulator, "fl-load-")
    assert sorted(devices) == hosts
    twice = {host: device["registrationCount"] for host, device in devices.items() if device["registrationCount"] != 1}
    assert not twice, f"seed={seed}: registered more than once: {twice}"
    assert {device["attestation"] for host, device in devices.items() if host in x509} == {"x509"}
    print(f"150 devices with random faults (seed {seed}): {elapsed:.0f} s, {dict(sorted(_count(drawn).items()))}")

    second, outcomes = run("second.json")
    assert second.returncode == 0 and not changed_hosts(second), second.output()
    assert all(outcome["status"] == "assigned" and not outcome["changed"] for outcome in outcomes.values())
    assert all(device["registrationCount"] == 1 for device in fleet_devices(emulator, "fl-load-").values())


def _count(drawn: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for kind in drawn.values():
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def test_whole_provisioning_at_vvv_leaks_nothing_and_ca_key_stays_home(emulator, pki: Pki, tmp_path: Path) -> None:
    """provision.yml (pki, device_identity, dps_registration) at -vvv: two X.509 devices, one symmetric-key one."""
    hosts = ["fl-sec-01", "fl-sec-02", "fl-sec-sym"]
    fleet = Fleet(tmp_path, pki, emulator, hosts)
    fleet.hosts["fl-sec-sym"] = {
        "dps_registration_attestation": "symmetric_key",
        "dps_registration_group_key": GROUP_KEY,
    }
    controller_log = tmp_path / "controller-open.log"
    started = time.time()
    env = clean_env(PYTHONPATH=str(AUDIT_HOOK), RELIABILITY_OPEN_LOG=str(controller_log))
    run = fleet.provision(verbosity=3, env=env)
    finished = time.time()
    assert run.returncode == 0, run.output()
    assert sorted(fleet_devices(emulator, "fl-sec-")) == hosts
    assert "<fl-sec-01> EXEC" in run.stdout and "ESTABLISH LOCAL CONNECTION" in run.stdout  # -vvv really ran

    keys = {host: fleet.devices / host / "var/aziot/secrets/device-id.key.pem" for host in hosts}
    for key in keys.values():
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
        assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700, key.parent
    device_key = derived_key(GROUP_KEY, "fl-sec-sym")
    secrets = {f"{host} private key": pem_body_lines(key.read_bytes()) for host, key in keys.items()}
    secrets.update(
        {
            "CA private key": pem_body_lines(pki.intermediate_key_path.read_bytes()),
            "group key": [GROUP_KEY],
            "derived device key": [device_key],
            "SAS signature": sas_signatures(
                device_key, "fl-sec-sym", range(int(started) + 3600 - 1, int(finished) + 3600 + 2)
            ),
        }
    )
    intended = {*keys.values(), fleet.inventory}  # the inventory holds the group key, as a vault file would
    haystacks = output_and_files(run.stdout, run.stderr, tmp_path, intended, started)
    assert any(where.endswith("device-id.full-chain.cert.pem") for where in haystacks)
    assert_no_secret(secrets, haystacks)

    # Which process opened the CA key: the controller (it signs), never a device's interpreter.
    ca_key = os.path.realpath(pki.intermediate_key_path)
    assert any(line.endswith(" " + ca_key) for line in controller_log.read_text().splitlines())
    assert fleet.touched() == hosts
    for host in hosts:
        opened = (fleet.open_logs / f"{host}.log").read_text().splitlines()
        assert any(line.endswith(" " + str(keys[host])) for line in opened), host  # the hook ran on the device
        assert not [line for line in opened if pki.intermediate_key_path.name in line], host
        others = [str(keys[other]) for other in hosts if other != host]
        assert not [line for line in opened if any(line.endswith(" " + other) for other in others)], host


INVENTORY_MISTAKES = {
    # case: (host vars of fl-inv-02 / fl-inv-03, what the one-line message must say)
    "missing id_scope": (
        {"fl-inv-02": {"dps_registration_id_scope": ""}},
        "fl-inv-02: dps_registration_id_scope is missing or empty",
    ),
    "registration id with a space": (
        {"fl-inv-02": {"device_identity_registration_id": "fl inv 02"}},
        'fl-inv-02: device_identity_registration_id "fl inv 02" is not a valid DPS registration id',
    ),
    "duplicate registration ids": (
        {"fl-inv-03": {"device_identity_registration_id": "fl-inv-01"}},
        'hosts fl-inv-01, fl-inv-03: registration id "fl-inv-01" is used more than once',
    ),
    "wrong key type name": (
        {"fl-inv-02": {"device_identity_key_type": "ec-256"}},
        "fl-inv-02: value of device_identity_key_type must be one of: ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096, "
        "got: ec-256 (role device_identity)",
    ),
}


@pytest.mark.parametrize("case", sorted(INVENTORY_MISTAKES))
def test_inventory_mistakes_are_caught_before_any_device_is_touched(
    case: str, emulator, pki: Pki, tmp_path: Path
) -> None:
    host_vars, expected = INVENTORY_MISTAKES[case]
    hosts = ["fl-inv-01", "fl-inv-02", "fl-inv-03"]
    fleet = Fleet(tmp_path, pki, emulator, hosts)
    fleet.group_vars["dps_registration_registration_id"] = "{{ device_identity_registration_id }}"
    fleet.hosts.update(host_vars)
    before = fleet_devices(emulator, "fl-inv-")  # the cases share the emulator
    run = fleet.provision()
    assert run.returncode != 0, run.output()
    lines = [line for line in run.stdout.splitlines() if expected in line]
    assert lines and "inventory problems - " in lines[0], run.output()
    assert fleet.touched() == [] and not any(fleet.devices.iterdir()), fleet.touched()  # no device was touched
    assert fleet_devices(emulator, "fl-inv-") == before
    # Fixed, the same inventory provisions (the hosts of the case above are valid otherwise).
    fleet.hosts = {host: {} for host in hosts}
    assert fleet.provision().returncode == 0
