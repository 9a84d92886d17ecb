"""A simulated fleet for playbook tests: the repository's playbooks on devices that live on the controller.

Each device is a directory tree under `work/devices/<host>` reached with the local connection (the roles' path
variables point into it), in cohorts - child groups of `pis`, each its own DPS enrollment group with its own
intermediate CA and tags, as in inventory/example. The lab CA is the collection's own (playbooks/ca.yml), in
`work/pki`, and a DPS emulator serves both APIs (the device API for registrations, the service API for the
enrollment groups provision.yml makes).

    fleet = SimulatedFleet(work, {"plant-a": ["pa-01", "pa-02"], "plant-b": ["pb-01"]})
    fleet.make_ca()                                             # playbooks/ca.yml: root + one CA per cohort
    fleet.use_emulator(dps_emulator_factory(fleet.emulator_config()))
    run = fleet.playbook("provision.yml")                       # a PlaybookRun: .returncode, .recap, .output()
    run = fleet.playbook("renew.yml", "-l", "plant-a", extra_vars={"renew_within_days": 30})
    fleet.register("pa-01")                                     # one registration attempt, as the device makes it
    fleet.service("dps_enrollment_info", kind="enrollment")      # a DPS service API module, on the controller

`cohort_vars`, `host_vars` and `all_vars` are the inventory's variables: change them, the next run writes the
inventory again. Runs as root (the roles give device files to root).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.modules import run_module
from tests.support.paths import BIN, REPO_ROOT
from tests.support.playbook import PlaybookRun, clean_env

PLAYBOOKS = REPO_ROOT / "playbooks"
POLICY = "provisioningserviceowner"
POLICY_KEY = base64.b64encode(b"simulated-fleet-service-policy-k").decode()
ROOT_CERTIFICATE = "fleet-lab-root"


class SimulatedFleet:
    def __init__(
        self,
        work: Path,
        cohorts: dict[str, list[str]],
        *,
        id_scope: str = "0ne00SIMFLT",
        hub: str = "hub-simulated.azure-devices.net",
    ) -> None:
        self.work = work
        self.id_scope = id_scope
        self.hub = hub
        self.devices = work / "devices"
        self.devices.mkdir(parents=True, exist_ok=True)
        self.pki_dir = work / "pki"
        self.inventory = work / "inventory.yml"
        self.cohorts = {cohort: list(hosts) for cohort, hosts in cohorts.items()}
        self.emulator = None
        self.runs = 0
        self.all_vars: dict = {
            "pki_dir": str(self.pki_dir),
            "pki_key_type": "ec-p256",
            "pki_intermediates": sorted(self.cohorts),
            "pki_root_cert_path": "{{ pki_dir }}/root-ca.cert.pem",
            # The CA of a device's enrollment group, as inventory/example derives it.
            "pki_ca_cert_path": "{{ pki_dir }}/{{ dps_enrollment_group }}-ca.cert.pem",
            "pki_ca_key_path": "{{ pki_dir }}/{{ dps_enrollment_group }}-ca.key.pem",
        }
        self.group_vars: dict = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "device_root": f"{self.devices}/{{{{ inventory_hostname }}}}",
            "device_identity_install_dependencies": False,
            "device_identity_cert_dir": "{{ device_root }}/var/aziot/certs",
            "device_identity_secrets_dir": "{{ device_root }}/var/aziot/secrets",
            "device_identity_ca_cert_path": "{{ pki_ca_cert_path }}",
            "device_identity_ca_key_path": "{{ pki_ca_key_path }}",
            "device_identity_root_cert_path": "{{ pki_root_cert_path }}",
            "dps_registration_registration_id": "{{ device_identity_registration_id | default(inventory_hostname) }}",
            "dps_registration_id_scope": id_scope,
            "dps_registration_timeout": 60,
            "dps_registration_client_cert": "{{ device_root }}/var/aziot/certs/device-id.full-chain.cert.pem",
            "dps_registration_client_key": "{{ device_root }}/var/aziot/secrets/device-id.key.pem",
            "dps_registration_server_ca_path": "{{ device_root }}/var/aziot/certs/dps-server-ca.pem",
        }
        # Each cohort: its DPS enrollment group (= its name) and a site tag for its enrollment group's initialTwin.
        self.cohort_vars: dict[str, dict] = {
            cohort: {"dps_enrollment_group": cohort, "site": cohort} for cohort in self.cohorts
        }
        self.host_vars: dict[str, dict] = {host: {} for hosts in self.cohorts.values() for host in hosts}

    # --- inventory and runs -------------------------------------------------------------------------------------
    @property
    def hosts(self) -> list[str]:
        return sorted(self.host_vars)

    def write(self) -> Path:
        children = {
            cohort: {"hosts": {host: self.host_vars[host] or None for host in hosts}, "vars": self.cohort_vars[cohort]}
            for cohort, hosts in self.cohorts.items()
        }
        data = {"all": {"vars": self.all_vars, "children": {"pis": {"vars": self.group_vars, "children": children}}}}
        self.inventory.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return self.inventory

    def playbook(
        self, name: str | Path, *args: str, extra_vars: dict | None = None, forks: int = 10, timeout: int = 600
    ) -> PlaybookRun:
        """ansible-playbook playbooks/<name> (or a playbook file) on the fleet's inventory (args: -l HOST, --check)."""
        self.write()
        self.runs += 1
        command = [str(BIN / "ansible-playbook"), "-i", str(self.inventory), "-f", str(forks)]
        if extra_vars:
            vars_path = self.work / f"run-{self.runs}.vars.json"
            vars_path.write_text(json.dumps(extra_vars), encoding="utf-8")
            command += ["-e", f"@{vars_path}"]
        command += [*args, str(name if isinstance(name, Path) else PLAYBOOKS / name)]
        process = subprocess.run(
            command, cwd=REPO_ROOT, env=clean_env(), capture_output=True, text=True, timeout=timeout, check=False
        )
        return PlaybookRun(process, {})

    def make_ca(self) -> None:
        """The lab CA with playbooks/ca.yml: a root and one intermediate per cohort (pki_intermediates)."""
        run = self.playbook("ca.yml")
        assert run.returncode == 0, run.output()

    # --- the emulator -------------------------------------------------------------------------------------------
    def emulator_config(self) -> dict:
        """One hub, the lab root uploaded and verified, a service policy: the enrollment groups come from
        provision.yml (role dps_enrollment) through the service API."""
        return {
            "id_scope": self.id_scope,
            "linked_hubs": [self.hub],
            "defaults": {"assignment_delay": 0.1, "retry_after": 1},
            "shared_access_policies": [
                {
                    "name": POLICY,
                    "primary_key": POLICY_KEY,
                    "rights": [
                        "EnrollmentRead",
                        "EnrollmentWrite",
                        "RegistrationStatusRead",
                        "RegistrationStatusWrite",
                    ],
                }
            ],
            "certificates": [
                {"name": ROOT_CERTIFICATE, "certificate": str(self.pki_dir / "root-ca.cert.pem"), "verified": True}
            ],
        }

    def use_emulator(self, emulator) -> None:
        self.emulator = emulator
        self.group_vars["dps_registration_provisioning_host"] = f"{emulator.host}:{emulator.port}"
        self.group_vars["dps_registration_server_ca_src"] = emulator.ca_cert
        self.all_vars["dps_enrollment_connection_string"] = self.connection_string
        self.all_vars["dps_enrollment_ca_path"] = emulator.ca_cert

    @property
    def connection_string(self) -> str:
        return (
            f"HostName={self.emulator.host}:{self.emulator.port};SharedAccessKeyName={POLICY};"
            f"SharedAccessKey={POLICY_KEY}"
        )

    def service(self, module: str, **args) -> dict:
        """One of the collection's DPS service API modules (dps_enrollment, dps_enrollment_info, ...) run on the
        controller with the fleet's connection string: its result."""
        base = {"connection_string": self.connection_string, "ca_path": self.emulator.ca_cert, "timeout": 30}
        run = run_module(module, dict(base, **args))
        assert run.result is not None and not run.failed, run.output()
        return run.result

    def hub_devices(self) -> dict[str, dict]:
        """The emulator's IoT Hub device list of this fleet, by device id."""
        devices = self.emulator.devices()
        return {device["deviceId"]: device for device in devices if device["deviceId"] in self.host_vars}

    # --- devices ------------------------------------------------------------------------------------------------
    def files(self, host: str) -> dict[str, Path]:
        """The device's identity files (key, leaf certificate, full chain) and the controller's copy."""
        root = self.devices / host / "var" / "aziot"
        return {
            "key": root / "secrets" / "device-id.key.pem",
            "cert": root / "certs" / "device-id.cert.pem",
            "chain": root / "certs" / "device-id.full-chain.cert.pem",
            "copy": self.pki_dir / "issued" / f"{host}.cert.pem",
        }

    def keep_old_identity(self, host: str, where: Path) -> dict[str, Path]:
        """Copy the device's key and chain aside (the old hardware, for a later registration attempt)."""
        where.mkdir(parents=True, exist_ok=True)
        kept = {}
        for name in ("key", "cert", "chain"):
            kept[name] = where / f"{host}.{name}.pem"
            shutil.copy2(self.files(host)[name], kept[name])
        return kept

    def new_hardware(self, host: str) -> None:
        """The device is replaced: a blank device answers at its address (nothing of the old one on it)."""
        shutil.rmtree(self.devices / host)
        (self.devices / host).mkdir()

    def register(self, host: str, chain: Path | None = None, key: Path | None = None) -> dict:
        """One registration attempt with DPS, as the device makes it (its full chain and key, or the given ones):
        the dps_register module's result (`failed` and `msg` when DPS refused it)."""
        files = self.files(host)
        args = {
            "id_scope": self.id_scope,
            "provisioning_host": f"{self.emulator.host}:{self.emulator.port}",
            "registration_id": host,
            "attestation": "x509",
            "client_cert": str(chain or files["chain"]),
            "client_key": str(key or files["key"]),
            "ca_path": self.emulator.ca_cert,
            "force": True,
            "timeout": 30,
        }
        result = run_module("dps_register", args).result
        assert result is not None, f"{host}: dps_register printed no result"
        return result
