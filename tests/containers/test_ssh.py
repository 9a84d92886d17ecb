"""Devices reached as real Pis are: SSH as `pi`, sudo to root (tools/device_containers.py starts them).

- The modules that write on the device (x509_device_cert with its controller round trip, full_chain, aziot_config),
  four runs each, as root and for aziotks/aziotcs, on Debian 12 and 13, with pipelining on and off.
- A device whose sudo asks for a password, and one whose SSH host key changed, stop with one line naming the host
  and the fix (playbooks/tasks/check_connection.yml).
- The aziot_edge role on Debian 13, where Microsoft publishes no IoT Edge packages, stops with the options.
- tpm_keys on a device whose TPM is a software TPM (swtpm, started by device-init), four runs on Debian 12 and 13,
  amd64 and the emulated arm64 Pi.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.device_containers import Device, podman, start, stop

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
BIN = Path(sys.executable).parent

TPM = (("DEVICE_TPM", "swtpm"),)  # a software TPM in place of a TPM module (device-init)
BOOKWORM = Device("iotfleet-ssh-bookworm", 2251, "bookworm-amd64-prepared", env=TPM)
TRIXIE = Device("iotfleet-ssh-trixie", 2252, "trixie-amd64-prepared", env=TPM)
SUDO_PASSWORD = Device("iotfleet-ssh-sudo-password", 2253, "bookworm-amd64", env=(("DEVICE_SUDO", "password"),))
# The Raspberry Pi stand-in (trixie arm64 under qemu-user): only the TPM test uses it.
PI_ARM64 = Device("iotfleet-ssh-pi-arm64", 2254, "trixie-arm64-prepared", env=TPM)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    ssh_dir = tmp_path_factory.mktemp("ssh")
    devices = [BOOKWORM, TRIXIE, SUDO_PASSWORD, PI_ARM64]
    try:
        start(devices, ssh_dir)
        yield ssh_dir
    finally:
        stop(device.name for device in devices)


def _inventory(path: Path, devices: list[Device]) -> Path:
    lines = ["devices:", "  vars:", "    ansible_user: pi", "    ansible_become: true"]
    lines += ["    ansible_python_interpreter: /usr/bin/python3", "  hosts:"]
    lines += [f"    {d.name}: {{ansible_host: {d.address}, ansible_port: {d.port}}}" for d in devices]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _playbook(ssh_dir: Path, tmp_path: Path, devices: list[Device], playbook: Path, *extra: str, **env: str):
    run_env = dict(os.environ)
    run_env.update(
        ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_PRIVATE_KEY_FILE=str(ssh_dir / "id_ed25519"),
        ANSIBLE_SSH_COMMON_ARGS=f"-o UserKnownHostsFile={ssh_dir / 'known_hosts'}",
        # A fresh SSH master per run (a persisted connection would hide a host key that changed meanwhile), in a
        # short directory: control socket paths are limited to 108 characters.
        ANSIBLE_SSH_CONTROL_PATH_DIR=tempfile.mkdtemp(prefix="iotfleet-cp-"),
        PATH=f"{BIN}{os.pathsep}{run_env.get('PATH', '')}",
    )
    run_env.update(env)
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(_inventory(tmp_path / "hosts.yml", devices)), str(playbook), *extra],
        cwd=REPO_ROOT,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.parametrize("pipelining", ["True", "False"], ids=["pipelining", "no-pipelining"])
def test_device_modules_through_sudo(fleet: Path, tmp_path: Path, pipelining: str) -> None:
    result = _playbook(
        fleet,
        tmp_path,
        [BOOKWORM, TRIXIE],
        HERE / "playbooks" / "device_modules.yml",
        "-e",
        f"test_dir={tmp_path}",
        "-e",
        f"device_dir=/var/lib/iotfleet-ssh-test/{pipelining.lower()}",
        ANSIBLE_PIPELINING=pipelining,
    )
    assert result.returncode == 0, result.stdout[-15000:] + result.stderr[-3000:]
    # Both releases' own Python and cryptography ran the modules.
    assert "python 3 11 cryptography 38" in result.stdout, result.stdout[-3000:]
    assert "python 3 13 cryptography 43" in result.stdout, result.stdout[-3000:]


def test_tpm_keys_through_sudo(fleet: Path, tmp_path: Path) -> None:
    """The device's EK and SRK with tpm2-tools, as root through sudo, on Debian 12 and 13 and the arm64 Pi: four
    runs."""
    result = _playbook(fleet, tmp_path, [BOOKWORM, TRIXIE, PI_ARM64], HERE / "playbooks" / "tpm_keys.yml")
    assert result.returncode == 0, result.stdout[-15000:] + result.stderr[-3000:]
    assert "ok=6" in result.stdout and "failed=0" in result.stdout, result.stdout[-3000:]


def _check_connection_playbook(tmp_path: Path) -> Path:
    playbook = tmp_path / "check.yml"
    playbook.write_text(
        "- name: Check the connection\n  hosts: devices\n  gather_facts: false\n  tasks:\n"
        "    - name: Check\n"
        f"      ansible.builtin.import_tasks: {REPO_ROOT / 'playbooks' / 'tasks' / 'check_connection.yml'}\n",
        encoding="utf-8",
    )
    return playbook


def _device_packages_playbook(tmp_path: Path) -> Path:
    """device_identity's package query: the first round trip to a device in provision.yml (a plain command)."""
    playbook = tmp_path / "packages.yml"
    playbook.write_text(
        "- name: Check the device packages\n  hosts: devices\n  gather_facts: false\n  tasks:\n"
        "    - name: Query them\n      ansible.builtin.include_role:\n"
        "        name: iotfleet.aziot.device_identity\n        tasks_from: dependencies.yml\n",
        encoding="utf-8",
    )
    return playbook


@pytest.mark.parametrize("first_task", ["check_connection", "device_packages"])
def test_sudo_asking_for_a_password_is_one_line_with_the_fix(fleet: Path, tmp_path: Path, first_task: str) -> None:
    playbook = (_check_connection_playbook if first_task == "check_connection" else _device_packages_playbook)(tmp_path)
    result = _playbook(fleet, tmp_path, [SUDO_PASSWORD], playbook)
    assert result.returncode != 0
    expected = (
        f"{SUDO_PASSWORD.name}: sudo on the device asks pi for a password; give pi passwordless sudo "
        "(`echo 'pi ALL=(ALL) NOPASSWD: ALL' | sudo tee /etc/sudoers.d/010_pi-nopasswd`) or run ansible-playbook "
        "with --ask-become-pass"
    )
    assert f'"msg": "{expected}"' in result.stdout, result.stdout[-5000:]


def test_changed_host_key_is_refused_in_one_line_with_the_fix(fleet: Path, tmp_path: Path) -> None:
    check = _check_connection_playbook(tmp_path)
    first = _playbook(fleet, tmp_path, [BOOKWORM], check)
    assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-2000:]
    # The device gets new host keys (as after re-imaging); sshd re-reads them on SIGHUP.
    podman("exec", BOOKWORM.name, "sh", "-c", "rm /etc/ssh/ssh_host_* && ssh-keygen -A >/dev/null && kill -HUP 1")
    second = _playbook(fleet, tmp_path, [BOOKWORM], check)
    assert second.returncode != 0
    known_hosts = fleet / "known_hosts"
    assert (
        f"{BOOKWORM.name}: the SSH host key of 127.0.0.1:{BOOKWORM.port} changed since it was recorded in known_hosts; "
        f'if the device was re-imaged or replaced, remove the old key with `ssh-keygen -f \\"{known_hosts}\\" -R '
        f'\\"[127.0.0.1]:{BOOKWORM.port}\\"` and run again'
    ) in second.stdout, second.stdout[-5000:]
    subprocess.run(["ssh-keygen", "-f", str(known_hosts), "-R", f"[127.0.0.1]:{BOOKWORM.port}"], check=True)


def test_aziot_edge_stops_on_debian_13_with_the_options(fleet: Path, tmp_path: Path) -> None:
    playbook = tmp_path / "edge.yml"
    playbook.write_text(
        "- name: IoT Edge on Debian 13\n  hosts: devices\n  gather_facts: false\n  roles:\n"
        "    - role: iotfleet.aziot.aziot_edge\n      vars:\n        aziot_edge_id_scope: 0ne00SSHTST\n",
        encoding="utf-8",
    )
    result = _playbook(fleet, tmp_path, [TRIXIE], playbook)
    assert result.returncode != 0
    assert (
        f"aziot_edge: {TRIXIE.name} runs Debian GNU/Linux 13 (trixie), and Microsoft publishes IoT Edge packages for "
        "Debian 12 (bookworm) only. Either leave IoT Edge off this device and register it over REST"
    ) in result.stdout, result.stdout[-5000:]
    # Nothing was installed or written: apt never ran.
    sources = podman("exec", TRIXIE.name, "ls", "/etc/apt/sources.list.d/", check=False).stdout
    assert "microsoft-prod" not in sources
