"""tools/device_containers.py against podman: what `down` leaves behind."""

from __future__ import annotations

from pathlib import Path

from tools.device_containers import Device, podman, start, stop

DEVICE = Device("iotfleet-down-present", 2256, "bookworm-amd64-prepared")


def test_down_removes_the_devices_that_exist_when_others_never_started(tmp_path: Path) -> None:
    # A scenario whose create stopped half-way: destroy names devices that were never started.
    start([DEVICE], tmp_path / "ssh")
    try:
        stop(["iotfleet-down-never-started", DEVICE.name])
        assert podman("container", "exists", DEVICE.name, check=False).returncode == 1
    finally:
        stop([DEVICE.name])
