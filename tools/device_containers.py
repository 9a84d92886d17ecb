"""Container devices reached the way real Raspberry Pis are: SSH as `pi`, sudo to root.

One way to start and stop the test/demo device containers, used by `make demo` (scripts/demo.sh), the molecule
scenarios (create.yml / destroy.yml), the container tests and the benchmark's `--target ssh` cell:

    python -m tools.device_containers up   --hosts inventory/demo/hosts.yml --ssh-dir build/demo/ssh
    python -m tools.device_containers down --hosts inventory/demo/hosts.yml
    python -m tools.device_containers images --hosts inventory/demo/hosts.yml    # the images to build

Each host line of the inventory's `pis` group names its address and port (`ansible_host: 127.0.0.1`,
`ansible_port: 22NN`: the container's port 22 is published on loopback only) and, for these containers only, the
local image it runs (`container_image: trixie-arm64-prepared`, default `bookworm-amd64`; tests/containers/README.md
lists the images). The controller's key pair for the run is made in --ssh-dir (`id_ed25519`, 0600) and handed to
each new container, whose first boot makes its own SSH host keys (tests/containers/device-init). A re-created
container has new host keys, like a re-imaged Pi: its old entry in the run's known_hosts file is removed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGE_REPO = "localhost/iotfleet-debian"
DEFAULT_IMAGE = "bookworm-amd64"
KEY_NAME = "id_ed25519"
KNOWN_HOSTS = "known_hosts"
LABEL = "iotfleet.device=1"


class DeviceError(RuntimeError):
    """A device container could not be started or reached; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class Device:
    name: str
    port: int
    image: str = DEFAULT_IMAGE  # tag under IMAGE_REPO: SUITE-ARCH[-prepared]
    address: str = "127.0.0.1"
    env: tuple[tuple[str, str], ...] = ()  # extra device-init settings, e.g. (("DEVICE_SUDO", "password"),)

    @property
    def arch(self) -> str:
        return self.image.split("-")[1]

    @property
    def image_ref(self) -> str:
        return f"{IMAGE_REPO}:{self.image}"

    @property
    def known_hosts_name(self) -> str:
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"


def podman_env() -> dict[str, str]:
    """The repo's podman settings (runc, explicit ulimits: DESIGN.md section 7) unless the caller set their own."""
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(REPO_ROOT / "tests" / "containers" / "containers.conf"))
    return env


def podman(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(  # noqa: S603
        ["podman", *argv],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
        env=podman_env(),
        timeout=300,
    )
    if check and result.returncode != 0:
        raise DeviceError(f"podman {' '.join(argv[:2])} failed: {result.stderr.strip()[-800:]}")
    return result


def inventory_hosts(group: dict) -> dict:
    """Every host of a YAML inventory group and of its children, with its line's variables."""
    hosts = dict(group.get("hosts") or {})
    for child in (group.get("children") or {}).values():
        hosts.update(inventory_hosts(child or {}))
    return hosts


def devices_from_inventory(hosts_file: Path, group: str = "pis") -> list[Device]:
    """The devices of `group` (and its children) in a YAML hosts file: ansible_host/ansible_port, container_image."""
    data = yaml.safe_load(hosts_file.read_text(encoding="utf-8")) or {}
    hosts = inventory_hosts(data.get(group) or {})
    devices = []
    for name, host_vars in hosts.items():
        host_vars = host_vars or {}
        if "ansible_port" not in host_vars:
            raise DeviceError(f"{hosts_file}: {name} has no ansible_port (the loopback port its SSH is published on)")
        devices.append(
            Device(
                name=name,
                port=int(host_vars["ansible_port"]),
                image=host_vars.get("container_image", DEFAULT_IMAGE),
                address=host_vars.get("ansible_host", "127.0.0.1"),
            )
        )
    return devices


def ensure_ssh_key(ssh_dir: Path) -> Path:
    """The controller's key pair for this run (made once, 0600 in a 0700 directory); returns the private key path."""
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ssh_dir / KEY_NAME
    if not key.exists():
        subprocess.run(  # noqa: S603
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "iotfleet-test-controller", "-f", str(key)],  # noqa: S607
            check=True,
            capture_output=True,
        )
    return key


def _running(name: str) -> dict | None:
    result = podman("container", "inspect", name, check=False)
    if result.returncode != 0:
        return None
    return json.loads(result.stdout)[0]


def _forget_host_key(ssh_dir: Path, device: Device) -> None:
    known_hosts = ssh_dir / KNOWN_HOSTS
    if known_hosts.exists():
        subprocess.run(  # noqa: S603
            ["ssh-keygen", "-f", str(known_hosts), "-R", device.known_hosts_name],  # noqa: S607
            check=False,
            capture_output=True,
        )


def _port_taken(address: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((address, port)) == 0


def start(devices: Iterable[Device], ssh_dir: Path, timeout: float = 120) -> list[Device]:
    """Start (or keep) a container per device and wait until each one's SSH server answers."""
    devices = list(devices)
    public_key = (ensure_ssh_key(ssh_dir).with_suffix(".pub")).read_text(encoding="utf-8").strip()
    for device in devices:
        current = _running(device.name)
        if current is not None:
            same_image = current.get("ImageName") == device.image_ref
            if same_image and current["State"]["Running"]:
                continue
            if same_image:
                podman("start", device.name)
                continue
            podman("rm", "-f", "-t", "1", device.name)
        if podman("image", "exists", device.image_ref, check=False).returncode != 0:
            raise DeviceError(f"{device.name}: image {device.image_ref} is missing: build it with `make images`")
        if _port_taken(device.address, device.port):
            raise DeviceError(
                f"{device.name}: port {device.address}:{device.port} is already in use by something else; "
                "free it or change ansible_port in the inventory"
            )
        _forget_host_key(ssh_dir, device)
        argv = ["run", "-d", "--name", device.name, "--hostname", device.name, "--label", LABEL]
        argv += ["--arch", device.arch, "--stop-timeout=1", "-p", f"{device.address}:{device.port}:22"]
        argv += ["-e", f"DEVICE_AUTHORIZED_KEY={public_key}"]
        for key, value in device.env:
            argv += ["-e", f"{key}={value}"]
        podman(*argv, device.image_ref)
    wait_for_ssh(devices, timeout)
    return devices


def wait_for_ssh(devices: Iterable[Device], timeout: float = 120) -> None:
    """Until every device's SSH server sends its banner (emulated arm64 devices take a few seconds more)."""
    deadline = time.monotonic() + timeout
    pending = list(devices)
    while pending:
        device = pending[0]
        try:
            with socket.create_connection((device.address, device.port), timeout=2) as connection:
                connection.settimeout(5)
                if connection.recv(64).startswith(b"SSH-"):
                    pending.pop(0)
                    continue
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise DeviceError(
                f"{device.name}: no SSH server answered on {device.address}:{device.port} within {timeout:.0f} s; "
                f"see `podman logs {device.name}`"
            )
        time.sleep(0.2)


def stop(names: Iterable[str]) -> None:
    names = list(names)
    if names:
        # --ignore: without it, podman 4 removes none of the names when one of them does not exist (and exits 0).
        podman("rm", "-f", "--ignore", "-t", "1", *names, check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.device_containers", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("up", "down", "images"), help="images: list the images the devices use")
    parser.add_argument("--hosts", type=Path, required=True, help="YAML hosts file of the inventory")
    parser.add_argument("--group", default="pis")
    parser.add_argument("--ssh-dir", type=Path, help="up: where the run's key pair and known_hosts live")
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args(argv)
    try:
        devices = devices_from_inventory(args.hosts, args.group)
        if args.action == "images":
            print(" ".join(sorted({device.image for device in devices})))
            return 0
        if args.action == "down":
            stop(device.name for device in devices)
            return 0
        if args.ssh_dir is None:
            parser.error("up needs --ssh-dir")
        start(devices, args.ssh_dir, args.timeout)
    except DeviceError as exc:
        print(f"device_containers: {exc}", file=sys.stderr)
        return 1
    for device in devices:
        print(f"{device.name:<20} ssh pi@{device.address} -p {device.port:<6} {device.image_ref}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
