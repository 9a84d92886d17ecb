"""Measuring a benchmark run: wall time, CPU seconds and memory of a process tree, Ansible's recap and task
profile, the machine and its load. What is run is bench/fleet.py's business; how it is shown, bench/report.py's."""

from __future__ import annotations

import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

VENV_BIN = Path(sys.executable).parent  # ansible, ansible-playbook of the venv that runs the bench
RECAP_RE = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)\s+"
    r"failed=(?P<failed>\d+)"
)
PROFILE_RE = re.compile(r"^(?P<task>.+?) -{3,} (?P<seconds>\d+\.\d+)s$")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


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
