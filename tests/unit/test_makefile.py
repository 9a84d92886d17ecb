"""The Makefile's help and `make test` (fault 7 of issue 19): help lists every suite `make test` runs, from the
targets' own `## ` comments, and `make test` without root refuses up front instead of skipping suites and passing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MAKEFILE = REPO / "Makefile"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make(*args: str, as_user: bool = False) -> subprocess.CompletedProcess:
    argv = ["make", "-s", "-C", str(REPO), *args]
    if as_user and os.geteuid() == 0:
        argv = ["runuser", "-u", "nobody", "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


def suites_of_make_test() -> list[str]:
    match = re.search(r"^test:(.*)$", MAKEFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert match, "no test: target in the Makefile"
    return match.group(1).split()


def test_help_describes_every_suite_make_test_runs() -> None:
    shown = make("help")
    assert shown.returncode == 0, shown.stderr
    described = dict(re.findall(r"^make (\S+) +(\S.*)$", shown.stdout, re.MULTILINE))
    suites = suites_of_make_test()
    assert len(suites) >= 12
    missing = [suite for suite in suites if not described.get(suite)]
    assert not missing, f"add a '## description' to these targets' lines: {missing}"
    assert " ".join(suites) in shown.stdout  # the order make test runs them in


@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("runuser") is None, reason="runuser is not installed")
def test_make_test_without_root_refuses_up_front() -> None:
    refused = make("-n", "test", as_user=True)
    assert refused.returncode != 0
    assert "all suites passed" not in refused.stdout
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "make test needs root" in lines[0], refused.stderr
    assert "make lint sanity unit integration" in lines[0]  # what to run instead
    assert not refused.stdout  # nothing ran, not even printed (-n)
