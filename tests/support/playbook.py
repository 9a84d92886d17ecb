"""`run_playbook`: ansible-playbook from a test, the results back as Python data.

    run = run_playbook(tmp_path, [{"iotfleet.aziot.dps_register": {...}, "register": "first"}], variables)
    assert run.returncode == 0, run.output()
    assert run.results["first"]["changed"]

Tasks run on localhost (local connection, this interpreter) unless an inventory is given; every `register:` name of
the generated play comes back in `.results` (None when skipped), written as JSON by a last task. A playbook file runs
as it is. `.recap` is the PLAY RECAP per host.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.paths import ANSIBLE_CONFIG, BIN, REPO_ROOT

RECAP_RE = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)\s+"
    r"failed=(?P<failed>\d+)",
    re.MULTILINE,
)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without proxies (the emulator is local), with the repository's ansible.cfg and venv."""
    env = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
    env.update(
        ANSIBLE_CONFIG=str(ANSIBLE_CONFIG),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    env.update(extra)
    return env


class PlaybookRun:
    def __init__(self, process: subprocess.CompletedProcess, results: dict) -> None:
        self.returncode = process.returncode
        self.stdout = process.stdout
        self.stderr = process.stderr
        self.results = results
        recap = self.stdout[self.stdout.rfind("PLAY RECAP") :]
        self.recap = {
            match["host"]: {key: int(match[key]) for key in ("ok", "changed", "unreachable", "failed")}
            for match in RECAP_RE.finditer(recap)
        }

    def output(self) -> str:
        """The end of what ansible-playbook printed, for assertion messages."""
        return self.stdout[-8000:] + self.stderr[-3000:]


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
    process = subprocess.run(
        command, cwd=REPO_ROOT, env=env or clean_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    results = json.loads(results_path.read_text(encoding="utf-8")) if results_path.exists() else {}
    return PlaybookRun(process, results)
