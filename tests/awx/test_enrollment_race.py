"""DPS enrollment writes from concurrent job slices: every slice of a sliced job runs provision.yml's controller-side
enrollment task once (`run_once` is per slice), at the same moment, on the same enrollment group.

Four ansible-playbook processes run iotfleet.aziot.dps_enrollment on one group at once, against the emulator's
service API. The four start their task together (a barrier file), and a `slow` fault answers every request 3 s
late (the emulator acts after the wait), so all four read before any of them writes:
- a fresh DPS: all four read "absent" and create; one creates it, the other three are refused (409), read again,
  find what they wanted and report no change;
- a changed tag: all four read the same etag and write with If-Match; one wins, the other three get 412, read again,
  find the new record equal to theirs and report no change;
- then nothing to do: four reads, no write, no change.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import yaml

from tests.awx.slicing import run_concurrently
from tests.support.fleet import HUB, ID_SCOPE, POLICY, POLICY_KEY, connection_string
from tests.support.paths import BIN, REPO_ROOT
from tests.support.pki import Pki
from tests.support.playbook import clean_env

SLICES = 4
GROUP = "race-group"
HOLD_S = 3


def slice_playbook(path: Path, results: Path, site: str, ready: Path, go: Path) -> Path:
    barrier = [
        {
            "name": "Say this slice is ready",
            "ansible.builtin.copy": {"content": "", "dest": str(ready), "mode": "0600"},
        },
        {"name": "Wait for every slice", "ansible.builtin.wait_for": {"path": str(go), "timeout": 120}},
    ]
    task = {
        "name": "Ensure the enrollment group (what each slice's run_once task does)",
        "iotfleet.aziot.dps_enrollment": {
            "connection_string": "{{ dps_connection_string }}",
            "ca_path": "{{ dps_ca_path }}",
            "enrollment_group_id": GROUP,
            "attestation": "x509",
            "primary_certificate": "{{ ca_cert }}",
            "iot_hubs": [HUB],
            "initial_twin": {"tags": {"site": site}},
            "timeout": 60,
        },
        "register": "enrollment",
    }
    save = {
        "name": "Save the result for the test",
        "ansible.builtin.copy": {"content": "{{ enrollment | to_json }}", "dest": str(results), "mode": "0600"},
    }
    play = {"name": "slice", "hosts": "localhost", "gather_facts": False, "tasks": [*barrier, task, save]}
    path.write_text(yaml.safe_dump([play], sort_keys=False), encoding="utf-8")
    return path


def round_of_slices(work: Path, emulator, ca_cert: Path, site: str, name: str) -> list[dict]:
    extra = {"dps_connection_string": connection_string(emulator), "dps_ca_path": emulator.ca_cert}
    extra["ca_cert"] = str(ca_cert)
    (work / "vars.json").write_text(json.dumps(extra), encoding="utf-8")
    commands, results, ready = [], [], []
    go = work / f"{name}.go"
    for index in range(SLICES):
        result = work / f"{name}-{index}.json"
        result.unlink(missing_ok=True)
        ready.append(work / f"{name}-{index}.ready")
        playbook = slice_playbook(work / f"{name}-{index}.yml", result, site, ready[-1], go)
        argv = [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", "-e", f"@{work / 'vars.json'}"]
        commands.append([*argv, "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)])
        results.append(result)

    def release_when_all_ready() -> None:
        deadline = time.monotonic() + 120
        while not all(path.exists() for path in ready) and time.monotonic() < deadline:
            time.sleep(0.05)
        go.touch()

    runs = run_concurrently(commands, clean_env(), REPO_ROOT, 300, release_when_all_ready)
    for run in runs:
        assert run.returncode == 0, run.output()
    return [json.loads(path.read_text(encoding="utf-8")) for path in results]


def test_concurrent_slices_converge_on_one_enrollment_group(dps_emulator_factory, tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    config = {
        "id_scope": ID_SCOPE,
        "linked_hubs": [HUB],
        "shared_access_policies": [
            {"name": POLICY, "primary_key": POLICY_KEY, "rights": ["EnrollmentRead", "EnrollmentWrite"]}
        ],
    }
    emulator = dps_emulator_factory(config, name="race")
    # Every enrollment-group request answered HOLD_S late, and the emulator acts on a request after the wait: the
    # four reads (started within HOLD_S of each other) all see the record as it was before the first write.
    hold_reads = [{"type": "slow", "seconds": HOLD_S, "endpoint": "enrollmentGroups"}]

    emulator.set_faults(hold_reads)
    created = round_of_slices(tmp_path, emulator, pki.intermediate_path, "plant-1", "create")
    assert sum(result["changed"] for result in created) == 1, created
    losers = [result for result in created if not result["changed"]]
    # read (absent), create refused with 409, read again: the three that lost the race recovered, not failed.
    assert all(result["requests"] >= 3 for result in losers), [result["requests"] for result in created]

    emulator.clear_faults()
    emulator.set_faults(hold_reads)
    updated = round_of_slices(tmp_path, emulator, pki.intermediate_path, "plant-2", "update")
    assert sum(result["changed"] for result in updated) == 1, updated
    etags = {result["etag"] for result in updated}
    assert len(etags) == 1, etags  # all four end on the same record, the one the winner wrote
    losers = [result for result in updated if not result["changed"]]
    assert all(result["requests"] >= 3 for result in losers), [result["requests"] for result in updated]

    emulator.clear_faults()
    settled = round_of_slices(tmp_path, emulator, pki.intermediate_path, "plant-2", "settled")
    assert not any(result["changed"] for result in settled), settled
    assert all(result["requests"] == 1 for result in settled), [result["requests"] for result in settled]
    for result in settled:
        assert result["enrollment"]["initialTwin"]["tags"] == {"site": "plant-2"}, result["enrollment"]
        assert {result["etag"]} == etags, (result["etag"], etags)
