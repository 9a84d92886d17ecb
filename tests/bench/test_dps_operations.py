"""DPS operations per device in the bench (issue 21): the report's arithmetic on made-up cells, and a real cell on 2
simulated devices whose every phase records the emulator's count (not timed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench import report
from tests.support.paths import REPO_ROOT


def counted(by_kind: dict[str, int], throttled: int = 0, minutes: tuple[int, ...] = ()) -> dict:
    """A phase's dps_operations as bench/fleet.py records it (total: the billed kinds, never the polls)."""
    total = sum(count for kind, count in by_kind.items() if kind != "poll")
    per_minute = [
        {"minute": f"2026-12-07T16:{30 + index}Z", "operations": n, "throttled": 0} for index, n in enumerate(minutes)
    ]
    return {"total": total, "by_kind": by_kind, "throttled": throttled, "per_minute": per_minute}


def run(wall_s: float, dps: dict | None = None) -> dict:
    memory = {"peak_rss_tree_mib": 1.0, "peak_pss_tree_mib": 1.0, "max_rss_single_mib": 1.0}
    phase = {"wall_s": wall_s, "changed": 0, "devices_per_min": 60.0, "cpu_user_s": 1.0, "cpu_sys_s": 0.0, **memory}
    return {**phase, "dps_operations": dps} if dps is not None else phase


def cell(repeat: int, first: dict, rerun: dict, size: int = 150) -> dict:
    nothing = counted({})
    return {
        "key_type": "ec-p256",
        "size": size,
        "repeat": repeat,
        "load_before": [0, 0, 0],
        "load_after": [0, 0, 0],
        "phases": {
            "C": {"first": run(10.0, nothing), "rerun": run(5.0, nothing)},
            "C_dps": {"first": run(20.0, first), "rerun": run(8.0, rerun)},
        },
        "ratios": {"C/A_first": None, "C/B_first": None, "C/B_rerun": None},
    }


def results(cells: list[dict]) -> dict:
    return {
        "command": "bench/run.py",
        "started": "2026-12-07T16:00:00+00:00",
        "machine": {
            "cpu": "x",
            "cpus": 2,
            "memory_gib": 4,
            "kernel": "6.18",
            "python": "3.11",
            "ansible_core": "core",
            "openssl": "ssl",
            "cryptography": "c",
        },
        "settings": {"forks": 10, "repeats": 2, "target": "local"},
        "load_start": [0, 0, 0],
        "cells": cells,
        "summary": report.summarise(cells),
    }


def test_operations_per_device_are_the_billed_total_over_the_fleet_never_the_polls():
    first = counted({"lookup": 150, "register": 150, "poll": 450}, minutes=(280, 20))
    assert report.operations_per_device(first, 150) == 2.0
    assert report.operation_kinds(first) == "lookup 150 + register 150 (poll 450)"
    assert (
        report.operation_kinds(counted({"register": 3, "registration_query": 1})) == "register 3 + registration_query 1"
    )
    assert report.operation_kinds(counted({})) == "none"


def test_summary_takes_the_median_per_device_and_the_report_shows_only_phases_that_made_operations():
    cells = [
        cell(1, counted({"lookup": 150, "register": 150, "poll": 300}), counted({"lookup": 150})),
        cell(2, counted({"register": 150, "poll": 300}), counted({"registration_query": 1})),
        cell(3, counted({"register": 150, "lookup": 3, "poll": 300}), counted({}, throttled=0)),
    ]
    summary = report.summarise(cells)
    (row,) = summary
    assert row["C_dps_first_dps_ops_per_device"] == 1.02  # median of 2.0, 1.0, 1.02
    assert row["C_dps_rerun_dps_ops_per_device"] == 0.007  # median of 1.0, 0.007 (1/150), 0.0
    assert row["C_first_dps_ops_per_device"] == 0.0

    text = report.report(results(cells))
    assert "| key | N | C_dps first | C_dps re |" in text  # C made none: no C column
    assert "| ec-p256 | 150 | 1.020 | 0.007 |" in text
    assert "| ec-p256 | 150 | 1 | C_dps | first | 300 | 2.000 | lookup 150 + register 150 (poll 300) | 0 | 0 |" in text
    assert "| ec-p256 | 150 | 2 | C_dps | rerun | 1 | 0.007 | registration_query 1 | 0 | 0 |" in text
    assert "| C | first |" not in text


def test_a_throttled_run_shows_its_busiest_minute_and_old_results_have_no_operations_table():
    quota = counted({"lookup": 1000, "register": 1000, "poll": 3000}, throttled=57, minutes=(1000, 1000))
    quota_run = results([cell(1, quota, counted({"lookup": 1000}), size=1000)])
    assert "DPS emulator quota" not in report.report(quota_run)
    quota_run["settings"]["dps_emulator"] = {"retry_after_s": 3, "operations_per_minute": 1000}
    text = report.report(quota_run)
    assert "DPS emulator quota: 1000 operations per calendar minute" in text
    assert (
        "| ec-p256 | 1000 | 1 | C_dps | first | 2000 | 2.000 | lookup 1000 + register 1000 (poll 3000) | 57 | 1000 |"
        in text
    )

    old = cell(1, counted({}), counted({}))
    for phase in old["phases"].values():
        for tag_run in phase.values():
            del tag_run["dps_operations"]
    text = report.report(results([old]))
    assert "DPS operations per device" not in text


def test_every_phase_of_a_cell_records_the_emulators_count(tmp_path: Path) -> None:
    """bench/run.py on 2 devices, methods A and C with C's DPS phase: the certificate phases make no DPS operation,
    the DPS phase's first run registers each device once, its re-run registers none; polls are never counted."""
    out = tmp_path / "ops.json"
    argv = ["--sizes", "2", "--key-types", "ec-p256", "--repeats", "1", "--methods", "A,C"]
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "run.py"), *argv, "--out", str(out), "--work-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results_file = json.loads(out.read_text(encoding="utf-8"))
    (measured,) = results_file["cells"]
    for phase in ("A", "C"):
        for tag in ("first", "rerun"):
            assert measured["phases"][phase][tag]["dps_operations"]["total"] == 0
    first = measured["phases"]["C_dps"]["first"]["dps_operations"]
    rerun = measured["phases"]["C_dps"]["rerun"]["dps_operations"]
    assert first["by_kind"]["register"] == 2 and first["by_kind"]["poll"] >= 2
    assert first["total"] == sum(count for kind, count in first["by_kind"].items() if kind != "poll")
    assert first["per_device"] == first["total"] / 2
    assert "register" not in rerun["by_kind"]
    assert first["throttled"] == rerun["throttled"] == 0
    assert "DPS operations per device" in report.report(results_file)


def test_a_dps_phase_with_its_registered_devices_count_reports():
    """bench/fleet.py keeps `registered_devices` (an int) beside the DPS phase's runs: the report skips it. Before,
    `bench/run.py report` crashed on a results file with a DPS phase whose runs made no operation to stop at (every
    file from before the count, such as 2026-11-23-quiet2-ec-p256-150.json)."""
    old = cell(1, counted({}), counted({}))
    old["phases"]["C_dps"] = {"registered_devices": 150, **old["phases"]["C_dps"]}
    assert "DPS operations per device" not in report.report(results([old]))
    counted_cell = cell(1, counted({"register": 150, "poll": 300}), counted({}))
    counted_cell["phases"]["C_dps"] = {"registered_devices": 150, **counted_cell["phases"]["C_dps"]}
    assert "| ec-p256 | 150 | 1 | C_dps | first | 150 | 1.000 | register 150 (poll 300) | 0 | 0 |" in report.report(
        results([counted_cell])
    )
