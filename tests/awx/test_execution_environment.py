"""The execution environment, built and used as AWX uses it.

Session: the base image (tests/awx/ee-base) and `ansible-builder build` of execution-environment.yml with the built
collection tarball, once. Then ansible-runner runs iotfleet.aziot.provision inside that image (process isolation
with podman, the image as --container-image, host networking so the job reaches the devices' loopback SSH ports),
as AWX runs a job: the SSH key through runner's ssh-agent, the device CA through the AWX credential type rendered
into the private data directory (tests/awx/awx_credentials.py), against two Debian 12 devices reached over SSH as
pi with sudo (tools/device_containers.py) and the DPS emulator on the podman bridge. Every device must be assigned,
and a second job must change nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from dps_emulator.testing import start_emulator

from tests.awx import ee
from tests.awx.awx_credentials import inject, load_credential_types
from tests.support.fleet import SimulatedFleet
from tests.support.paths import BIN
from tools.device_containers import Device, podman, start, stop

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="rootful podman and the device containers need root"),
    pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed (make images)"),
]

DEVICES = [Device("awx-ee-dev-1", 2261, "bookworm-amd64-prepared"), Device("awx-ee-dev-2", 2262, "bookworm-amd64")]
PLAYBOOK = "iotfleet.aziot.provision"
# The controller's copies of the issued device certificates (device_identity_issued_dir) must outlive a job: an
# EE's files and the private data directory are gone when it ends. AWX mounts such a path into every job's
# container ("Paths to expose to isolated jobs"); here ansible-runner's --container-volume-mount does it.
ISSUED_IN_EE = "/var/lib/iotfleet/issued"


@pytest.fixture(scope="session")
def ee_image(collection_tarball: Path, awx_work: Path) -> dict[str, float]:
    """Build the base and the execution environment once per session; the seconds each took."""
    base_s = ee.base_image(awx_work)
    ee_s = ee.build_ee(collection_tarball, awx_work)
    print(f"\nEE base image {base_s:.0f} s, ansible-builder build {ee_s:.0f} s")
    return {"base_s": base_s, "ee_s": ee_s}


def test_ee_holds_the_collection_and_its_dependencies(ee_image: dict) -> None:
    script = (
        "ansible --version | head -1; ansible-runner --version; "
        "ansible-doc -t role -l iotfleet.aziot | cut -d' ' -f1; "
        "python3 -c 'import cryptography, requests, tomlkit; print(\"imports ok\")'; "
        "command -v ssh ssh-agent"
    )
    result = subprocess.run(
        ["podman", "run", "--rm", ee.EE_IMAGE, "bash", "-c", script],
        capture_output=True,
        text=True,
        env=ee.podman_env(),
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.split()
    assert "[core" in result.stdout and "2.19." in result.stdout, result.stdout
    for role in ("iotfleet.aziot.pki", "iotfleet.aziot.device_identity", "iotfleet.aziot.dps_registration"):
        assert f"{role}:" in lines, result.stdout
    assert "imports ok" in result.stdout and "/usr/bin/ssh-agent" in lines, result.stdout


def podman_gateway() -> str:
    return json.loads(podman("network", "inspect", "podman").stdout)[0]["subnets"][0]["gateway"]


def write_private_data_dir(pdd: Path, ssh_dir: Path, fleet: SimulatedFleet) -> None:
    """An ansible-runner private data directory the way AWX lays one out for a job: the fleet's lab CA and
    emulator, its devices the DEVICES containers."""
    ca_pki, emulator = fleet.pki_dir, fleet.emulator
    for sub in ("env", "inventory", "project"):
        (pdd / sub).mkdir(parents=True, exist_ok=True)
    # The Machine credential: runner hands the key to ssh-agent inside the container.
    (pdd / "env" / "ssh_key").write_text((ssh_dir / "id_ed25519").read_text(encoding="utf-8"), encoding="utf-8")
    # AWX's own default (AWX_TASK_ENV): the re-created test devices have new host keys on every run.
    (pdd / "env" / "envvars").write_text(yaml.safe_dump({"ANSIBLE_HOST_KEY_CHECKING": "False"}), encoding="utf-8")
    # The job's credentials (extensions/awx), rendered as AWX does: the device CA as files in env/ named by extra
    # vars, the DPS service connection string as an extra var.
    credential_types = load_credential_types()
    ca_inputs = {
        "root_cert": (ca_pki / "root-ca.cert.pem").read_text(encoding="utf-8"),
        "ca_cert": (ca_pki / "intermediate-ca.cert.pem").read_text(encoding="utf-8"),
        "ca_key": (ca_pki / "intermediate-ca.key.pem").read_text(encoding="utf-8"),
    }
    extra_vars = inject(credential_types["iotfleet_device_ca.yml"], ca_inputs, pdd).extra_vars
    service_inputs = {"connection_string": fleet.connection_string}
    extra_vars.update(inject(credential_types["iotfleet_dps_service.yml"], service_inputs, pdd).extra_vars)
    (pdd / "env" / "extravars").write_text(yaml.safe_dump(extra_vars), encoding="utf-8")
    # The emulator's server CA, copied to each device by dps_registration (a file the job can read).
    shutil.copy(emulator.ca_cert, pdd / "env" / "dps-server-ca.pem")
    hosts = {device.name: {"ansible_host": device.address, "ansible_port": device.port} for device in DEVICES}
    inventory = {
        "pis": {
            "hosts": hosts,
            "vars": {
                "ansible_user": "pi",
                "ansible_become": True,
                "ansible_python_interpreter": "/usr/bin/python3",
                "dps_registration_id_scope": fleet.id_scope,
                "dps_registration_provisioning_host": f"{emulator.host}:{emulator.port}",
                "dps_registration_server_ca_src": "/runner/env/dps-server-ca.pem",
                "dps_enrollment_ca_path": "/runner/env/dps-server-ca.pem",
                "device_identity_issued_dir": ISSUED_IN_EE,
            },
        }
    }
    (pdd / "inventory" / "hosts.yml").write_text(yaml.safe_dump(inventory), encoding="utf-8")
    # Inside the container the job runs as root: the private data directory (and runner's ssh-agent key pipe)
    # belongs to root on this rootful-podman host.


def run_job(pdd: Path, ident: str, issued: Path) -> tuple[str, dict[str, dict[str, int]], float]:
    """ansible-runner with process isolation in the EE: (status, recap per host from the job events, seconds)."""
    argv = [
        str(BIN / "ansible-runner"),
        "run",
        str(pdd),
        "--ident",
        ident,
        "-p",
        PLAYBOOK,
        "--process-isolation",
        "--process-isolation-executable",
        "podman",
        "--container-image",
        ee.EE_IMAGE,
        "--container-option=--network=host",
        "--container-option=--user=root",
        "--container-volume-mount",
        f"{issued}:{ISSUED_IN_EE}:Z",
    ]
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, env=ee.podman_env(), timeout=600, check=False)
    wall = time.monotonic() - started
    artifacts = pdd / "artifacts" / ident
    status = (artifacts / "status").read_text(encoding="utf-8").strip() if (artifacts / "status").exists() else "?"
    stats: dict[str, dict[str, int]] = {}
    for event_file in sorted((artifacts / "job_events").glob("*.json")):
        event = json.loads(event_file.read_text(encoding="utf-8"))
        if event.get("event") == "playbook_on_stats":
            data = event["event_data"]
            for key in ("ok", "changed", "failures", "dark"):
                for host, count in (data.get(key) or {}).items():
                    stats.setdefault(host, {})[key] = count
    assert status == "successful", f"{status}\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    return status, stats, wall


def test_provision_runs_in_the_ee_with_ansible_runner(ee_image: dict, tmp_path: Path) -> None:
    started = time.monotonic()
    ssh_dir = tmp_path / "ssh"
    names = [device.name for device in DEVICES]
    emulator = None
    try:
        # Devices first: the emulator listens on the podman bridge, which has an address only while they run.
        start(DEVICES, ssh_dir)
        # The lab CA, made once beforehand with playbooks/ca.yml (outside AWX: an EE's files do not outlive a job).
        fleet = SimulatedFleet(tmp_path, [])
        fleet.make_ca()
        config = tmp_path / "dps.yml"
        config.write_text(yaml.safe_dump(fleet.emulator_config()), encoding="utf-8")
        emulator = start_emulator(config, tmp_path / "dps", host=podman_gateway())
        fleet.use_emulator(emulator)
        pdd = tmp_path / "job"
        write_private_data_dir(pdd, ssh_dir, fleet)

        issued = tmp_path / "issued"
        issued.mkdir()
        _, first, first_s = run_job(pdd, "first", issued)
        assert set(first) >= set(names), first
        assert all(first[name].get("changed", 0) > 0 and not first[name].get("failures") for name in names), first
        devices = fleet.hub_devices("awx-ee-dev-")
        assert sorted(devices) == names, devices
        assert all(
            device["assignedHub"] == fleet.hub and device["registrationCount"] == 1 for device in devices.values()
        )

        # The controller kept its copy of each device's certificate outside the job's container.
        assert sorted(path.name for path in issued.iterdir()) == [f"{name}.cert.pem" for name in names]
        _, second, second_s = run_job(pdd, "second", issued)
        assert all(not second[name].get("changed") for name in names), second
        total = time.monotonic() - started
        print(
            f"\nEE job: first {first_s:.0f} s, second {second_s:.0f} s; test {total:.0f} s "
            f"(+ image build {ee_image['base_s']:.0f} + {ee_image['ee_s']:.0f} s)"
        )
    finally:
        if emulator is not None:
            emulator.stop()
        stop(names)
