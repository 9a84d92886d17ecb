"""`run_playbook`: ansible-playbook from a test, the results back as Python data.

    run = run_playbook(tmp_path, [{"iotfleet.aziot.dps_register": {...}, "register": "first"}], variables)
    assert run.returncode == 0, run.output()
    assert run.results["first"]["changed"]

Tasks run on localhost (local connection, this interpreter) unless an inventory is given; every `register:` name of
the generated play comes back in `.results` (None when skipped), written as JSON by a last task. A playbook file runs
as it is. `.recap` is the PLAY RECAP per host. `run_ansible` runs any Ansible command line (ansible-galaxy,
ansible-doc, an ansible-playbook put together by the test) the same way; `clean_env` is the environment of all of them.
`four_runs` / `assert_four`: the four runs of a state-changing case (check, real, check, real) and their check.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.support.paths import ANSIBLE_CONFIG, BIN, REPO_ROOT

RECAP_RE = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)\s+"
    r"failed=(?P<failed>\d+)",
    re.MULTILINE,
)


def clean_env(config: Path = ANSIBLE_CONFIG, collections_path: Path | None = None, **extra: str) -> dict[str, str]:
    """This environment without proxies (the emulator is local) and without its own ANSIBLE_* settings: a run is
    configured by `config` (default: the repository's ansible.cfg) and `extra` alone; the venv first on PATH.
    `collections_path`: the only place Ansible looks for collections (not the checkout's .collections, nor the
    collections of the `ansible` package)."""
    env = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
    env = {key: value for key, value in env.items() if not key.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_CONFIG=str(config),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    if collections_path is not None:
        env.update(ANSIBLE_COLLECTIONS_PATH=str(collections_path), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="False")
    env.update(extra)
    return env


class PlaybookRun:
    """What an Ansible command printed and returned; for ansible-playbook also the PLAY RECAP per host (`.recap`)
    and, from run_playbook, the registered results. `wall_s`: seconds from its start to its end."""

    def __init__(self, process: subprocess.CompletedProcess, results: dict | None = None, wall_s: float = 0.0) -> None:
        self.argv = [str(arg) for arg in process.args]
        self.returncode = process.returncode
        self.stdout = process.stdout
        self.stderr = process.stderr
        self.results = results if results is not None else {}
        self.wall_s = wall_s
        recap = self.stdout[self.stdout.rfind("PLAY RECAP") :]
        self.recap = {
            match["host"]: {key: int(match[key]) for key in ("ok", "changed", "unreachable", "failed")}
            for match in RECAP_RE.finditer(recap)
        }

    def changed_hosts(self) -> set[str]:
        """Every host of the recap (localhost too) on which something changed."""
        return {host for host, counts in self.recap.items() if counts["changed"]}

    def output(self) -> str:
        """The command and the end of what it printed, for assertion messages."""
        return f"$ {' '.join(self.argv[-6:])}\n{self.stdout[-8000:]}{self.stderr[-3000:]}"


def run_ansible(
    argv: list[str], env: dict[str, str] | None = None, cwd: Path = REPO_ROOT, timeout: float = 900
) -> PlaybookRun:
    """Run an Ansible command line (default environment: clean_env()) and wait for it."""
    started = time.monotonic()
    process = subprocess.run(
        argv, cwd=cwd, env=env or clean_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    return PlaybookRun(process, wall_s=round(time.monotonic() - started, 1))


def _save_results_task(tasks: list[dict], results_path: Path) -> list[dict]:
    registered = [task["register"] for task in tasks if "register" in task]
    if not registered:
        return []
    literal = ", ".join(f"'{item}': {item} | default(None)" for item in registered)
    return [
        {
            "name": "Save the registered results for the Python test",
            "ansible.builtin.copy": {
                "content": "{{ {%s} | to_json }}" % literal,
                "dest": str(results_path),
                "mode": "0600",
            },
        }
    ]


def run_playbook(
    work: Path,
    playbook: list[dict] | Path,
    variables: dict | None = None,
    *,
    play: dict | None = None,
    inventory: Path | None = None,
    forks: int | None = None,
    verbosity: int = 0,
    interpreter: str | None = None,
    env: dict[str, str] | None = None,
    name: str = "playbook",
    timeout: int = 900,
) -> PlaybookRun:
    """Run `playbook` (a list of tasks, or a playbook file) with `variables` as extra vars.

    Tasks become one play on localhost (`play` adds play keywords, e.g. module_defaults) unless `inventory` is
    given, then the play's `hosts` must come through `play`. `interpreter` is localhost's Python (default: this one).
    """
    work.mkdir(parents=True, exist_ok=True)
    results_path = work / f"{name}.results.json"
    results_path.unlink(missing_ok=True)
    if isinstance(playbook, Path):
        playbook_path = playbook
    else:
        tasks = [*playbook, *_save_results_task(playbook, results_path)]
        generated = {"name": name, "hosts": "localhost", "gather_facts": False, **(play or {}), "tasks": tasks}
        playbook_path = work / f"{name}.yml"
        playbook_path.write_text(yaml.safe_dump([generated], sort_keys=False), encoding="utf-8")
    vars_path = work / f"{name}.vars.json"
    vars_path.write_text(json.dumps(variables or {}), encoding="utf-8")
    command = [str(BIN / "ansible-playbook"), "-e", f"@{vars_path}"]
    if inventory is None:
        command += [
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            f"ansible_python_interpreter={interpreter or sys.executable}",
        ]
    else:
        command += ["-i", str(inventory)]
    if forks:
        command += ["-f", str(forks)]
    if verbosity:
        command.append("-" + "v" * verbosity)
    command.append(str(playbook_path))
    run = run_ansible(command, env, REPO_ROOT, timeout)
    if results_path.exists():
        run.results = json.loads(results_path.read_text(encoding="utf-8"))
    return run


def four_runs(module: str, args: dict, name: str) -> list[dict]:
    """A state-changing case as community.crypto's targets run it: check mode (with diff), real (with diff), check
    mode again, real again; registered as {name}_check1, _real1, _check2, _real2 (see assert_four)."""
    return [
        {module: args, "check_mode": True, "diff": True, "register": f"{name}_check1"},
        {module: args, "diff": True, "register": f"{name}_real1"},
        {module: args, "check_mode": True, "register": f"{name}_check2"},
        {module: args, "register": f"{name}_real2"},
    ]


def assert_four(results: dict, name: str) -> None:
    """The four runs of four_runs(): changed, changed, not changed, not changed."""
    changed = [results[f"{name}_{run}"]["changed"] for run in ("check1", "real1", "check2", "real2")]
    assert changed == [True, True, False, False], f"{name}: changed per run (check, real, check, real) = {changed}"
