"""Where a device's time goes in the DPS phase: Retry-After waiting, our client's requests, the module start.

The bench's DPS phase runs `dps_register` for every device through Ansible (bench/fleet.py). This profile runs
the same client code (plugins/module_utils/_dps.py over _http.py, with the same urls transport and mutual TLS) in one
process, one device after another, against the same emulator settings (`Retry-After: 3`, 1 s assigning), and
splits each device's registration into the time spent sleeping on Retry-After and the time spent in requests.
It also times a cold `python -c "import <dps_register module>"`, what every module execution pays before it
sends anything. Whatever a device's slot in the Ansible phase takes beyond those is Ansible's per-host cost.

    .venv/bin/python bench/dps_profile.py --devices 20 --out bench/results/<date>-dps-profile.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT / ".collections"))
sys.path.insert(0, str(REPO_ROOT))

from dps_emulator.testing import start_emulator

from ansible_collections.iotfleet.aziot.plugins.module_utils import _dps, _http, _pki
from bench import fleet, measure

MODULE = "ansible_collections.iotfleet.aziot.plugins.modules.dps_register"


def make_devices(directory: Path, count: int) -> tuple[Path, list[tuple[str, Path, Path]]]:
    """Root + intermediate CA (EC P-256, in process) and `count` devices with a key and a full chain."""
    root_key = _pki.generate_private_key("ec-p256")
    root = _pki.create_ca_certificate(root_key, "Bench Profile Root", 3650)
    inter_key = _pki.generate_private_key("ec-p256")
    inter = _pki.create_ca_certificate(inter_key, "Bench Profile Intermediate", 1825, root, root_key, path_length=0)
    root_path = directory / "root-ca.cert.pem"
    root_path.write_text(_pki.certificate_to_pem(root), encoding="ascii")
    devices = []
    for index in range(1, count + 1):
        name = f"profile-dev-{index:04d}"
        key = _pki.generate_private_key("ec-p256")
        leaf = _pki.sign_device_certificate(key.public_key(), name, inter, inter_key, 365)
        key_path, chain_path = directory / f"{name}.key.pem", directory / f"{name}.full-chain.cert.pem"
        with os.fdopen(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as key_file:
            key_file.write(_pki.private_key_to_pem(key))  # 0600 from the start, never readable by others
        chain_path.write_text("".join(_pki.certificate_to_pem(cert) for cert in (leaf, inter, root)), encoding="ascii")
        devices.append((name, key_path, chain_path))
    return root_path, devices


def cold_import_seconds(repeats: int) -> dict[str, float]:
    """Median wall time of a fresh interpreter: bare, and importing the dps_register module (what a task pays)."""
    env_path = str(REPO_ROOT / ".collections")

    def timed(code: str) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            subprocess.run(  # noqa: S603 - fixed argv
                [sys.executable, "-c", code], check=True, env={"PYTHONPATH": env_path}, capture_output=True
            )
            times.append(time.perf_counter() - started)
        return round(statistics.median(times), 3)

    return {"python_bare_s": timed("pass"), "python_import_dps_register_s": timed(f"import {MODULE}")}


def profile(count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="dps-profile-") as scratch:
        directory = Path(scratch)
        root_path, devices = make_devices(directory, count)
        enrollments = directory / "enrollments.yml"
        fleet.write_enrollments(enrollments, root_path)
        emulator = start_emulator(enrollments, directory / "dps", python=sys.executable, extra_args=["--quiet"])
        rows = []
        try:
            for name, key_path, chain_path in devices:
                slept: list[float] = []

                def sleep(seconds: float, slept: list[float] = slept) -> None:
                    slept.append(seconds)
                    time.sleep(seconds)

                client = _dps.DpsClient(
                    id_scope=fleet.ID_SCOPE,
                    registration_id=name,
                    transport=_http.urls_transport(
                        _dps.USER_AGENT,
                        client_cert=str(chain_path),
                        client_key=str(key_path),
                        ca_path=str(emulator.ca_cert),
                    ),
                    provisioning_host=f"{emulator.host}:{emulator.port}",
                    sleep=sleep,
                )
                started = time.perf_counter()
                lookup = client.status_lookup()
                after_lookup = time.perf_counter()
                operation = client.register()
                total = time.perf_counter() - started
                if operation.get("status") != "assigned":
                    raise SystemExit(f"{name}: not assigned: {operation}")
                rows.append(
                    {
                        "device": name,
                        "already_assigned": lookup is not None and lookup.get("status") == "assigned",
                        "total_s": round(total, 4),
                        "slept_s": round(sum(slept), 4),
                        "requests_s": round(total - sum(slept), 4),
                        "status_lookup_s": round(after_lookup - started, 4),
                        "requests": client.attempts,
                    }
                )
        finally:
            emulator.stop()
    return {
        "devices": rows,
        "median": {
            key: round(statistics.median(row[key] for row in rows), 4)
            for key in ("total_s", "slept_s", "requests_s", "status_lookup_s", "requests")
        },
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=20, help="devices registered one after another (default 20)")
    parser.add_argument("--out", type=Path, help="results JSON (default: print only)")
    args = parser.parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    load_before = measure.loadavg()
    results = {
        "schema": 1,
        "command": " ".join(["bench/dps_profile.py", *argv]),
        "started": started.isoformat(timespec="seconds"),
        "machine": measure.machine_description(),
        "emulator": {"retry_after_s": 3, "assignment_delay_s": 1.0},
        "load_before": load_before,
        "cold_start": cold_import_seconds(5),
        **profile(args.devices),
        "load_after": measure.loadavg(),
    }
    median = results["median"]
    cold = results["cold_start"]
    print(
        f"{args.devices} devices, one after another: per device {median['total_s']:.3f} s = "
        f"{median['slept_s']:.3f} s Retry-After + {median['requests_s']:.3f} s in {median['requests']:.0f} requests "
        f"(status lookup {median['status_lookup_s']:.3f} s); cold python {cold['python_bare_s']:.3f} s, "
        f"+ import dps_register {cold['python_import_dps_register_s']:.3f} s"
    )
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
