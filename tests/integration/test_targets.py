"""Run every playbook in tests/integration/targets/ against localhost.

Each target is a self-checking playbook (ansible.builtin.assert): it runs its module four times
(check, run, check again, run again) and asserts changed / not changed, plus the failure cases.
The playbook gets a fresh scratch directory as `test_dir`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.paths import REPO_ROOT
from tests.support.playbook import run_playbook

TARGETS = sorted((REPO_ROOT / "tests" / "integration" / "targets").glob("*.yml"))


@pytest.mark.parametrize("playbook", TARGETS, ids=[p.stem for p in TARGETS])
def test_target(playbook: Path, tmp_path: Path) -> None:
    run = run_playbook(tmp_path / "run", playbook, {"test_dir": str(tmp_path)})
    assert run.returncode == 0, run.output()
