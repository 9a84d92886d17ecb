"""Run every playbook in tests/integration/targets/ against localhost.

Each target is a self-checking playbook (ansible.builtin.assert): it runs its module four times
(check, run, check again, run again) and asserts changed / not changed, plus the failure cases.
The playbook gets a fresh scratch directory as `test_dir`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TARGETS = sorted((REPO_ROOT / "tests" / "integration" / "targets").glob("*.yml"))
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("playbook", TARGETS, ids=[p.stem for p in TARGETS])
def test_target(playbook: Path, tmp_path: Path) -> None:
    env = dict(os.environ)
    env["ANSIBLE_CONFIG"] = str(REPO_ROOT / "ansible.cfg")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            f"test_dir={tmp_path}",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            str(playbook),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
