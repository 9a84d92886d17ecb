"""AWX job slicing: how a sliced job splits the inventory, and its slices started at once.

`slices()` splits the hosts the way AWX does (slice k of N gets hosts[k::N] of the sorted inventory);
`run_concurrently()` starts every slice's command together and waits for all, as AWX runs a sliced job's slices.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.playbook import PlaybookRun


def slices(hosts: list[str], count: int) -> list[list[str]]:
    """AWX job slicing: slice k (0-based) of `count` runs hosts[k::count] of the sorted inventory."""
    ordered = sorted(hosts)
    return [ordered[index::count] for index in range(count)]


def run_concurrently(
    commands: list[list[str]], env: dict[str, str], cwd: Path, timeout: float = 900, once_started=None
) -> list[PlaybookRun]:
    """Start every command at once (as AWX starts a sliced job's slices), wait for all; the output of each, its
    `wall_s` counted from the start of the first. `once_started()` is called after all are started, before
    waiting for them."""
    logs = []
    started = time.monotonic()
    processes = []
    for argv in commands:
        out = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in the finally below
        err = tempfile.TemporaryFile("w+")  # noqa: SIM115
        logs.append((out, err))
        processes.append(subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err, text=True))
    runs = []
    try:
        if once_started is not None:
            once_started()
        for argv, process, (out, err) in zip(commands, processes, logs, strict=True):
            remaining = max(1.0, timeout - (time.monotonic() - started))
            process.wait(timeout=remaining)
            wall = time.monotonic() - started
            out.seek(0)
            err.seek(0)
            completed = subprocess.CompletedProcess(argv, process.returncode, out.read(), err.read())
            runs.append(PlaybookRun(completed, wall_s=round(wall, 1)))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for out, err in logs:
            out.close()
            err.close()
    return runs
