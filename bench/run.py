"""Fleet provisioning benchmark: the guides' openssl loop (A), community.crypto (B) and iotfleet.aziot (C).

One run provisions the same simulated fleet three ways, with the same key type, for every (key type, fleet
size, repeat) cell, and writes the measurements as JSON. See bench/README.md and docs/benchmarks.md.

    .venv/bin/python bench/run.py --sizes 10,150 --key-types ec-p256,rsa-4096 --repeats 3
    .venv/bin/python bench/run.py report bench/results/<file>.json     # the markdown tables

Hosts are simulated on the controller: `ansible_connection: local`, one directory tree per device
(`device_root`). With `--target podman` they are podman containers of the local Debian image instead, driven by
the podman connection; with `--target ssh` the same containers reached as real Pis are (SSH as `pi` on a loopback
port, sudo to root, the repo's ansible.cfg: pipelining and ControlPersist) - the connection cost users pay.
B and C run with the same ansible.cfg (the repo's), the same forks and `gather_facts: false`.

This file is the command line; bench/fleet.py runs a cell, bench/measure.py measures, bench/report.py reports.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

from bench import fleet
from bench.fleet import KEY_TYPES, REPO_ROOT, BenchError, progress, run_cell
from bench.measure import loadavg, machine_description
from bench.report import merge_results, report, summarise

# --- command line ------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,150", help="fleet sizes, comma separated (default 10,150)")
    parser.add_argument("--key-types", default="ec-p256,rsa-4096", help="ec-p256 and/or rsa-4096")
    parser.add_argument("--rsa-max-size", type=int, default=150, help="skip RSA cells above this size (default 150)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per (key type, size) cell (default 3)")
    parser.add_argument("--forks", type=int, default=10, help="Ansible forks for B and C (default 10)")
    parser.add_argument(
        "--methods",
        default="A,B,C",
        help="subset of A,B,C (default A,B,C), and H: the IoT Hub deployments and twin tag sync of provision.yml",
    )
    parser.add_argument("--no-dps", action="store_true", help="skip C's DPS phase (e.g. for a 1,000-device C run)")
    parser.add_argument(
        "--slices",
        type=int,
        default=1,
        help="run C's playbooks as N concurrent ansible-playbook processes with disjoint --limit, as AWX job "
        "slicing does (each with --forks forks); per-slice and total wall/CPU are recorded (default 1)",
    )
    parser.add_argument(
        "--target",
        choices=("local", "podman", "ssh"),
        default="local",
        help="simulated hosts on the controller (default), or one container per device driven by the podman "
        "connection or reached over SSH as pi with sudo",
    )
    parser.add_argument(
        "--image",
        default="localhost/iotfleet-debian:bookworm-amd64-prepared",
        help="container image for --target podman/ssh (make images builds it)",
    )
    parser.add_argument(
        "--name-prefix",
        default="bench-dev-",
        help="host (and container) names: PREFIX0001... (default bench-dev-); another prefix and --ssh-base-port "
        "keep a container run apart from one running at the same time",
    )
    parser.add_argument(
        "--ssh-base-port",
        type=int,
        default=fleet.SSH_BASE_PORT,
        help=f"--target ssh: device N listens on 127.0.0.1:PORT+N (default {fleet.SSH_BASE_PORT})",
    )
    parser.add_argument(
        "--dps-operations-per-minute",
        type=int,
        default=0,
        help="the DPS emulator's operations quota (DPS: 1000 a minute per instance; default 0 = none): a run at the "
        "quota shows its bound and the client's 429 handling; every phase records its DPS operations either way",
    )
    parser.add_argument("--profile", action="store_true", help="enable ansible.posix.profile_tasks for B and C")
    parser.add_argument("--out", type=Path, help="results JSON (default bench/results/<UTC time>.json)")
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / "build" / "bench", help="scratch directory")
    parser.add_argument("--keep", action="store_true", help="keep each cell's device trees and logs")
    args = parser.parse_args(argv)
    try:
        args.sizes = [int(size) for size in args.sizes.split(",") if size]
    except ValueError:
        parser.error(f"--sizes: expected comma-separated integers, got {args.sizes!r}")
    args.key_types = [key for key in args.key_types.split(",") if key]
    for key in args.key_types:
        if key not in KEY_TYPES:
            parser.error(f"--key-types: {key!r} is not one of {', '.join(KEY_TYPES)}")
    args.work_dir = args.work_dir.resolve()
    args.methods = [method for method in args.methods.split(",") if method]
    for method in args.methods:
        if method not in ("A", "B", "C", "H"):
            parser.error(f"--methods: {method!r} is not one of A, B, C, H")
    if "H" in args.methods and args.target != "local":
        parser.error("--methods H runs on the controller only (its devices are the emulator's): use --target local")
    if args.repeats < 1 or args.forks < 1 or not args.sizes or min(args.sizes) < 1:
        parser.error("--repeats, --forks and every size must be at least 1")
    if args.dps_operations_per_minute < 0:
        parser.error("--dps-operations-per-minute must be 0 (no quota) or more")
    if args.slices < 1 or args.slices > min(args.sizes):
        parser.error("--slices must be at least 1 and at most the smallest fleet size")
    return args


def write_results(out: Path, results: dict[str, Any], complete: bool) -> None:
    results["complete"] = complete
    results["summary"] = summarise(results["cells"])
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(out.name + ".tmp")
    temp.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    temp.replace(out)


def main(argv: list[str]) -> int:
    if argv[:1] == ["report"]:
        if len(argv) < 2:
            print("usage: run.py report <results.json>...", file=sys.stderr)
            return 2
        runs = [json.loads(Path(path).read_text(encoding="utf-8")) for path in argv[1:]]
        sys.stdout.write(report(merge_results(runs) if len(runs) > 1 else runs[0]))
        return 0
    args = parse_args(argv)
    fleet.SSH_BASE_PORT = args.ssh_base_port  # containers_for() and write_inventory() read it
    started = dt.datetime.now(dt.UTC)
    out = args.out or BENCH_DIR / "results" / f"{started:%Y%m%dT%H%M%SZ}.json"
    results: dict[str, Any] = {
        "schema": 1,
        "command": " ".join(["bench/run.py", *argv]),
        "started": started.isoformat(timespec="seconds"),
        "machine": machine_description(),
        "settings": {
            "forks": args.forks,
            "slices": args.slices,
            "repeats": args.repeats,
            "gather_facts": False,
            "target": args.target,
            "image": args.image if args.target != "local" else None,
            "ansible_cfg": {
                "local": "repo ansible.cfg (pipelining on; connection local for every host)",
                "podman": "repo ansible.cfg; containers.podman.podman connection (no pipelining in that plugin)",
                "ssh": "repo ansible.cfg; ssh as pi with sudo, pipelining on, ControlPersist 60s",
            }[args.target],
            # the quota only when set: a run without one has the settings of the runs before the quota existed
            "dps_emulator": {
                "retry_after_s": 3,
                "assignment_delay_s": 1.0,
                **({"operations_per_minute": args.dps_operations_per_minute} if args.dps_operations_per_minute else {}),
            },
            **(
                {
                    "iot_hub": "method H: inventory/demo's 2 cohorts and 3 deployments on the emulator's hub "
                    "(configuration_operations_per_minute 20); devices created with the hub API (PUT /devices) unless "
                    "C's DPS phase registered them, each twin given the other cohort's tags before the first run"
                }
                if "H" in args.methods
                else {}
            ),
            "memory": "peak_pss_tree_mib / peak_rss_tree_mib: summed PSS / RSS of the process tree sampled every "
            "0.2 s from /proc; "
            "max_rss_single_mib: wait4 ru_maxrss, the largest single process",
        },
        "load_start": loadavg(),
        "cells": [],
    }
    args.work_dir.mkdir(parents=True, exist_ok=True)
    try:
        for key_type in args.key_types:
            for size in args.sizes:
                if key_type.startswith("rsa") and size > args.rsa_max_size:
                    continue
                for repeat in range(1, args.repeats + 1):
                    results["cells"].append(run_cell(args, key_type, size, repeat, args.work_dir))
                    # Written after every cell: an interrupted run keeps what it measured ("complete": false).
                    write_results(out, results, complete=False)
    except BenchError as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return 1
    results["load_end"] = loadavg()
    results["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    write_results(out, results, complete=True)
    sys.stdout.write(report(results))
    progress(f"results written to {out}")
    bad = [
        f"{cell['key_type']} n={cell['size']} r{cell['repeat']}"
        for cell in results["cells"]
        if any(cell["phases"].get(phase, {}).get("rerun", {}).get("changed") for phase in ("C", "C_dps", "H"))
    ]
    if bad:
        print(f"bench: error: a C or H re-run reported changes (must be 0) in {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
