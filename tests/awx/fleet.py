"""What the AWX tests share: a simulated fleet inventory, running playbooks as job slices, the emulator's view.

A simulated device is a host with `ansible_connection: local` and its own directory tree (`device_root`; the roles'
path variables point into it), as in tests/reliability and bench/: the SSH fleet is exercised elsewhere
(test_execution_environment.py, tests/containers). `slices()` splits the hosts the way AWX job slicing does (slice
k of N gets hosts[k::N] of the sorted inventory).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509

from tests.support.paths import BIN, REPO_ROOT

ID_SCOPE = "0ne00AWX016"
HUB = "hub-awx.azure-devices.net"
RECAP_RE = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)\s+"
    r"failed=(?P<failed>\d+)",
    re.MULTILINE,
)


# The DPS service API's owner policy (connection string: connection_string(emulator)).
POLICY = "provisioningserviceowner"
POLICY_KEY = "YXd4LXNsaWNlcy1vd25lci1rZXktMDEyMzQ1Njc4OQ=="
# The enrollment group the fleet's devices match: the dps_enrollment role's default group id, so that a
# provision.yml which manages enrollment groups (issue 14) finds it and one that does not still has it.
GROUP = "fleet"


def emulator_config(ca_cert: Path, **defaults) -> dict:
    """A DPS with one verified X.509 enrollment group on `ca_cert`, the service API's owner policy, quick timings."""
    return {
        "id_scope": ID_SCOPE,
        "linked_hubs": [HUB],
        "shared_access_policies": [
            {
                "name": POLICY,
                "primary_key": POLICY_KEY,
                "rights": ["ServiceConfig", "EnrollmentRead", "EnrollmentWrite", "RegistrationStatusRead"],
            }
        ],
        "defaults": {"assignment_delay": 0.2, "retry_after": 1, "rate_limit_per_minute": 0, **defaults},
        "enrollment_groups": [{"name": GROUP, "attestation": "x509", "ca_cert": str(ca_cert), "verified": True}],
    }


def connection_string(emulator) -> str:
    return f"HostName={emulator.host}:{emulator.port};SharedAccessKeyName={POLICY};SharedAccessKey={POLICY_KEY}"


def ansible_env(config: Path, collections_path: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of an ansible-playbook run: no proxies (the emulator is local), the venv first on PATH."""
    env = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
    env = {key: value for key, value in env.items() if not key.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_CONFIG=str(config),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    if collections_path is not None:
        # Only this path: not the checkout's .collections, nor the collections of the `ansible` package.
        env.update(ANSIBLE_COLLECTIONS_PATH=str(collections_path), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="False")
    env.update(extra)
    return env


class SimulatedFleet:
    """An inventory of simulated devices (group `pis`) using the CA that playbooks/ca.yml made in `pki_dir`."""

    def __init__(self, work: Path, hosts: list[str], emulator, pki_dir: Path) -> None:
        self.work = work
        self.hosts = sorted(hosts)
        self.devices = work / "devices"
        self.devices.mkdir(parents=True, exist_ok=True)
        self.inventory = work / "inventory.yml"
        self.pki_dir = pki_dir
        self.host_vars: dict[str, dict] = {host: {} for host in self.hosts}
        # ca.yml (on localhost) makes the lab CA here; device_identity's controller copies go to pki_dir/issued.
        self.all_vars = {"pki_dir": str(pki_dir), "pki_key_type": "ec-p256"}
        self.group_vars = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "device_root": f"{self.devices}/{{{{ inventory_hostname }}}}",
            "device_identity_install_dependencies": False,
            "device_identity_cert_dir": "{{ device_root }}/var/aziot/certs",
            "device_identity_secrets_dir": "{{ device_root }}/var/aziot/secrets",
            # The CA ca.yml made; provision.yml's pki check looks for these files.
            "device_identity_ca_cert_path": str(pki_dir / "intermediate-ca.cert.pem"),
            "device_identity_ca_key_path": str(pki_dir / "intermediate-ca.key.pem"),
            "device_identity_root_cert_path": str(pki_dir / "root-ca.cert.pem"),
            # The registration id is the certificate CN (as inventory/example sets it).
            "dps_registration_registration_id": "{{ device_identity_registration_id | default(inventory_hostname) }}",
            "dps_registration_id_scope": ID_SCOPE,
            "dps_registration_timeout": 60,
            # Spelled out (not device_identity_*_path): fleet_status.yml runs dps_registration without device_identity.
            "dps_registration_client_cert": "{{ device_root }}/var/aziot/certs/device-id.full-chain.cert.pem",
            "dps_registration_client_key": "{{ device_root }}/var/aziot/secrets/device-id.key.pem",
            "dps_registration_server_ca_path": "{{ device_root }}/var/aziot/certs/dps-server-ca.pem",
        }
        if emulator is not None:
            self.use_emulator(emulator)

    def use_emulator(self, emulator) -> None:
        self.group_vars["dps_registration_provisioning_host"] = f"{emulator.host}:{emulator.port}"
        self.group_vars["dps_registration_server_ca_src"] = emulator.ca_cert
        # The DPS service API, for the enrollment groups (role dps_enrollment).
        self.all_vars["dps_enrollment_connection_string"] = connection_string(emulator)
        self.all_vars["dps_enrollment_ca_path"] = emulator.ca_cert

    def write(self, path: Path | None = None, hosts: list[str] | None = None) -> Path:
        """The inventory file (all hosts, or only `hosts`: a slice's own inventory, as AWX gives a slice job)."""
        path = path or self.inventory
        chosen = self.hosts if hosts is None else hosts
        data = {
            "all": {
                "vars": self.all_vars,
                "children": {
                    "pis": {"hosts": {host: self.host_vars[host] or None for host in chosen}, "vars": self.group_vars}
                },
            }
        }
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path

    def chain(self, host: str) -> list[x509.Certificate]:
        pem = (self.devices / host / "var/aziot/certs/device-id.full-chain.cert.pem").read_bytes()
        return x509.load_pem_x509_certificates(pem)


def slices(hosts: list[str], count: int) -> list[list[str]]:
    """AWX job slicing: slice k (0-based) of `count` runs hosts[k::count] of the sorted inventory."""
    ordered = sorted(hosts)
    return [ordered[index::count] for index in range(count)]


@dataclass
class Run:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    wall_s: float

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        tail = self.stdout[self.stdout.rfind("PLAY RECAP") :]
        return {
            match["host"]: {key: int(match[key]) for key in ("ok", "changed", "unreachable", "failed")}
            for match in RECAP_RE.finditer(tail)
        }

    def changed_hosts(self) -> set[str]:
        return {host for host, counts in self.recap.items() if counts["changed"]}

    def output(self) -> str:
        return f"$ {' '.join(self.argv[-6:])}\n{self.stdout[-6000:]}{self.stderr[-3000:]}"


def run_concurrently(
    commands: list[list[str]], env: dict[str, str], cwd: Path, timeout: float = 900, once_started=None
) -> list[Run]:
    """Start every command at once (as AWX starts a sliced job's slices), wait for all; the output of each.
    `once_started()` is called after all are started, before waiting for them."""
    logs = []
    started = time.monotonic()
    processes = []
    for argv in commands:
        out = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in the finally below
        err = tempfile.TemporaryFile("w+")  # noqa: SIM115
        logs.append((out, err))
        processes.append(subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err, text=True))
    runs = []
    try:
        if once_started is not None:
            once_started()
        for argv, process, (out, err) in zip(commands, processes, logs, strict=True):
            remaining = max(1.0, timeout - (time.monotonic() - started))
            process.wait(timeout=remaining)
            wall = time.monotonic() - started
            out.seek(0)
            err.seek(0)
            runs.append(Run(argv, process.returncode, out.read(), err.read(), round(wall, 1)))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for out, err in logs:
            out.close()
            err.close()
    return runs


def run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 900) -> Run:
    return run_concurrently([argv], env, cwd, timeout)[0]


def files_digest(directory: Path) -> dict[str, str]:
    """name -> sha256 of every file directly in `directory` (the CA files of a pki_dir, not its issued/ copies)."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
        if path.is_file()
    }


def registered(emulator, prefix: str) -> dict[str, dict]:
    """The emulator's IoT Hub device list (devices whose id starts with `prefix`), by device id."""
    return {device["deviceId"]: device for device in emulator.devices() if device["deviceId"].startswith(prefix)}


PROVISION = REPO_ROOT / "playbooks" / "provision.yml"
CA = REPO_ROOT / "playbooks" / "ca.yml"
VALIDATE = REPO_ROOT / "playbooks" / "validate.yml"
