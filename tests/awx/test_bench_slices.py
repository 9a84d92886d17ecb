"""bench/run.py --slices N: C's playbooks as N concurrent ansible-playbook processes with disjoint limits (AWX job
slicing), per-slice and total wall/CPU in the results. A 4-device, 2-slice run so the sliced cell cannot rot (the
measured runs are in bench/results, docs/scale.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import fleet
from tests.support.paths import REPO_ROOT

RUN_PY = REPO_ROOT / "bench" / "run.py"


def test_slice_hosts_is_awx_slicing() -> None:
    hosts = [f"h{index:02d}" for index in range(10, 0, -1)]
    parts = fleet.slice_hosts(hosts, 4)
    assert parts == [["h01", "h05", "h09"], ["h02", "h06", "h10"], ["h03", "h07"], ["h04", "h08"]]


@pytest.mark.skipif(os.geteuid() != 0, reason="the simulated devices' files belong to root")
def test_sliced_cell_records_every_slice(tmp_path: Path) -> None:
    out = tmp_path / "sliced.json"
    argv = [sys.executable, str(RUN_PY), "--sizes", "4", "--key-types", "ec-p256", "--repeats", "1"]
    argv += ["--methods", "C", "--slices", "2", "--work-dir", str(tmp_path / "work"), "--out", str(out)]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads(out.read_text(encoding="utf-8"))
    assert results["settings"]["slices"] == 2
    phases = results["cells"][0]["phases"]
    for phase, tag, changed in (("C", "first", True), ("C", "rerun", False), ("C_dps", "first", True)):
        run = phases[phase][tag]
        assert [part["hosts"] for part in run["slices"]] == [2, 2], run
        assert run["hosts"] == 4 and (run["changed"] > 0) == changed, run
        assert all((part["changed"] > 0) == changed for part in run["slices"]), run
        assert run["cpu_user_s"] == pytest.approx(sum(part["cpu_user_s"] for part in run["slices"]), abs=0.05)
        assert run["wall_s"] >= max(part["wall_s"] for part in run["slices"]), run
    assert phases["C_dps"]["registered_devices"] == 4
    assert "| C first | all | 4 |" in result.stdout and "Controller CPU seconds per device" in result.stdout
