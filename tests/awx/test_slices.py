"""playbooks/provision.yml as AWX job slices: N concurrent ansible-playbook processes over disjoint parts of one
inventory (docs/awx.md "Job slicing").

- 40 simulated devices, 4 slices at once, one emulator, the lab CA made once by ca.yml beforehand: every device
  assigned exactly once, every chain ends at that one CA and the CA files are untouched; the 4 slices again change
  nothing.
- The inventory check inside provision.yml is slice-local (AWX gives each slice only its hosts), so a duplicate
  registration id split across two slices passes it; playbooks/validate.yml, run once on the whole inventory
  beforehand, catches it - without touching a device.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.awx.slicing import run_concurrently, slices
from tests.support.fleet import PLAYBOOKS, SimulatedFleet
from tests.support.paths import BIN
from tests.support.playbook import clean_env

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the roles give device files to root (run as root)")

SLICE_COUNT = 4
DEVICES = 40
PREFIX = "slice-dev-"
FORKS = 10
PROVISION = PLAYBOOKS / "provision.yml"


@pytest.fixture(scope="module")
def lab_ca(tmp_path_factory) -> Path:
    """The lab CA, made once by playbooks/ca.yml (as users do before provisioning)."""
    fleet = SimulatedFleet(tmp_path_factory.mktemp("slices-ca"), [])
    fleet.make_ca()
    return fleet.pki_dir


def files_digest(directory: Path) -> dict[str, str]:
    """name -> sha256 of every file directly in `directory` (the CA files of a pki_dir, not its issued/ copies)."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
        if path.is_file()
    }


def slice_commands(inventory: Path, parts: list[list[str]], work: Path, *extra: str) -> list[list[str]]:
    commands = []
    for index, hosts in enumerate(parts):
        limit = work / f"slice-{index + 1}.limit"
        limit.write_text("\n".join(hosts) + "\n", encoding="utf-8")
        argv = [str(BIN / "ansible-playbook"), "-i", str(inventory), "-f", str(FORKS), "--limit", f"@{limit}"]
        commands.append([*argv, *extra, str(PROVISION)])
    return commands


def test_four_slices_assign_every_device_once_with_one_ca(lab_ca: Path, dps_emulator_factory, tmp_path: Path) -> None:
    ca_before = files_digest(lab_ca)
    hosts = [f"{PREFIX}{index:03d}" for index in range(1, DEVICES + 1)]
    fleet = SimulatedFleet(tmp_path, hosts, pki_dir=lab_ca)
    fleet.use_emulator(dps_emulator_factory(fleet.emulator_config(), name="slices"))
    inventory = fleet.write()
    parts = slices(hosts, SLICE_COUNT)
    assert sorted(host for part in parts for host in part) == hosts and all(
        len(part) == DEVICES // SLICE_COUNT for part in parts
    )

    checked = fleet.playbook("validate.yml")
    assert checked.returncode == 0 and f"{DEVICES} devices, inventory ok" in checked.stdout, checked.output()

    first = run_concurrently(slice_commands(inventory, parts, tmp_path), clean_env(), tmp_path)
    for part, result in zip(parts, first, strict=True):
        assert result.returncode == 0, result.output()
        assert sorted(result.recap) == sorted([*part, "localhost"]) or sorted(result.recap) == part, result.recap
        assert all(result.recap[host]["changed"] > 0 for host in part), result.recap

    devices = fleet.hub_devices(PREFIX)
    assert sorted(devices) == hosts
    for host, device in devices.items():
        assert device["registrationCount"] == 1 and device["assignedHub"] == fleet.hub, (host, device)

    # One CA: ca.yml's files are untouched (no slice made or rewrote one; the controller's copies of the device
    # certificates go to pki_dir/issued), and every chain is leaf -> that issuing CA -> that root.
    assert files_digest(lab_ca) == ca_before
    assert sorted(path.name for path in (lab_ca / "issued").iterdir()) == [f"{host}.cert.pem" for host in hosts]
    root_pem = (lab_ca / "root-ca.cert.pem").read_bytes()
    intermediate_pem = (lab_ca / "intermediate-ca.cert.pem").read_bytes()
    for host in hosts:
        leaf, intermediate, root = fleet.chain(host)
        assert intermediate.public_bytes(serialization.Encoding.PEM) == intermediate_pem, host
        assert root.public_bytes(serialization.Encoding.PEM) == root_pem, host
        leaf.verify_directly_issued_by(intermediate)

    again = run_concurrently(slice_commands(inventory, parts, tmp_path), clean_env(), tmp_path)
    for result in again:
        assert result.returncode == 0, result.output()
        assert not result.changed_hosts(), result.recap
    assert all(device["registrationCount"] == 1 for device in fleet.hub_devices(PREFIX).values())
    print(
        f"\n4 slices x {DEVICES // SLICE_COUNT} devices: first {max(r.wall_s for r in first)} s, "
        f"re-run {max(r.wall_s for r in again)} s"
    )


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_duplicate_across_slices_passes_each_slice_and_validate_yml_catches_it(lab_ca: Path, tmp_path: Path) -> None:
    hosts = [f"dup-dev-{index}" for index in range(1, 5)]
    fleet = SimulatedFleet(tmp_path, hosts, pki_dir=lab_ca)
    fleet.group_vars["dps_registration_provisioning_host"] = "127.0.0.1:9"  # never reached: check mode, no cert yet
    # dup-dev-1 and dup-dev-4 claim the same registration id; slicing puts them in different slices.
    fleet.host_vars["dup-dev-4"] = {"device_identity_registration_id": "dup-dev-1"}
    parts = slices(hosts, 2)
    assert ["dup-dev-1", "dup-dev-4"] not in [sorted(part) for part in parts]

    # As AWX runs a slice: the slice's inventory holds only its hosts. provision.yml's own check passes in both.
    for part in parts:
        result = fleet.playbook("provision.yml", "--check", hosts=part)
        assert "2 devices, inventory ok" in result.stdout, result.output()

    # The whole inventory, once: validate.yml names both hosts. Every device is 'off' (SSH to a closed port): the
    # check runs on the controller only.
    for host in hosts:
        fleet.host_vars[host].update(ansible_connection="ssh", ansible_host="127.0.0.1", ansible_port=closed_port())
    checked = fleet.playbook("validate.yml")
    assert checked.returncode != 0, checked.output()
    assert 'hosts dup-dev-1, dup-dev-4: registration id "dup-dev-1" is used more than once' in checked.stdout, (
        checked.output()
    )
    assert not (tmp_path / "devices" / "dup-dev-1").exists()
    assert set(checked.recap) == {"localhost"}, checked.recap


def test_enrollment_group_disagreement_across_slices_fails_validate_yml(lab_ca: Path, tmp_path: Path) -> None:
    """Each slice derives an enrollment group's settings from its own devices: a device whose tags differ from its
    group's passes a slice without its peers, then every run rewrites the group. validate.yml sees all of them."""
    hosts = [f"tag-dev-{index}" for index in range(1, 5)]
    fleet = SimulatedFleet(tmp_path, hosts, pki_dir=lab_ca)
    fleet.group_vars["site"] = "plant-1"
    fleet.host_vars["tag-dev-4"] = {"site": "plant-2"}
    checked = fleet.playbook("validate.yml")
    assert checked.returncode != 0, checked.output()
    assert "enrollment group 'fleet': tag-dev-1 and tag-dev-4 disagree on the tags" in checked.stdout, checked.output()

    fleet.host_vars["tag-dev-4"] = {}
    agreed = fleet.playbook("validate.yml")
    assert agreed.returncode == 0, agreed.output()
    assert "1 enrollment group(s): fleet: 4 devices" in agreed.stdout, agreed.output()
