"""bench/fleet.py's SSH ControlPath fits in a Unix socket path whatever the checkout's path (fault 6 of issue 19:
`make bench-smoke-ssh` failed from a clone whose path was a little longer, the sockets being under build/bench/)."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from bench import fleet


def control_path_of(config: Path) -> str:
    return next(line.split(None, 1)[1] for line in config.read_text().splitlines() if "ControlPath" in line)


def test_control_sockets_fit_with_a_200_character_checkout(tmp_path: Path) -> None:
    checkout = tmp_path / ("c" * (199 - len(str(tmp_path))))
    assert len(str(checkout)) == 200
    ssh_dir = checkout / "build" / "bench" / "ec-p256-2-r1" / "ssh"
    control_dir = fleet.ssh_control_dir()
    try:
        devices = fleet.containers_for(["bench-dev-001", "bench-dev-002"])
        control_path = control_path_of(fleet.ssh_config(tmp_path / "ssh_config", devices, ssh_dir, control_dir))
        # what ssh binds: %C expanded (40 hex characters), then '.' and 16 characters while it creates the socket
        bound = control_path.replace("%C", "0123456789abcdef0123456789abcdef01234567") + ".AbCdEfGh01234567"
        assert len(bound.encode()) < fleet.SSH_SOCKET_PATH_MAX <= 100, bound
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(bound)  # the kernel agrees
    finally:
        shutil.rmtree(control_dir)


def test_each_run_gets_its_own_control_directory() -> None:
    first, second = fleet.ssh_control_dir(), fleet.ssh_control_dir()
    try:
        assert first != second and first.is_dir() and second.is_dir()
        assert oct(first.stat().st_mode & 0o777) == "0o700"  # sockets of the run's SSH masters: the user's only
    finally:
        shutil.rmtree(first)
        shutil.rmtree(second)
