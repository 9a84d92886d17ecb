"""playbooks/tasks/validate_inventory.yml (the filter iotfleet.aziot.inventory_problems) on real inventories.

The inventory goes through Ansible (group_vars, templated host variables, role defaults for what is unset), so the
filter is tested the way provision.yml runs it; no device is contacted (the check runs on localhost).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.support.paths import REPO_ROOT
from tests.support.playbook import PlaybookRun, run_playbook

VALIDATE = REPO_ROOT / "playbooks" / "tasks" / "validate_inventory.yml"


def validate(work: Path, hosts: dict[str, dict], group_vars: dict) -> PlaybookRun:
    inventory = work / "inventory.yml"
    work.mkdir(parents=True, exist_ok=True)
    group = {"hosts": hosts, "vars": {"ansible_connection": "local", **group_vars}}
    inventory.write_text(yaml.safe_dump({"pis": group}, sort_keys=False), encoding="utf-8")
    return run_playbook(
        work, [{"ansible.builtin.import_tasks": str(VALIDATE)}], inventory=inventory, play={"hosts": "pis"}
    )


def test_a_good_inventory_with_templated_ids_passes(tmp_path: Path) -> None:
    run = validate(
        tmp_path,
        {"pi-01": {}, "pi-02": {"iotfleet_registration_id": "line-3.press:02"}, "pi-03": {}},
        {
            "dps_registration_id_scope": "0ne00ABCDEF",
            "device_identity_registration_id": "{{ iotfleet_registration_id | default(inventory_hostname) }}",
            "dps_registration_registration_id": "{{ device_identity_registration_id }}",
        },
    )
    assert run.returncode == 0, run.output()
    assert "3 devices, inventory ok" in run.stdout


def test_every_problem_at_once_in_one_line_each(tmp_path: Path) -> None:
    hosts = {
        "pi-ok": {},
        "pi-no-scope": {"dps_registration_id_scope": " "},
        "broken-space": {"device_identity_registration_id": "line 3 press"},
        "pi-long": {"device_identity_registration_id": "p" * 65},
        "pi-mismatch": {"dps_registration_registration_id": "someone-else"},
        "pi-sym": {
            "dps_registration_registration_id": "other-id",
            "dps_registration_attestation": "symmetric_key",
            "dps_registration_group_key": "c3ltbWV0cmljLWdyb3VwLWtleQ==",
        },
        "pi-sym-no-key": {"dps_registration_attestation": "symmetric_key", "dps_registration_symmetric_key": " "},
        "pi-key": {"device_identity_key_type": "ec-256"},
        "pi-tpm": {"dps_registration_attestation": "tpm"},
        "pi-days": {"device_identity_valid_days": "a year"},
        "broken-duplicate": {"device_identity_registration_id": "pi-ok"},
        "pi-case": {},
        "broken-case": {"device_identity_registration_id": "PI-Case"},
    }
    group_vars = {
        "dps_registration_id_scope": "0ne00ABCDEF",
        # undefined where a host leaves device_identity_registration_id to the role default: the inventory name
        "dps_registration_registration_id": "{{ device_identity_registration_id }}",
    }
    run = validate(tmp_path, hosts, group_vars)
    assert run.returncode != 0, run.output()
    message = re.search(r'"msg": "inventory problems - (.*)"', run.stdout)
    assert message, run.output()
    assert message.group(1).split(" | ") == [
        "pi-no-scope: dps_registration_id_scope is missing or empty (the DPS ID scope, DPS > Overview > ID Scope)",
        'broken-space: device_identity_registration_id \\"line 3 press\\" is not a valid DPS registration id (1 to 64 '
        "letters, digits, - . _ :, ending with a letter, a digit or -; no spaces)",
        f'pi-long: device_identity_registration_id \\"{"p" * 65}\\" is not a valid DPS registration id (1 to 64 '
        "letters, digits, - . _ :, ending with a letter, a digit or -; no spaces)",
        'pi-mismatch: dps_registration_registration_id \\"someone-else\\" differs from device_identity_registration_id'
        ' \\"pi-mismatch\\" (X.509: the registration id is the certificate CN)',
        "pi-sym-no-key: dps_registration_attestation is symmetric_key and neither dps_registration_group_key (the "
        "enrollment group's key) nor dps_registration_symmetric_key (the device's own) is set",
        # Types and choices: the roles' argument specs (provision.yml imports the device roles without their
        # per-device validation task).
        "pi-key: value of device_identity_key_type must be one of: ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096, "
        "got: ec-256 (role device_identity)",
        "pi-tpm: value of dps_registration_attestation must be one of: x509, symmetric_key, got: tpm "
        "(role dps_registration)",
        "pi-days: argument 'device_identity_valid_days' is of type str and we were unable to convert to int: "
        "\\\"'a year'\\\" cannot be converted to an int (role device_identity)",
        'hosts broken-duplicate, pi-ok: registration id \\"pi-ok\\" is used more than once '
        "(device_identity_registration_id must be unique; DPS ignores case)",
        'hosts broken-case, pi-case: registration id \\"PI-Case\\" / \\"pi-case\\" is used more than once '
        "(device_identity_registration_id must be unique; DPS ignores case)",
    ]
