"""bench/run.py --methods H (the IoT Hub deployments and twin tag sync of provision.yml, issue 20) on 3 simulated
devices, so that the cell docs/benchmarks.md quotes cannot rot: not timed, it checks what the numbers count.

inventory/demo's two cohorts (2 devices in plant-3, 1 in lab) and its three deployments; every twin starts with the
other cohort's tags, so the first run creates the 3 configurations and rewrites the 3 twins, the re-run changes
nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench import report
from tests.support.paths import REPO_ROOT


def test_hub_cell_first_run_rewrites_every_twin_and_the_rerun_changes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "hub.json"
    argv = ["--sizes", "3", "--key-types", "ec-p256", "--repeats", "1", "--methods", "H"]
    run = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "run.py"), *argv, "--out", str(out), "--work-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(out.read_text(encoding="utf-8"))
    assert results["complete"] and "iot_hub" in results["settings"]
    (cell,) = results["cells"]
    assert set(cell["phases"]) == {"H"}
    # Seeded with the hub API, not timed: every device created, none registered through DPS before.
    assert cell["hub_seed"]["created"] == 3 and cell["hub_seed"]["registered_before"] == 0

    first, rerun = cell["phases"]["H"]["first"], cell["phases"]["H"]["rerun"]
    assert first["changed"] > 0 and first["hub"]["configurations_changed"] == 3
    assert first["hub"]["devices_changed"] == 3 and first["hub"]["devices_missing"] == 0
    # One twin query for the 3 devices, then one tag write per device.
    assert first["hub"]["devices"] == 1 + 3
    assert rerun["changed"] == 0
    assert rerun["hub"]["configurations_changed"] == 0 and rerun["hub"]["devices_changed"] == 0
    assert rerun["hub"]["devices"] == 1 and rerun["hub"]["prune"] == 0
    assert first["hub"]["retried"] == rerun["hub"]["retried"] == 0
    assert first["cpu_user_s"] + first["cpu_sys_s"] > 0
    # The hub's own answer: each cohort's configuration, the canary ring's winning on the lab device.
    assert cell["hub_applied"] == {"telemetry-canary": 1, "telemetry-plant-3": 2}

    text = report.report(results)
    assert "IoT Hub deployments (H:" in text
    assert f"| 3 | 1 | rerun | {rerun['wall_s']:.1f} |" in text
