"""A simulated fleet for playbook tests: the repository's playbooks on devices that live on the controller.

Each device is a directory tree under `work/devices/<host>` reached with the local connection (the roles' path
variables point into it), in group `pis`. The lab CA is the collection's own (playbooks/ca.yml), in `work/pki` (or
a `pki_dir` made beforehand and shared), and a DPS emulator serves both APIs (the device API for registrations, the
service API for the enrollment groups provision.yml makes). The devices are either

- cohorts {name: hosts}: child groups of `pis`, each its own DPS enrollment group with its own intermediate CA and
  tags, as in inventory/example; or
- a list of hosts: one enrollment group (the dps_enrollment role's default, `fleet`) on the one intermediate CA
  ca.yml makes by default, already in the emulator (emulator_config()).

    fleet = SimulatedFleet(work, {"plant-a": ["pa-01", "pa-02"], "plant-b": ["pb-01"]})
    fleet.make_ca()                                             # playbooks/ca.yml: root + one CA per cohort
    fleet.use_emulator(dps_emulator_factory(fleet.emulator_config()))
    run = fleet.playbook("provision.yml")                       # a PlaybookRun: .returncode, .recap, .output()
    run = fleet.playbook("renew.yml", "-l", "plant-a", extra_vars={"renew_within_days": 30})
    run = fleet.playbook("provision.yml", "--check", hosts=["pa-01"])  # an inventory of only these hosts
    fleet.register("pa-01")                                     # one registration attempt, as the device makes it
    fleet.service("dps_enrollment_info", kind="enrollment")      # a DPS service API module, on the controller

`cohort_vars`, `host_vars`, `group_vars` and `all_vars` are the inventory's variables: change them, the next run
writes the inventory again. Runs as root (the roles give device files to root).
"""

from __future__ import annotations

import base64
import json
import shutil
import sys
from pathlib import Path

import yaml
from cryptography import x509

from tests.support.emulator import HUB_POLICY, HUB_POLICY_KEY, hub_settings
from tests.support.emulator import HUB_POLICY_RIGHTS as HUB_POLICY_RIGHTS  # the IoT Hub owner policy's, for suites
from tests.support.modules import run_module
from tests.support.paths import BIN, REPO_ROOT
from tests.support.playbook import PlaybookRun, run_ansible

PLAYBOOKS = REPO_ROOT / "playbooks"
ID_SCOPE = "0ne00SIMFLT"
HUB = "hub-simulated.azure-devices.net"
# The DPS service API's owner policy (every right), for the enrollment groups and registration records.
POLICY = "provisioningserviceowner"
POLICY_KEY = base64.b64encode(b"simulated-fleet-service-policy-k").decode()
POLICY_RIGHTS = [
    "ServiceConfig",
    "EnrollmentRead",
    "EnrollmentWrite",
    "RegistrationStatusRead",
    "RegistrationStatusWrite",
]
ROOT_CERTIFICATE = "fleet-lab-root"
# A fleet given as a list of hosts: the dps_enrollment role's default group, on ca.yml's default intermediate CA.
GROUP = "fleet"
INTERMEDIATE = "intermediate"


def connection_string(emulator) -> str:
    """The DPS service API connection string of `emulator` with the owner policy above."""
    return f"HostName={emulator.host}:{emulator.port};SharedAccessKeyName={POLICY};SharedAccessKey={POLICY_KEY}"


def hub_connection_string(hub: str = HUB) -> str:
    """The IoT Hub service API connection string of a linked hub with its owner policy (HUB_POLICY, every right):
    the emulator picks the hub from the SAS sr, so HostName is the hub's name; reach the emulator's address with the
    modules' service_url."""
    return f"HostName={hub};SharedAccessKeyName={HUB_POLICY};SharedAccessKey={HUB_POLICY_KEY}"


class SimulatedFleet:
    def __init__(
        self,
        work: Path,
        devices: dict[str, list[str]] | list[str],
        *,
        pki_dir: Path | None = None,
        id_scope: str = ID_SCOPE,
        hub: str = HUB,
    ) -> None:
        """`devices`: cohorts {name: hosts}, or a list of hosts in one enrollment group (the module docstring).
        `pki_dir`: a lab CA made beforehand (default: work/pki, for make_ca())."""
        self.work = work
        self.id_scope = id_scope
        self.hub = hub
        self.devices = work / "devices"
        self.devices.mkdir(parents=True, exist_ok=True)
        self.pki_dir = pki_dir or work / "pki"
        self.inventory = work / "inventory.yml"
        self.cohorts = {cohort: list(hosts) for cohort, hosts in devices.items()} if isinstance(devices, dict) else {}
        self.emulator = None
        self.runs = 0
        # The CA of a device's enrollment group, as inventory/example derives it.
        ca = "{{ dps_enrollment_group }}" if self.cohorts else INTERMEDIATE
        self.all_vars: dict = {
            "pki_dir": str(self.pki_dir),
            "pki_key_type": "ec-p256",
            "pki_root_cert_path": "{{ pki_dir }}/root-ca.cert.pem",
            "pki_ca_cert_path": f"{{{{ pki_dir }}}}/{ca}-ca.cert.pem",
            "pki_ca_key_path": f"{{{{ pki_dir }}}}/{ca}-ca.key.pem",
        }
        if self.cohorts:
            self.all_vars["pki_intermediates"] = sorted(self.cohorts)
        self.group_vars: dict = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "device_root": f"{self.devices}/{{{{ inventory_hostname }}}}",
            "device_identity_install_dependencies": False,
            "device_identity_cert_dir": "{{ device_root }}/var/aziot/certs",
            "device_identity_secrets_dir": "{{ device_root }}/var/aziot/secrets",
            # The CA ca.yml made; provision.yml's pki check looks for these files.
            "device_identity_ca_cert_path": "{{ pki_ca_cert_path }}",
            "device_identity_ca_key_path": "{{ pki_ca_key_path }}",
            "device_identity_root_cert_path": "{{ pki_root_cert_path }}",
            # The registration id is the certificate CN (as inventory/example sets it).
            "dps_registration_registration_id": "{{ device_identity_registration_id | default(inventory_hostname) }}",
            "dps_registration_id_scope": id_scope,
            "dps_registration_timeout": 60,
            # Spelled out (not device_identity_*_path): fleet_status.yml runs dps_registration without device_identity.
            "dps_registration_client_cert": "{{ device_root }}/var/aziot/certs/device-id.full-chain.cert.pem",
            "dps_registration_client_key": "{{ device_root }}/var/aziot/secrets/device-id.key.pem",
            "dps_registration_server_ca_path": "{{ device_root }}/var/aziot/certs/dps-server-ca.pem",
        }
        # Each cohort: its DPS enrollment group (= its name) and a site tag for its enrollment group's initialTwin.
        self.cohort_vars: dict[str, dict] = {
            cohort: {"dps_enrollment_group": cohort, "site": cohort} for cohort in self.cohorts
        }
        hosts = [host for hosts in self.cohorts.values() for host in hosts] if self.cohorts else sorted(devices)
        self.host_vars: dict[str, dict] = {host: {} for host in hosts}

    # --- inventory and runs -------------------------------------------------------------------------------------
    @property
    def hosts(self) -> list[str]:
        return sorted(self.host_vars)

    def write(self, path: Path | None = None, hosts: list[str] | None = None) -> Path:
        """The inventory file: every host, or only `hosts` (a slice's own inventory, as AWX gives a slice job)."""
        path = path or self.inventory
        chosen = self.hosts if hosts is None else hosts

        def listed(candidates: list[str]) -> dict:
            return {host: self.host_vars[host] or None for host in candidates if host in chosen}

        pis: dict = {"vars": self.group_vars}
        if self.cohorts:
            pis["children"] = {
                cohort: {"hosts": listed(members), "vars": self.cohort_vars[cohort]}
                for cohort, members in self.cohorts.items()
            }
        else:
            pis["hosts"] = listed(self.hosts)
        data = {"all": {"vars": self.all_vars, "children": {"pis": pis}}}
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path

    def playbook(
        self,
        name: str | Path,
        *args: str,
        extra_vars: dict | None = None,
        hosts: list[str] | None = None,
        forks: int = 10,
        env: dict[str, str] | None = None,
        cwd: Path = REPO_ROOT,
        timeout: int = 900,
    ) -> PlaybookRun:
        """ansible-playbook on the fleet's inventory (args: -l HOST, --check ...). `name`: a file of playbooks/
        ("provision.yml"), a playbook file (a Path) or a playbook's FQCN (iotfleet.aziot.provision). `hosts`: an
        inventory of only these hosts. `env`: default clean_env()."""
        self.runs += 1
        inventory = self.write() if hosts is None else self.write(self.work / f"run-{self.runs}.inventory.yml", hosts)
        command = [str(BIN / "ansible-playbook"), "-i", str(inventory), "-f", str(forks)]
        if extra_vars:
            vars_path = self.work / f"run-{self.runs}.vars.json"
            vars_path.write_text(json.dumps(extra_vars), encoding="utf-8")
            command += ["-e", f"@{vars_path}"]
        playbook = PLAYBOOKS / name if isinstance(name, str) and name.endswith(".yml") else name
        return run_ansible([*command, *args, str(playbook)], env, cwd, timeout)

    def make_ca(self) -> None:
        """The lab CA with playbooks/ca.yml: a root and one intermediate per cohort (pki_intermediates)."""
        run = self.playbook("ca.yml")
        assert run.returncode == 0, run.output()

    # --- the emulator -------------------------------------------------------------------------------------------
    def emulator_config(self) -> dict:
        """One hub (its IoT Hub owner policy HUB_POLICY too), a service owner policy, quick timings; cohorts: the lab
        root uploaded and verified, the enrollment groups come from provision.yml (role dps_enrollment) through the
        service API; a list of hosts: their enrollment group (GROUP) on the intermediate CA, verified - provision.yml
        finds it there."""
        config = {
            "id_scope": self.id_scope,
            "linked_hubs": [self.hub],
            "defaults": {"assignment_delay": 0.2, "retry_after": 1},
            "shared_access_policies": [{"name": POLICY, "primary_key": POLICY_KEY, "rights": POLICY_RIGHTS}],
            "iot_hub": hub_settings(),
        }
        if self.cohorts:
            root = self.pki_dir / "root-ca.cert.pem"
            config["certificates"] = [{"name": ROOT_CERTIFICATE, "certificate": str(root), "verified": True}]
        else:
            ca_cert = self.pki_dir / f"{INTERMEDIATE}-ca.cert.pem"
            config["enrollment_groups"] = [
                {"name": GROUP, "attestation": "x509", "ca_cert": str(ca_cert), "verified": True}
            ]
        return config

    def use_emulator(self, emulator) -> None:
        self.emulator = emulator
        self.group_vars["dps_registration_provisioning_host"] = f"{emulator.host}:{emulator.port}"
        self.group_vars["dps_registration_server_ca_src"] = emulator.ca_cert
        # The DPS service API, for the enrollment groups (role dps_enrollment).
        self.all_vars["dps_enrollment_connection_string"] = self.connection_string
        self.all_vars["dps_enrollment_ca_path"] = emulator.ca_cert

    @property
    def connection_string(self) -> str:
        return connection_string(self.emulator)

    def service(self, module: str, **args) -> dict:
        """One of the collection's DPS service API modules (dps_enrollment, dps_enrollment_info, ...) run on the
        controller with the fleet's connection string: its result."""
        base = {"connection_string": self.connection_string, "ca_path": self.emulator.ca_cert, "timeout": 30}
        run = run_module(module, dict(base, **args))
        assert run.result is not None and not run.failed, run.output()
        return run.result

    def hub_devices(self, prefix: str | None = None) -> dict[str, dict]:
        """The emulator's IoT Hub device list, by device id: this fleet's devices, or every device whose id starts
        with `prefix` (strays too)."""
        devices = self.emulator.devices()
        if prefix is not None:
            return {device["deviceId"]: device for device in devices if device["deviceId"].startswith(prefix)}
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

    def chain(self, host: str) -> list[x509.Certificate]:
        """The device's full chain, leaf first."""
        return x509.load_pem_x509_certificates(self.files(host)["chain"].read_bytes())

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
