"""`run_module`: one Ansible module run with given arguments, the way AnsibleModule runs outside AnsiballZ.

    run = run_module(full_chain, {"path": ..., "_ansible_check_mode": True})
    assert run.result["changed"]

In this process by default (monkeypatches apply: fake transports, clocks; `.warnings` holds what the module warned).
With `isolated=True`, or `kill_at`, the
run happens in a forked child: its own process (cwd `work`), which killer.py can SIGKILL at a chosen point of its
write path ('write': a torn temporary file; 'rename': just before the rename) without touching the test process.
Forking from the test process saves importing Ansible again for every run.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import signal
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from unittest import mock

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.testing import patch_module_args

from tests.support import killer

MODULES_PACKAGE = "ansible_collections.iotfleet.aziot.plugins.modules"


@dataclass
class ModuleRun:
    returncode: int
    text: str  # what the module printed (stdout and stderr)
    warnings: list[str] = field(default_factory=list)  # AnsibleModule.warn() texts, of an in-process run

    @property
    def result(self) -> dict | None:
        """The module's JSON result (its last JSON line), None when it printed none."""
        for line in reversed(self.text.strip().splitlines()):
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except ValueError:
                    continue
        return None

    @property
    def failed(self) -> bool:
        return bool((self.result or {}).get("failed"))

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL

    def output(self) -> str:
        return f"rc={self.returncode}\n{self.text[-6000:]}"


def _main(module: ModuleType, args: dict, warnings: list[str]) -> int:
    """Call module.main() with `args`; the exit code it ends with. Warnings are recorded in `warnings`: how
    AnsibleModule.warn() reports them depends on whether this process has loaded controller code."""

    def warn(_module, warning, *_args, **_kwargs):
        warnings.append(warning)

    try:
        with patch_module_args(args), mock.patch.object(AnsibleModule, "warn", warn):
            module.main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except Exception:  # a crash, shown like Python shows it
        traceback.print_exc()
        return 1
    return 0


def run_module(
    module: ModuleType | str,
    args: dict,
    work: Path | None = None,
    *,
    isolated: bool = False,
    kill_at: str | None = None,
    kill_path: str | None = None,
) -> ModuleRun:
    """Run `module` (a module object, or the name of one of the collection's modules) with `args`."""
    if isinstance(module, str):
        module = importlib.import_module(f"{MODULES_PACKAGE}.{module}")
    if not (isolated or kill_at):
        captured = io.StringIO()
        warnings: list[str] = []
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            returncode = _main(module, args, warnings)
        return ModuleRun(returncode, captured.getvalue(), warnings)
    if work is None:
        raise ValueError("an isolated run needs a work directory")
    work.mkdir(parents=True, exist_ok=True)
    out_path = work / f"{module.__name__.rsplit('.', 1)[-1]}.out"
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the module process
        code = 70
        try:
            fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout = sys.stderr = open(1, "w", closefd=False)  # noqa: SIM115 - flushed below
            os.chdir(work)
            if kill_at:
                killer.install(kill_at, kill_path)
            code = _main(module, args, [])
        finally:
            sys.stdout.flush()
            os._exit(code)
    _pid, status = os.waitpid(pid, 0)
    returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return ModuleRun(returncode, out_path.read_text(encoding="utf-8", errors="replace"))
