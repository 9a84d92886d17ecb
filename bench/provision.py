"""The whole playbooks/provision.yml as one benchmark cell: first run and re-run with nothing to do, controller CPU
seconds per device, tasks per device (the recap's ok=), changed, the load average before and after each run.

bench/run.py's method C times the certificate phase (bench/playbooks/method_c_collection.yml) and the DPS phase on
their own; a user runs provision.yml, which adds the inventory validation, the connection check, the CA check, the DPS
enrollment groups and individual enrollments, the DPS server CA on the device and the registration's own tasks. This
cell runs exactly that, on the simulated fleet of tests/support/fleet.py (`--target local`: one directory tree per
device, local connection, one enrollment group on the lab CA, the DPS emulator's device and service APIs) or on
containers reached over SSH as pi with sudo (`--target ssh`, the bench's SSH cell: the device paths are the roles'
defaults, the device packages checked as a user's run does).

    .venv/bin/python bench/provision.py --size 150 --out bench/results/<date>-provision-local-ec-p256-150.json
    .venv/bin/python bench/provision.py --target ssh --size 10 --out bench/results/<date>-provision-ssh-ec-p256-10.json

Each run records the DPS operations the emulator billed during it (`dps_operations`, bench/fleet.py's as for
bench/run.py's phases: total, per device, by kind, throttled, per calendar minute). `--dps-operations-per-minute N`
makes the emulator enforce DPS's operations quota (429 + Retry-After to the next minute); each run then also records
`quota_min_wall_s`, the least wall time the quota allows for the operations it made (about operations / N minutes;
in calendar minutes, quota_min_wall()): a wall time near it is the quota's bound, one far above it the controller's.

Exit code 1 when a run fails or the re-run reports a change (it must be 0). CPU seconds (user + sys of the
ansible-playbook process tree, bench/measure.py) are the figure to compare on a shared machine, not wall time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

from bench import fleet as bench_fleet
from bench.fleet import REPO_ROOT, dps_operations, host_names, podman_gateway, ssh_control_dir, start_containers
from bench.measure import loadavg, machine_description, parse_profile, parse_recap, run_measured
from bench.report import provision_report
from tests.support.emulator import start_dps_emulator
from tests.support.fleet import SimulatedFleet
from tests.support.playbook import clean_env
from tools.device_containers import stop

PROVISION = REPO_ROOT / "playbooks" / "provision.yml"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=150, help="devices (default 150)")
    parser.add_argument("--target", choices=("local", "ssh"), default="local")
    parser.add_argument("--repeats", type=int, default=1, help="cells, each a fresh fleet (default 1)")
    parser.add_argument("--forks", type=int, default=10)
    parser.add_argument("--profile", action="store_true", help="ansible.posix.profile_tasks (not a timed run)")
    parser.add_argument("--image", default="bookworm-amd64-prepared", help="--target ssh: the device image tag")
    parser.add_argument("--name-prefix", default="bench-prov-", help="host and container names")
    parser.add_argument("--ssh-base-port", type=int, default=2600, help="--target ssh: device N on PORT+N")
    parser.add_argument("--out", type=Path, help="results JSON (default bench/results/<UTC time>-provision.json)")
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / "build" / "bench-provision")
    parser.add_argument("--keep", action="store_true", help="keep the cell's fleet and logs")
    parser.add_argument(
        "--dps-operations-per-minute",
        type=int,
        default=0,
        help="the DPS emulator's operations quota (DPS: 1000 a minute per instance; default 0 = none); every run "
        "records its DPS operations either way",
    )
    args = parser.parse_args(argv)
    if args.size < 1 or args.repeats < 1 or args.forks < 1:
        parser.error("--size, --repeats and --forks must be at least 1")
    if args.dps_operations_per_minute < 0:
        parser.error("--dps-operations-per-minute must be 0 (no quota) or more")
    args.work_dir = args.work_dir.resolve()
    return args


def ssh_inventory_vars(simulated: SimulatedFleet, ssh_dir: Path) -> None:
    """The fleet reached as Pis are: SSH as pi, sudo to root, the roles' default device paths, packages checked."""
    group = simulated.group_vars
    for name in ("ansible_connection", "device_root", "device_identity_cert_dir", "device_identity_secrets_dir"):
        group.pop(name, None)
    group.pop("device_identity_install_dependencies")
    group.update(
        {
            "ansible_user": "pi",
            "ansible_become": True,
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_ssh_private_key_file": str(ssh_dir / "id_ed25519"),
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={ssh_dir / 'known_hosts'}",
            "dps_registration_client_cert": "/var/aziot/certs/device-id.full-chain.cert.pem",
            "dps_registration_client_key": "/var/aziot/secrets/device-id.key.pem",
            "dps_registration_server_ca_path": "/var/aziot/certs/dps-server-ca.pem",
        }
    )
    for device in bench_fleet.containers_for(simulated.hosts):
        simulated.host_vars[device.name] = {"ansible_host": device.address, "ansible_port": device.port}


def quota_timeout(size: int, quota: int) -> int:
    """dps_registration_timeout under a quota of `quota` operations a minute: a device refused (429) waits for the next
    minute, and when more devices wait than the quota admits it loses again; the last of `size` devices may wait
    ceil(size / quota) minutes. The fleet's 60 s (tests/support/fleet.py) covers one wait at most."""
    return 60 * (math.ceil(size / quota) + 1)


def quota_min_wall(operations: int, quota: int) -> int | None:
    """The least wall time, s, the quota allows for `operations` (None without a quota): DPS counts them per calendar
    minute, so they need ceil(operations / quota) minutes, i.e. waiting for all but the first minute's start - from
    the start of a minute; a run that starts inside one may end up to 60 s sooner. About operations / quota minutes at
    fleet scale; 0 when the quota's first minute takes them all. A wall time near it: the quota was the bound."""
    return (math.ceil(operations / quota) - 1) * 60 if quota and operations else (0 if quota else None)


def run_provision(
    simulated: SimulatedFleet, env: dict[str, str], forks: int, log: Path, emulator: Any, quota: int
) -> dict[str, Any]:
    inventory = simulated.write()
    argv = [str(bench_fleet.VENV_BIN / "ansible-playbook"), "-i", str(inventory), "-f", str(forks), str(PROVISION)]
    load_before = loadavg()
    emulator.reset_operations()  # this run's DPS operations, from zero
    result = run_measured(argv, log, env, REPO_ROOT)
    counted = dps_operations(emulator, len(simulated.hosts))
    text = log.read_text(encoding="utf-8", errors="replace")
    recap = parse_recap(text)
    hosts = recap["hosts"] or 1
    result.update(
        load_before=load_before,
        load_after=loadavg(),
        changed=recap["changed"],
        tasks_ok=recap["ok"],
        hosts=recap["hosts"],
        tasks_ok_per_device=round(recap["ok"] / hosts, 2),
        cpu_s_per_device=round((result["cpu_user_s"] + result["cpu_sys_s"]) / hosts, 3),
        dps_operations=counted,
        quota_min_wall_s=quota_min_wall(counted["total"], quota),
    )
    if "profile_tasks" in env.get("ANSIBLE_CALLBACKS_ENABLED", ""):
        result["profile"] = parse_profile(text)
    if result["rc"] != 0 or recap["failed"] or recap["unreachable"] or recap["hosts"] != len(simulated.hosts):
        raise RuntimeError(f"provision.yml failed (rc {result['rc']}, see {log}): {text[-3000:]}")
    return result


def run_cell(args: argparse.Namespace, repeat: int) -> dict[str, Any]:
    cell_dir = args.work_dir / f"{args.target}-{args.size}-r{repeat}"
    if cell_dir.exists():
        shutil.rmtree(cell_dir)
    cell_dir.mkdir(parents=True)
    hosts = host_names(args.size, args.name_prefix)
    simulated = SimulatedFleet(cell_dir, hosts)
    quota = args.dps_operations_per_minute
    if quota:
        simulated.group_vars["dps_registration_timeout"] = quota_timeout(args.size, quota)
    env = clean_env(ANSIBLE_FORKS=str(args.forks), ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0")
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    if args.profile:
        env.update(ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks", PROFILE_TASKS_TASK_OUTPUT_LIMIT="40")
    simulated.make_ca()  # playbooks/ca.yml, not timed
    control_dir = None
    host = "127.0.0.1"
    if args.target == "ssh":
        bench_fleet.SSH_BASE_PORT = args.ssh_base_port
        ssh_dir = cell_dir / "ssh"
        start_containers(hosts, args.image, ssh_dir)
        control_dir = ssh_control_dir()
        env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(control_dir)
        ssh_inventory_vars(simulated, ssh_dir)
        host = podman_gateway()
    cell: dict[str, Any] = {"target": args.target, "size": args.size, "repeat": repeat, "key_type": "ec-p256"}
    try:
        config = simulated.emulator_config()
        config["defaults"]["operations_per_minute"] = quota
        emulator = start_dps_emulator(cell_dir / "dps", config, host=host, extra_args=["--quiet"])
        try:
            simulated.use_emulator(emulator)
            for tag in ("first", "rerun"):
                log = cell_dir / f"provision-{tag}.log"
                cell[tag] = run_provision(simulated, env, args.forks, log, emulator, quota)
                counted = cell[tag]["dps_operations"]
                print(
                    f"  {args.target} n={args.size} r{repeat} {tag}: {cell[tag]['wall_s']:.1f}s "
                    + (f"(the quota allows {cell[tag]['quota_min_wall_s']}s) " if quota else "")
                    + f"cpu/device {cell[tag]['cpu_s_per_device']} ok/device {cell[tag]['tasks_ok_per_device']} "
                    f"changed={cell[tag]['changed']} dps ops {counted['total']} ({counted['by_kind']}) "
                    f"throttled {counted['throttled']} load {cell[tag]['load_before']}",
                    file=sys.stderr,
                    flush=True,
                )
            cell["registered_devices"] = len(emulator.devices())
        finally:
            emulator.stop()
    finally:
        if args.target == "ssh" and not args.keep:
            stop(hosts)
        if control_dir is not None:
            shutil.rmtree(control_dir, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(cell_dir)
    return cell


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    out = args.out or BENCH_DIR / "results" / f"{started:%Y%m%dT%H%M%SZ}-provision.json"
    results: dict[str, Any] = {
        "schema": 1,
        "command": " ".join(["bench/provision.py", *argv]),
        "started": started.isoformat(timespec="seconds"),
        "machine": machine_description(),
        "settings": {
            "playbook": "playbooks/provision.yml",
            "target": args.target,
            "forks": args.forks,
            "inventory": "tests/support/fleet.py SimulatedFleet (one enrollment group, lab CA from playbooks/ca.yml)"
            + ("; SSH as pi with sudo, pipelining, ControlPersist" if args.target == "ssh" else "; local connection"),
            "cpu": "cpu_user_s + cpu_sys_s of the ansible-playbook process tree (wait4), per device in the recap",
            "dps_emulator": {"operations_per_minute": args.dps_operations_per_minute},  # 0: no quota
            **(
                {"dps_registration_timeout": quota_timeout(args.size, args.dps_operations_per_minute)}
                if args.dps_operations_per_minute
                else {}
            ),
        },
        "load_start": loadavg(),
        "cells": [],
    }
    failed = False
    try:
        for repeat in range(1, args.repeats + 1):
            results["cells"].append(run_cell(args, repeat))
    except RuntimeError as error:
        print(f"bench/provision.py: error: {error}", file=sys.stderr)
        failed = True
    results["load_end"] = loadavg()
    results["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    results["complete"] = not failed
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    sys.stdout.write(provision_report(results))
    print(f"results written to {out}", file=sys.stderr)
    if any(cell["rerun"]["changed"] for cell in results["cells"]):
        print("bench/provision.py: error: a re-run reported changes (must be 0)", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
