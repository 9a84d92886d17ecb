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
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PLAYBOOKS = BENCH_DIR / "playbooks"
VENV_BIN = Path(sys.executable).parent
ID_SCOPE = "0ne00BENCH1"
KEY_TYPES = ("ec-p256", "rsa-4096")
PHASES = ("A", "B", "C", "C_dps")
RECAP_RE = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)\s+"
    r"failed=(?P<failed>\d+)"
)
PROFILE_RE = re.compile(r"^(?P<task>.+?) -{3,} (?P<seconds>\d+\.\d+)s$")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

sys.path.insert(0, str(REPO_ROOT))
from tools.device_containers import Device, DeviceError, podman, podman_env, start, stop


class BenchError(Exception):
    """A phase failed: the harness stops with this message."""


# --- measurement -------------------------------------------------------------------------------------------


class TreeMemorySampler(threading.Thread):
    """Samples the summed RSS of a process and all its descendants from /proc every `interval` seconds."""

    def __init__(self, root_pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.root_pid = root_pid
        self.interval = interval
        self.peak_bytes = 0
        self.peak_pss_bytes = 0
        self.peak_processes = 0
        self.samples = 0
        self._stop_event = threading.Event()

    @staticmethod
    def _snapshot() -> dict[int, tuple[int, int]]:
        """pid -> (ppid, rss bytes) for every readable process."""
        table: dict[int, tuple[int, int]] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as stat_file:
                    stat = stat_file.read()
            except OSError:
                continue
            # Fields after the command name (which may hold spaces) start after the last ')'.
            fields = stat[stat.rfind(b")") + 2 :].split()
            table[int(entry.name)] = (int(fields[1]), int(fields[21]) * PAGE_SIZE)
        return table

    @staticmethod
    def _pss(pid: int) -> int:
        """Proportional set size: forked workers' shared copy-on-write pages counted once over the tree."""
        try:
            with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
                for line in rollup:
                    if line.startswith(b"Pss:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        return 0

    def sample(self) -> None:
        table = self._snapshot()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _rss) in table.items():
            children.setdefault(ppid, []).append(pid)
        total, pss, count, todo = 0, 0, 0, [self.root_pid]
        while todo:
            pid = todo.pop()
            if pid in table:
                total += table[pid][1]
                pss += self._pss(pid)
                count += 1
            todo.extend(children.get(pid, ()))
        self.samples += 1
        self.peak_bytes = max(self.peak_bytes, total)
        self.peak_pss_bytes = max(self.peak_pss_bytes, pss)
        self.peak_processes = max(self.peak_processes, count)

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def run_measured(argv: list[str], log_path: Path, env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Run `argv`, output to `log_path`; wall time, peak tree RSS, max single-process RSS, CPU seconds."""
    with log_path.open("wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)  # noqa: S603
        sampler = TreeMemorySampler(process.pid)
        sampler.start()
        try:
            _pid, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.send_signal(signal.SIGTERM)
            process.wait()
            raise
        finally:
            wall = time.perf_counter() - started
            sampler.stop()
        process.returncode = os.waitstatus_to_exitcode(status)
    return {
        "wall_s": round(wall, 3),
        "rc": process.returncode,
        # Sum of RSS over ansible-playbook and every descendant, sampled every 0.2 s (short spikes can be missed).
        "peak_rss_tree_mib": round(sampler.peak_bytes / 2**20, 1),
        # The same tree, proportional set size: shared pages split between the processes sharing them.
        "peak_pss_tree_mib": round(sampler.peak_pss_bytes / 2**20, 1),
        "peak_processes": sampler.peak_processes,
        # ru_maxrss from wait4: the largest RSS of any single process in the tree (Linux: KiB).
        "max_rss_single_mib": round(usage.ru_maxrss / 1024, 1),
        # CPU of the whole tree (children are reaped by their parents, so their time is included).
        "cpu_user_s": round(usage.ru_utime, 2),
        "cpu_sys_s": round(usage.ru_stime, 2),
    }


def parse_recap(log_text: str) -> dict[str, int]:
    totals = {"hosts": 0, "ok": 0, "changed": 0, "unreachable": 0, "failed": 0}
    recap = log_text.rsplit("PLAY RECAP", 1)[-1] if "PLAY RECAP" in log_text else ""
    for line in recap.splitlines():
        match = RECAP_RE.match(line.strip())
        if match:
            totals["hosts"] += 1
            for key in ("ok", "changed", "unreachable", "failed"):
                totals[key] += int(match.group(key))
    return totals


def parse_profile(log_text: str) -> list[dict[str, Any]]:
    """The per-task summary ansible.posix.profile_tasks prints at the end (slowest first)."""
    tail = log_text.rsplit("PLAY RECAP", 1)[-1]
    rows = []
    for line in tail.splitlines():
        match = PROFILE_RE.match(line.strip())
        if match:
            rows.append({"task": match.group("task").strip(), "s": float(match.group("seconds"))})
    return rows


def loadavg() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


# --- fleet setup -------------------------------------------------------------------------------------------


def host_names(size: int, prefix: str = "bench-dev-") -> list[str]:
    width = max(4, len(str(size)))
    return [f"{prefix}{index:0{width}d}" for index in range(1, size + 1)]


def write_inventory(path: Path, hosts: list[str], devices_dir: Path, target: str, ssh_dir: Path | None = None) -> None:
    """YAML inventory, group `fleet`: local hosts with their own device_root, or one container per device."""
    lines = ["---", "fleet:", "  vars:"]
    if target == "podman":
        # One container per device; each method writes under its own root inside it (devices_dir).
        lines.append("    ansible_connection: containers.podman.podman")
    elif target == "ssh":
        # As inventory/example reaches a Pi: SSH as pi, sudo to root; the run's own key and known_hosts.
        lines.append("    ansible_user: pi")
        lines.append("    ansible_become: true")
        lines.append(f"    ansible_ssh_private_key_file: {json.dumps(str(ssh_dir / 'id_ed25519'))}")
        lines.append(
            f"    ansible_ssh_common_args: {json.dumps('-o UserKnownHostsFile=' + str(ssh_dir / 'known_hosts'))}"
        )
    if target in ("podman", "ssh"):
        lines.append("    ansible_python_interpreter: /usr/bin/python3")
        lines.append(f"    device_root: {json.dumps(str(devices_dir))}")
        lines.append("  hosts:")
        for device in containers_for(hosts):
            # The podman connection finds the container by its name, the inventory name.
            address = f" {{ansible_host: {device.address}, ansible_port: {device.port}}}" if target == "ssh" else ""
            lines.append(f"    {device.name}:{address}")
    else:
        lines.append("    ansible_connection: local")
        lines.append(f"    ansible_python_interpreter: {json.dumps(sys.executable)}")
        lines.append("  hosts:")
        for host in hosts:
            lines.append(f"    {host}:")
            lines.append(f"      device_root: {json.dumps(str(devices_dir / host))}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --- container targets (podman connection or SSH) -------------------------------------------------------------

PODMAN_ROOT = Path("/bench")  # inside each container: /bench/A, /bench/B, /bench/C
SSH_BASE_PORT = 2400  # --target ssh: device N listens on 127.0.0.1:SSH_BASE_PORT+N (--ssh-base-port)


def containers_for(hosts: list[str], image: str = "bookworm-amd64-prepared") -> list[Device]:
    return [Device(host, SSH_BASE_PORT + index, image) for index, host in enumerate(hosts, start=1)]


def start_containers(hosts: list[str], image: str, ssh_dir: Path) -> list[Device]:
    """A fresh container per device (not timed), reachable over SSH; --target podman ignores the SSH side."""
    devices = containers_for(hosts, image)
    stop(hosts)
    try:
        start(devices, ssh_dir)
    except DeviceError as error:
        raise BenchError(str(error)) from None
    return devices


def push_to_containers(hosts: list[str], dps_ca: Path) -> None:
    """/etc/aziot under C's root (as after installing the aziot packages) and the emulator's CA (not timed)."""
    ca = dps_ca.read_text(encoding="utf-8")
    for host in hosts:
        script = f"mkdir -p {PODMAN_ROOT}/C/etc/aziot && cat > {PODMAN_ROOT}/dps-ca.pem"
        result = subprocess.run(  # noqa: S603
            ["podman", "exec", "-i", host, "sh", "-c", script],  # noqa: S607
            input=ca,
            capture_output=True,
            text=True,
            env=podman_env(),
            check=False,
        )
        if result.returncode != 0:
            raise BenchError(f"preparing container {host} failed: {result.stderr[-500:]}")


def podman_gateway() -> str:
    """The host's address on podman's default bridge: where the containers reach the DPS emulator. It exists only
    while a container runs on the bridge: start the containers first."""
    data = json.loads(podman("network", "inspect", "podman").stdout)
    return data[0]["subnets"][0]["gateway"]


# sun_path holds 108 bytes with its NUL; stay below 100 so that a longer %C or temporary suffix still fits.
SSH_SOCKET_PATH_MAX = 100


def ssh_control_dir() -> Path:
    """This run's directory of SSH ControlMaster sockets: short and under /tmp, never under the checkout.

    A socket path must fit in sun_path (108 bytes) whatever the checkout's path, and ssh appends '.' and 16
    random characters to it while it creates the socket: /tmp/iotf.XXXXXXXX/<40 hex>.<16> is 76 bytes.
    """
    return Path(tempfile.mkdtemp(prefix="iotf.", dir="/tmp"))


def ssh_control_path(control_dir: Path) -> str:
    """ssh's ControlPath in `control_dir`: %C, the 40-character hash of the connection (host, port, user)."""
    return f"{control_dir}/%C"


def ssh_config(path: Path, devices: list[Device], ssh_dir: Path, control_dir: Path) -> Path:
    """An ssh_config naming each device, for method A's ssh loop (same key, known_hosts and ControlPersist; the
    sockets in `control_dir`, from ssh_control_dir())."""
    lines = []
    for device in devices:
        lines += [
            f"Host {device.name}",
            f"  HostName {device.address}",
            f"  Port {device.port}",
            "  User pi",
            f"  IdentityFile {ssh_dir / 'id_ed25519'}",
            f"  UserKnownHostsFile {ssh_dir / 'known_hosts'}",
            "  StrictHostKeyChecking accept-new",
            "  ControlMaster auto",
            "  ControlPersist 60s",
            f"  ControlPath {ssh_control_path(control_dir)}",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def ansible_env(forks: int, profile: bool) -> dict[str, str]:
    env = podman_env()  # the podman connection plugin and method A's podman exec run podman too
    env.update(
        {
            "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
            "ANSIBLE_FORKS": str(forks),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    if profile:
        env["ANSIBLE_CALLBACKS_ENABLED"] = "ansible.posix.profile_tasks"
        env["PROFILE_TASKS_TASK_OUTPUT_LIMIT"] = "30"
    return env


def make_ca(ca_dir: Path, key_type: str, env: dict[str, str]) -> None:
    """Root + intermediate CA with iotfleet.aziot.x509_ca (not timed; shared by A, B and C)."""
    argv = [
        str(VENV_BIN / "ansible"),
        "localhost",
        "-m",
        "iotfleet.aziot.x509_ca",
        "-a",
        json.dumps({"path": str(ca_dir), "key_type": key_type}),
    ]
    result = subprocess.run(argv, env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise BenchError(f"creating the bench CA in {ca_dir} failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")


def write_enrollments(path: Path, root_ca: Path) -> None:
    """Emulator enrollment file: one verified X.509 group on the bench root CA, the emulator's DPS defaults."""
    path.write_text(
        "---\n"
        f"id_scope: {ID_SCOPE}\n"
        "linked_hubs: [bench-hub.azure-devices.net]\n"
        "defaults:\n"
        "  assignment_delay: 1.0\n"
        "  retry_after: 3\n"
        "  rate_limit_per_minute: 0\n"
        "enrollment_groups:\n"
        "  - name: bench-x509\n"
        "    attestation: x509\n"
        f"    ca_cert: {json.dumps(str(root_ca))}\n"
        "    verified: true\n",
        encoding="utf-8",
    )


# --- phases ------------------------------------------------------------------------------------------------


def run_phase_a(
    cell_dir: Path, hosts: list[str], key_type: str, ca_dir: Path, env: dict[str, str], tag: str, target: str
) -> dict[str, Any]:
    devices = cell_dir / "A"
    devices.mkdir(exist_ok=True)
    log = cell_dir / f"A-{tag}.log"
    if target == "podman":
        script, where = "method_a_remote.sh", ["podman", str(devices), str(PODMAN_ROOT / "A")]
    elif target == "ssh":
        where = [f"ssh:{cell_dir / 'ssh_config'}", str(devices), str(PODMAN_ROOT / "A")]
        script = "method_a_remote.sh"
    else:
        script, where = "method_a_openssl.sh", [str(devices)]
    argv = ["bash", str(BENCH_DIR / script), key_type, str(ca_dir), *where, *hosts]
    result = run_measured(argv, log, env, REPO_ROOT)
    text = log.read_text(encoding="utf-8", errors="replace")
    if result["rc"] != 0:
        raise BenchError(f"method A ({tag}) exited {result['rc']}: {text[-2000:]}")
    match = re.search(r"^changed=(\d+)$", text, re.MULTILINE)
    result["changed"] = int(match.group(1)) if match else None
    return result


def run_playbook(
    name: str,
    playbook: Path,
    inventory: Path,
    extra: dict[str, Any],
    env: dict[str, str],
    forks: int,
    log: Path,
    more_args: list[str] | None = None,
) -> dict[str, Any]:
    argv = [
        str(VENV_BIN / "ansible-playbook"),
        "-i",
        str(inventory),
        "-f",
        str(forks),
        "-e",
        json.dumps(extra),
        *(more_args or []),
        str(playbook),
    ]
    result = run_measured(argv, log, env, REPO_ROOT)
    text = log.read_text(encoding="utf-8", errors="replace")
    recap = parse_recap(text)
    result.update(changed=recap["changed"], tasks_ok=recap["ok"], hosts=recap["hosts"])
    if result["rc"] != 0 or recap["failed"] or recap["unreachable"]:
        raise BenchError(f"{name} failed (rc {result['rc']}, see {log}): {text[-3000:]}")
    if "profile_tasks" in env.get("ANSIBLE_CALLBACKS_ENABLED", ""):
        result["profile"] = parse_profile(text)
    return result


def slice_hosts(hosts: list[str], slices: int) -> list[list[str]]:
    """AWX job slicing: slice k (0-based) of `slices` runs hosts[k::slices] of the sorted inventory."""
    ordered = sorted(hosts)
    return [ordered[index::slices] for index in range(slices)]


def run_playbook_sliced(
    name: str,
    playbook: Path,
    inventory: Path,
    extra: dict[str, Any],
    env: dict[str, str],
    forks: int,
    log: Path,
    hosts: list[str],
    slices: int,
) -> dict[str, Any]:
    """`playbook` as `slices` concurrent ansible-playbook processes with disjoint --limit (AWX job slicing), each
    with `forks` forks (a slice is a job of its own). Per slice: what run_playbook measures. Total: wall from the
    first start to the last end, CPU and changed summed, memory peaks summed (an upper bound: they need not
    coincide)."""
    if slices == 1:
        return run_playbook(name, playbook, inventory, extra, env, forks, log)
    results: list[dict[str, Any] | BaseException | None] = [None] * slices
    parts = slice_hosts(hosts, slices)

    def one(index: int) -> None:
        limit = log.with_name(f"{log.stem}-slice{index + 1}.limit")
        limit.write_text("\n".join(parts[index]) + "\n", encoding="utf-8")
        slice_extra = ["--limit", f"@{limit}"]
        try:
            results[index] = run_playbook(
                f"{name} slice {index + 1}/{slices}",
                playbook,
                inventory,
                extra,
                env,
                forks,
                log.with_name(f"{log.stem}-slice{index + 1}.log"),
                slice_extra,
            )
        except BaseException as error:  # reported below, after every slice ended
            results[index] = error

    started = time.perf_counter()
    threads = [threading.Thread(target=one, args=(index,)) for index in range(slices)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    for result in results:
        if isinstance(result, BaseException):
            raise result
    per_slice = [result for result in results if isinstance(result, dict)]
    total: dict[str, Any] = {
        "wall_s": round(wall, 3),
        "rc": max(result["rc"] for result in per_slice),
        "changed": sum(result["changed"] for result in per_slice),
        "tasks_ok": sum(result["tasks_ok"] for result in per_slice),
        "hosts": sum(result["hosts"] for result in per_slice),
        "cpu_user_s": round(sum(result["cpu_user_s"] for result in per_slice), 2),
        "cpu_sys_s": round(sum(result["cpu_sys_s"] for result in per_slice), 2),
        "peak_rss_tree_mib": round(sum(result["peak_rss_tree_mib"] for result in per_slice), 1),
        "peak_pss_tree_mib": round(sum(result["peak_pss_tree_mib"] for result in per_slice), 1),
        "peak_processes": sum(result["peak_processes"] for result in per_slice),
        "max_rss_single_mib": max(result["max_rss_single_mib"] for result in per_slice),
        "slices": [
            {"hosts": len(part), **{key: result[key] for key in SLICE_FIELDS}}
            for part, result in zip(parts, per_slice, strict=True)
        ],
    }
    return total


SLICE_FIELDS = ("wall_s", "cpu_user_s", "cpu_sys_s", "changed", "peak_pss_tree_mib", "max_rss_single_mib")


def start_cell(
    args: argparse.Namespace,
    cell_dir: Path,
    hosts: list[str],
    enrollments: Path,
    ssh_dir: Path,
    control_dir: Path | None,
) -> Any:
    """Start the cell's containers (a container target) and then its DPS emulator; return the emulator."""
    from dps_emulator.testing import EmulatorStartError, start_emulator

    container_target = args.target in ("podman", "ssh")
    if container_target:
        # Containers first: the emulator listens on the podman bridge, which has no address before they run.
        devices = start_containers(hosts, args.image.rpartition(":")[2], ssh_dir)
        if control_dir is not None:
            ssh_config(cell_dir / "ssh_config", devices, ssh_dir, control_dir)
    try:
        return start_emulator(
            enrollments,
            cell_dir / "dps",
            host=podman_gateway() if container_target else "127.0.0.1",
            python=sys.executable,
            extra_args=["--quiet"],
        )
    except EmulatorStartError as error:
        if container_target and not args.keep:
            stop(hosts)
        raise BenchError(f"the DPS emulator did not start: {error}") from error


def run_cell(args: argparse.Namespace, key_type: str, size: int, repeat: int, work: Path) -> dict[str, Any]:
    cell_dir = work / f"{key_type}-{size}-r{repeat}"
    if cell_dir.exists():
        shutil.rmtree(cell_dir)
    cell_dir.mkdir(parents=True)
    env = ansible_env(args.forks, args.profile)
    hosts = host_names(size, args.name_prefix)
    ca_dir = cell_dir / "ca"
    make_ca(ca_dir, key_type, env)
    inventories = {}
    container_target = args.target in ("podman", "ssh")
    ssh_dir = cell_dir / "ssh"
    for method in ("B", "C"):
        (cell_dir / method).mkdir()
        inventories[method] = cell_dir / f"inventory-{method}.yml"
        root = PODMAN_ROOT / method if container_target else cell_dir / method
        write_inventory(inventories[method], hosts, root, args.target, ssh_dir)
    if not container_target:
        for host in hosts:  # /etc/aziot comes with the aziot packages on a device (not timed)
            (cell_dir / "C" / host / "etc" / "aziot").mkdir(parents=True)
    enrollments = cell_dir / "enrollments.yml"
    write_enrollments(enrollments, ca_dir / "root-ca.cert.pem")
    cell: dict[str, Any] = {
        "key_type": key_type,
        "size": size,
        "repeat": repeat,
        "target": args.target,
        "load_before": loadavg(),
    }
    phases: dict[str, dict[str, Any]] = {}
    control_dir = ssh_control_dir() if args.target == "ssh" else None
    if control_dir is not None:
        env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(control_dir)  # Ansible's own ControlPath (%(directory)s/<hash>)
    try:
        emulator = start_cell(args, cell_dir, hosts, enrollments, ssh_dir, control_dir)
    except BaseException:
        if control_dir is not None:
            shutil.rmtree(control_dir, ignore_errors=True)
        raise
    try:
        if container_target:
            push_to_containers(hosts, Path(emulator.ca_cert))
        b_extra = {"bench_ca_dir": str(ca_dir), "bench_key_type": key_type}
        c_extra = {**b_extra, "bench_dps_endpoint": emulator.url + "/", "bench_id_scope": ID_SCOPE}
        dps_extra = {
            "bench_dps_host": f"{emulator.host}:{emulator.port}",
            "bench_id_scope": ID_SCOPE,
            "bench_dps_ca": str(PODMAN_ROOT / "dps-ca.pem") if container_target else str(emulator.ca_cert),
        }
        pb = PLAYBOOKS
        for tag in ("first", "rerun"):
            if "A" in args.methods:
                phases.setdefault("A", {})[tag] = run_phase_a(cell_dir, hosts, key_type, ca_dir, env, tag, args.target)
            if "B" in args.methods:
                phases.setdefault("B", {})[tag] = run_playbook(
                    "method B",
                    pb / "method_b_community_crypto.yml",
                    inventories["B"],
                    b_extra,
                    env,
                    args.forks,
                    cell_dir / f"B-{tag}.log",
                )
            if "C" in args.methods:
                phases.setdefault("C", {})[tag] = run_playbook_sliced(
                    "method C",
                    pb / "method_c_collection.yml",
                    inventories["C"],
                    c_extra,
                    env,
                    args.forks,
                    cell_dir / f"C-{tag}.log",
                    hosts,
                    args.slices,
                )
            if "C" in args.methods and not args.no_dps:
                dps = run_playbook_sliced(
                    "method C DPS phase",
                    pb / "method_c_dps.yml",
                    inventories["C"],
                    dps_extra,
                    env,
                    args.forks,
                    cell_dir / f"C_dps-{tag}.log",
                    hosts,
                    args.slices,
                )
                dps["devices_per_min"] = round(size * 60 / dps["wall_s"], 1)
                phases.setdefault("C_dps", {})[tag] = dps
            progress(
                f"  {key_type} n={size} r{repeat} {tag}: "
                + ", ".join(
                    f"{name} {phase[tag]['wall_s']:.1f}s ch={phase[tag]['changed']}" for name, phase in phases.items()
                )
            )
        if "C" in args.methods and not args.no_dps:
            registered = len(emulator.devices())
            phases["C_dps"]["registered_devices"] = registered
            if registered != size:
                raise BenchError(f"the DPS emulator shows {registered} devices, expected {size}")
    finally:
        emulator.stop()
        if container_target and not args.keep:
            stop(hosts)
        if control_dir is not None:
            shutil.rmtree(control_dir, ignore_errors=True)
    cell["load_after"] = loadavg()
    cell["phases"] = phases
    cell["ratios"] = cell_ratios(phases)
    if not args.keep:
        shutil.rmtree(cell_dir)
    return cell


def ratio(numerator: dict[str, Any] | None, denominator: dict[str, Any] | None) -> float | None:
    if not numerator or not denominator or not denominator["wall_s"]:
        return None
    return round(numerator["wall_s"] / denominator["wall_s"], 3)


def cell_ratios(phases: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Ratios from the same cell (pair by pair): < 1 means C took less wall time."""
    a, b, c = phases.get("A", {}), phases.get("B", {}), phases.get("C", {})
    return {
        "C/A_first": ratio(c.get("first"), a.get("first")),
        "C/B_first": ratio(c.get("first"), b.get("first")),
        "C/A_rerun": ratio(c.get("rerun"), a.get("rerun")),
        "C/B_rerun": ratio(c.get("rerun"), b.get("rerun")),
        "C_rerun/C_first": ratio(c.get("rerun"), c.get("first")),
        "B_rerun/B_first": ratio(b.get("rerun"), b.get("first")),
    }


# --- summary and report -------------------------------------------------------------------------------------


def median(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return round(statistics.median(present), 3) if present else None


def summarise(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for cell in cells:
        groups.setdefault((cell["key_type"], cell["size"]), []).append(cell)
    summary = []
    for (key_type, size), group in groups.items():
        row: dict[str, Any] = {"key_type": key_type, "size": size, "runs": len(group)}
        for phase in PHASES:
            for tag in ("first", "rerun"):
                runs = [cell["phases"][phase][tag] for cell in group if phase in cell["phases"]]
                if not runs:
                    continue
                for metric in ("wall_s", "peak_rss_tree_mib", "peak_pss_tree_mib", "max_rss_single_mib"):
                    row[f"{phase}_{tag}_{metric}"] = median([run[metric] for run in runs])
                row[f"{phase}_{tag}_changed_max"] = max(run["changed"] or 0 for run in runs)
                if phase == "C_dps":
                    row[f"{phase}_{tag}_devices_per_min"] = median([run["devices_per_min"] for run in runs])
        for name in group[0]["ratios"]:
            row[f"ratio {name}"] = median([cell["ratios"][name] for cell in group])
        summary.append(row)
    return summary


def machine_description() -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="utf-8") as meminfo:
        mem_kib = int(meminfo.readline().split()[1])

    def version(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
        except OSError:
            return "unknown"
        return (out.stdout or out.stderr).splitlines()[0].strip() if (out.stdout or out.stderr) else "unknown"

    import cryptography

    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "ansible_core": version([str(VENV_BIN / "ansible"), "--version"]),
        "openssl": version(["openssl", "version"]),
        "cryptography": cryptography.__version__,
    }


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def report(results: dict[str, Any]) -> str:
    """Markdown tables of the medians and the per-run ratios."""
    out = []
    settings = results["settings"]
    out.append(f"Command: `{results['command']}`  ")
    out.append(
        f"Started {results['started']}, finished {results.get('finished', '?')}; forks {settings['forks']}, "
        f"{settings.get('slices', 1)} slice(s), {settings['repeats']} repeat(s) per cell.  "
    )
    machine = results["machine"]
    out.append(
        f"Machine: {machine['cpu']}, {machine['cpus']} CPUs, {machine['memory_gib']} GiB, Linux "
        f"{machine['kernel']}, Python {machine['python']}, {machine['ansible_core']}, {machine['openssl']}, "
        f"cryptography {machine['cryptography']}.  "
    )
    if settings.get("target") in ("podman", "ssh"):
        out.append(f"Hosts: one container per device ({settings['image']}), {settings['ansible_cfg']}.  ")
    out.append(f"Load average (1/5/15 min) at start {results['load_start']}, at end {results.get('load_end')}.")
    if not results.get("complete", True):
        out.append("")
        out.append("**Incomplete run**: interrupted after the cells listed below.")
    out.append("")
    out.append(
        "Wall time, seconds (median of the repeats); `re` = re-run with nothing to do, `ch` = its changed count "
        "(max over the repeats)."
    )
    out.append("")
    out.append(
        "| key | N | A first | B first | C first | A re | B re (ch) | C re (ch) | C DPS first | DPS dev/min "
        "| DPS re (ch) |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in results["summary"]:
        g = row.get
        out.append(
            f"| {row['key_type']} | {row['size']} | {fmt(g('A_first_wall_s'))} | {fmt(g('B_first_wall_s'))} | "
            f"{fmt(g('C_first_wall_s'))} | {fmt(g('A_rerun_wall_s'))} | {fmt(g('B_rerun_wall_s'))} "
            f"({fmt(g('B_rerun_changed_max'))}) | {fmt(g('C_rerun_wall_s'))} ({fmt(g('C_rerun_changed_max'))}) | "
            f"{fmt(g('C_dps_first_wall_s'))} | {fmt(g('C_dps_first_devices_per_min'))} | "
            f"{fmt(g('C_dps_rerun_wall_s'))} ({fmt(g('C_dps_rerun_changed_max'))}) |"
        )
    out.append("")
    out.append("Ratios, computed pair by pair inside each run, then the median over the repeats (< 1: C is faster).")
    out.append("")
    out.append("| key | N | C/A first | C/B first | C/A re | C/B re | C re / C first | B re / B first |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in results["summary"]:
        out.append(
            f"| {row['key_type']} | {row['size']} | {fmt(row.get('ratio C/A_first'), 2)} | "
            f"{fmt(row.get('ratio C/B_first'), 2)} | {fmt(row.get('ratio C/A_rerun'), 2)} | "
            f"{fmt(row.get('ratio C/B_rerun'), 2)} | {fmt(row.get('ratio C_rerun/C_first'), 2)} | "
            f"{fmt(row.get('ratio B_rerun/B_first'), 2)} |"
        )
    out.append("")
    out.append(
        "Controller peak memory, MiB (median), sampled every 0.2 s over ansible-playbook and all its "
        "descendants: summed PSS (shared pages counted once) / summed RSS (shared pages counted in every "
        "process) / the largest single process (wait4 ru_maxrss)."
    )
    out.append("")
    out.append("| key | N | A first | B first | C first | C re | C DPS first |")
    out.append("|---|---:|---:|---:|---:|---:|---:|")
    for row in results["summary"]:
        cells = []
        for name in ("A_first", "B_first", "C_first", "C_rerun", "C_dps_first"):
            cells.append(
                f"{fmt(row.get(name + '_peak_pss_tree_mib'), 0)} / {fmt(row.get(name + '_peak_rss_tree_mib'), 0)} / "
                f"{fmt(row.get(name + '_max_rss_single_mib'), 0)}"
            )
        out.append(f"| {row['key_type']} | {row['size']} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("Every run (wall s; ratios of that run):")
    out.append("")
    out.append("| key | N | rep | A | B | C | A re | B re | C re | DPS | DPS re | C/A | C/B | C/B re | load 1 min |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for cell in results["cells"]:
        p = cell["phases"]
        r = cell["ratios"]
        w = functools.partial(wall_of, p)
        out.append(
            f"| {cell['key_type']} | {cell['size']} | {cell['repeat']} | {w('A', 'first')} | {w('B', 'first')} | "
            f"{w('C', 'first')} | {w('A', 'rerun')} | {w('B', 'rerun')} | {w('C', 'rerun')} | {w('C_dps', 'first')} | "
            f"{w('C_dps', 'rerun')} | {fmt(r['C/A_first'], 2)} | {fmt(r['C/B_first'], 2)} | {fmt(r['C/B_rerun'], 2)} | "
            f"{cell['load_before'][0]} → {cell['load_after'][0]} |"
        )
    out.extend(cpu_report(results["cells"]))
    out.extend(slices_report(results["cells"]))
    rows = scaling(results["cells"])
    if rows:
        out.append("")
        out.append(
            "Scaling of C, pair by pair inside each run: wall time at N over wall time at the smallest N of the "
            "same key type and repeat (issue 6: 1,000 devices in <= 7.5x the 150-device time)."
        )
        out.append("")
        out.append("| key | N / base N | phase | per run: base s → N s = ratio | median |")
        out.append("|---|---|---|---|---:|")
        for row in rows:
            per_run = "; ".join(
                f"{run}: {fmt(base)} → {fmt(wall)} = {fmt(value, 2)}" for run, base, wall, value in row["per_run"]
            )
            out.append(
                f"| {row['key_type']} | {row['size']} / {row['base_size']} | {row['tag']} | {per_run} | "
                f"{fmt(row['median'], 2)} |"
            )
    return "\n".join(out) + "\n"


def cpu_of(run: dict[str, Any]) -> float:
    return run["cpu_user_s"] + run["cpu_sys_s"]


def cpu_report(cells: list[dict[str, Any]]) -> list[str]:
    """Controller CPU (user + sys of ansible-playbook and all its descendants) per device, per C phase and run."""
    names = [("C", "first"), ("C", "rerun"), ("C_dps", "first"), ("C_dps", "rerun")]
    rows = []
    for cell in cells:
        phases = cell["phases"]
        values = [fmt(cpu_of(phases[phase][tag]) / cell["size"], 3) if phase in phases else "-" for phase, tag in names]
        if any(value != "-" for value in values):
            rows.append(f"| {cell['key_type']} | {cell['size']} | {cell['repeat']} | " + " | ".join(values) + " |")
    if not rows:
        return []
    return [
        "",
        "Controller CPU seconds per device (user + sys of the whole process tree, every slice summed): what an "
        "execution node spends on each device.",
        "",
        "| key | N | rep | C first | C re | C DPS first | C DPS re |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]


def slices_report(cells: list[dict[str, Any]]) -> list[str]:
    """Per-slice wall and CPU of sliced phases (--slices N), and the total."""
    rows = []
    for cell in cells:
        for phase in ("C", "C_dps"):
            for tag in ("first", "rerun"):
                run = cell["phases"].get(phase, {}).get(tag)
                if not run or "slices" not in run:
                    continue
                label = f"| {cell['key_type']} | {cell['size']} | {cell['repeat']} | {phase} {tag}"
                for index, part in enumerate(run["slices"], start=1):
                    rows.append(
                        f"{label} | {index} | {part['hosts']} | {fmt(part['wall_s'])} | "
                        f"{fmt(part['cpu_user_s'] + part['cpu_sys_s'])} | {part['changed']} |"
                    )
                rows.append(
                    f"{label} | all | {run['hosts']} | {fmt(run['wall_s'])} | {fmt(cpu_of(run))} | {run['changed']} |"
                )
    if not rows:
        return []
    return [
        "",
        "Slices (AWX job slicing: concurrent ansible-playbook processes with disjoint --limit, each with the forks "
        "above); `all` = wall from the first start to the last end, CPU and changed summed.",
        "",
        "| key | N | rep | phase | slice | hosts | wall s | CPU s | changed |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|",
        *rows,
    ]


def scaling(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """C's wall time at each larger fleet size over the smallest size of the same key type and repeat.

    Both cells come from the same run (same file, same repeat number), so the ratio is read from one run, as
    issue 6's 1,000-device target asks; with several repeats the median is reported too. In merged files a
    cell is paired only with cells of its own file."""
    by_key: dict[str, dict[int, dict[str, dict[str, Any]]]] = {}
    for cell in cells:
        if "C" in cell["phases"]:
            run = cell.get("run", f"r{cell['repeat']}")
            by_key.setdefault(cell["key_type"], {}).setdefault(cell["size"], {})[run] = cell["phases"]["C"]
    rows = []
    for key_type, sizes in by_key.items():
        base_size = min(sizes)
        for size in sorted(sizes):
            if size == base_size:
                continue
            pairs = [(run, sizes[base_size][run], c) for run, c in sizes[size].items() if run in sizes[base_size]]
            if not pairs:
                continue
            for tag in ("first", "rerun"):
                per_run = [
                    (run, base[tag]["wall_s"], c[tag]["wall_s"], ratio(c[tag], base[tag])) for run, base, c in pairs
                ]
                rows.append(
                    {
                        "key_type": key_type,
                        "size": size,
                        "base_size": base_size,
                        "tag": tag,
                        "per_run": per_run,
                        "median": median([value for *_, value in per_run]),
                    }
                )
    return rows


def wall_of(phases: dict[str, Any], phase: str, tag: str) -> str:
    return fmt(phases[phase][tag]["wall_s"]) if phase in phases else "-"


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- command line ------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,150", help="fleet sizes, comma separated (default 10,150)")
    parser.add_argument("--key-types", default="ec-p256,rsa-4096", help="ec-p256 and/or rsa-4096")
    parser.add_argument("--rsa-max-size", type=int, default=150, help="skip RSA cells above this size (default 150)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per (key type, size) cell (default 3)")
    parser.add_argument("--forks", type=int, default=10, help="Ansible forks for B and C (default 10)")
    parser.add_argument("--methods", default="A,B,C", help="subset of A,B,C (default all)")
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
        default=SSH_BASE_PORT,
        help=f"--target ssh: device N listens on 127.0.0.1:PORT+N (default {SSH_BASE_PORT})",
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
        if method not in ("A", "B", "C"):
            parser.error(f"--methods: {method!r} is not one of A, B, C")
    if args.repeats < 1 or args.forks < 1 or not args.sizes or min(args.sizes) < 1:
        parser.error("--repeats, --forks and every size must be at least 1")
    if args.slices < 1 or args.slices > min(args.sizes):
        parser.error("--slices must be at least 1 and at most the smallest fleet size")
    return args


def merge_results(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several result files of the same cells (same code, machine and settings) as one: medians over all runs."""
    first = runs[0]
    for other in runs[1:]:
        for field in ("machine", "settings"):
            # Files written before --target existed were local runs.
            defaults = {"target": "local", "image": None, "slices": 1} if field == "settings" else {}
            # A new boot of the same machine kind may carry another kernel build; it is listed, not compared.
            ignored = ("repeats", "kernel")
            mine = {k: v for k, v in {**defaults, **first[field]}.items() if k not in ignored}
            theirs = {k: v for k, v in {**defaults, **other[field]}.items() if k not in ignored}
            if mine != theirs:
                raise SystemExit(f"report: the files differ in {field}; medians over them would mix two setups")
    merged = dict(first)
    kernels = dict.fromkeys(run["machine"]["kernel"] for run in runs)
    merged["machine"] = {**first["machine"], "kernel": " / ".join(kernels)}
    merged["command"] = " + ".join(run["command"] for run in runs)
    merged["started"] = min(run["started"] for run in runs)
    merged["finished"] = max(run.get("finished", "?") for run in runs)
    merged["load_end"] = runs[-1].get("load_end")
    merged["complete"] = all(run.get("complete", True) for run in runs)
    merged["cells"] = []
    for source, run in enumerate(runs):
        for cell in run["cells"]:
            # "run" keeps the cell's own file and repeat: scaling() pairs cells only inside one run.
            merged["cells"].append(
                {**cell, "repeat": len(merged["cells"]) + 1, "run": f"f{source + 1}r{cell['repeat']}"}
            )
    merged["settings"] = {**first["settings"], "repeats": "merged"}
    merged["summary"] = summarise(merged["cells"])
    return merged


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
    global SSH_BASE_PORT  # containers_for() and write_inventory() read it
    SSH_BASE_PORT = args.ssh_base_port
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
            "dps_emulator": {"retry_after_s": 3, "assignment_delay_s": 1.0},
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
        if any(cell["phases"].get(phase, {}).get("rerun", {}).get("changed") for phase in ("C", "C_dps"))
    ]
    if bad:
        print(f"bench: error: C re-run reported changes (must be 0) in {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
