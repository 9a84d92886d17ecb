"""bench/report.py: the report arithmetic: scaling pairs and merged files (the numbers docs/benchmarks.md quotes)."""

from __future__ import annotations

import copy

import pytest

from bench import report


def phase(wall_s: float) -> dict:
    """One timed phase with the fields bench/run.py writes for it."""
    memory = {"peak_rss_tree_mib": 1.0, "peak_pss_tree_mib": 1.0, "max_rss_single_mib": 1.0}
    return {"wall_s": wall_s, "changed": 0, **memory}


def cell(size: int, repeat: int, first: float, rerun: float) -> dict:
    return {
        "key_type": "ec-p256",
        "size": size,
        "repeat": repeat,
        "phases": {"C": {"first": phase(first), "rerun": phase(rerun)}},
        "ratios": {"C_rerun/C_first": round(rerun / first, 3)},
    }


def results(cells: list[dict], kernel: str = "6.18-a", cpus: int = 2) -> dict:
    return {
        "command": "bench/run.py",
        "started": "2026-12-01T00:00:00+00:00",
        "finished": "2026-12-01T01:00:00+00:00",
        "machine": {"cpu": "x", "cpus": cpus, "kernel": kernel},
        "settings": {"forks": 10, "repeats": 1, "target": "local", "image": None},
        "load_start": [0, 0, 0],
        "cells": cells,
    }


def test_scaling_pairs_sizes_of_the_same_repeat():
    rows = report.scaling(
        [cell(150, 1, 100.0, 80.0), cell(1000, 1, 700.0, 600.0), cell(150, 2, 120.0, 90.0), cell(1000, 2, 900.0, 630.0)]
    )
    first = next(row for row in rows if row["tag"] == "first")
    assert (first["size"], first["base_size"]) == (1000, 150)
    assert [value for *_, value in first["per_run"]] == [7.0, 7.5]
    assert first["median"] == 7.25
    rerun = next(row for row in rows if row["tag"] == "rerun")
    assert [value for *_, value in rerun["per_run"]] == [7.5, 7.0]


def test_merged_files_never_pair_cells_of_different_runs():
    merged = report.merge_results([results([cell(150, 1, 100.0, 80.0)]), results([cell(1000, 1, 700.0, 600.0)])])
    assert [c["repeat"] for c in merged["cells"]] == [1, 2]
    assert report.scaling(merged["cells"]) == []


def test_merged_files_keep_pairs_inside_one_file():
    both = results([cell(150, 1, 100.0, 80.0), cell(1000, 1, 800.0, 600.0)])
    merged = report.merge_results([both, copy.deepcopy(both)])
    first = next(row for row in report.scaling(merged["cells"]) if row["tag"] == "first")
    assert [run for run, *_ in first["per_run"]] == ["f1r1", "f2r1"]
    assert first["median"] == 8.0


def test_merge_lists_another_kernel_build_but_refuses_another_machine():
    merged = report.merge_results([results([], kernel="6.18-a"), results([], kernel="6.18-b")])
    assert merged["machine"]["kernel"] == "6.18-a / 6.18-b"
    with pytest.raises(SystemExit, match="differ in machine"):
        report.merge_results([results([], cpus=2), results([], cpus=4)])
