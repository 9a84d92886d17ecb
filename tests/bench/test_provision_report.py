"""bench/provision.py's results (the whole provision.yml as a bench cell): the DPS operations of each run in the report,
the least wall time the quota allows for them, and the timeout a device gets under a quota (issue 21). Made-up
results; the cell itself runs in bench/provision.py (not in a unit test: minutes)."""

from __future__ import annotations

from bench import report
from bench.provision import quota_min_wall, quota_timeout
from tests.bench.test_dps_operations import counted


def provision_run(cpu: float, ok: float, changed: int, wall: float, dps: dict | None, quota: int = 0) -> dict:
    """One run as bench/provision.py records it (dps: its dps_operations, None in files from before the count)."""
    run = {"wall_s": wall, "cpu_s_per_device": cpu, "tasks_ok_per_device": ok, "changed": changed}
    if dps is not None:
        run.update(dps_operations=dps, quota_min_wall_s=quota_min_wall(dps["total"], quota))
    return run


def provision_results(first: dict, rerun: dict, quota: int = 0, size: int = 12) -> dict:
    settings = {"playbook": "playbooks/provision.yml", "target": "local", "forks": 10}
    if quota:
        settings["dps_emulator"] = {"operations_per_minute": quota}
    return {
        "command": "bench/provision.py",
        "started": "2026-12-07T19:28:08+00:00",
        "finished": "2026-12-07T19:30:22+00:00",
        "settings": settings,
        "load_start": [0, 0, 0],
        "cells": [{"target": "local", "size": size, "repeat": 1, "first": first, "rerun": rerun}],
    }


def test_the_quota_allows_whole_calendar_minutes():
    assert quota_min_wall(17, 6) == 120  # 6 + 6 + 5: waits for two minute starts
    assert quota_min_wall(6, 6) == quota_min_wall(5, 6) == quota_min_wall(0, 6) == 0  # the first minute takes them
    assert quota_min_wall(1005, 1000) == 60  # about operations / quota minutes at fleet scale
    assert quota_min_wall(17, 0) is None  # no quota
    assert quota_timeout(12, 6) == 180  # the last device may lose two minutes' race, and one more for the waiting
    assert quota_timeout(1000, 1000) == 120  # the role's default


def test_a_quota_run_shows_each_runs_operations_throttled_and_the_quota_bound():
    first = counted(
        {"register": 12, "enrollment_query": 3, "enrollment_read": 1, "registration_query": 1, "poll": 12},
        throttled=20,
        minutes=(6, 6, 5),
    )
    rerun = counted({"enrollment_query": 3, "enrollment_read": 1, "registration_query": 1}, minutes=(5,))
    results = provision_results(
        provision_run(4.134, 17.75, 48, 112.5, first, 6), provision_run(1.537, 13.75, 0, 19.6, rerun, 6), quota=6
    )
    text = report.report(results)  # `bench/run.py report` on a provision.py file
    assert "DPS emulator quota: 6 operations per calendar minute" in text
    assert (
        "| 12 | 1 | first | 4.134 | 17.75 | 48 | 1.417 | register 12 + enrollment_query 3 + enrollment_read 1 + "
        "registration_query 1 (poll 12) | 20 | 6 | 112.5 | 120 |" in text
    )
    assert "| 12 | 1 | rerun | 1.537 | 13.75 | 0 | 0.417 | enrollment_query 3 + enrollment_read 1 + " in text
    assert "registration_query 1 | 0 | 5 | 19.6 | 0 |" in text


def test_results_without_a_quota_or_from_before_the_count_report():
    none = counted({"register": 5, "registration_query": 1, "poll": 5}, minutes=(6,))
    text = report.provision_report(
        provision_results(
            provision_run(3.0, 17.8, 20, 50.0, none), provision_run(1.5, 13.8, 0, 10.0, counted({})), 0, 5
        )
    )
    assert "DPS emulator quota" not in text
    assert (
        "| 5 | 1 | first | 3.000 | 17.80 | 20 | 1.200 | register 5 + registration_query 1 (poll 5) | 0 | 6 | 50.0 | - |"
        in text
    )
    assert "| 5 | 1 | rerun | 1.500 | 13.80 | 0 | 0.000 | none | 0 | 0 | 10.0 | - |" in text
    old = report.report(
        provision_results(provision_run(3.8, 17.8, 40, 190.5, None), provision_run(3.8, 15.8, 0, 221.0, None))
    )
    assert "| 12 | 1 | rerun | 3.800 | 15.80 | 0 | - | - | - | - | 221.0 | - |" in old
