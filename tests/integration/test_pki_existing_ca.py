"""Role pki with pki_create=false (provision.yml's CA check): the CA files every device of the play is set to use are
checked on the controller by one assert, and every missing one is named in one line with the fix."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.support.playbook import PlaybookRun, run_playbook


def check(work: Path, files: dict[str, str], hosts: dict[str, dict] | None = None) -> PlaybookRun:
    inventory = work / "inventory.yml"
    work.mkdir(parents=True, exist_ok=True)
    group = {"hosts": hosts or {"pi-01": {}, "pi-02": {}}, "vars": {"ansible_connection": "local", **files}}
    inventory.write_text(yaml.safe_dump({"pis": group}, sort_keys=False), encoding="utf-8")
    tasks = [{"ansible.builtin.include_role": {"name": "iotfleet.aziot.pki"}, "vars": {"pki_create": False}}]
    return run_playbook(work, tasks, inventory=inventory, play={"hosts": "pis"})


def ca_files(directory: Path) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    names = {"device_identity_root_cert_path": "root.pem", "device_identity_ca_cert_path": "ca.pem"}
    names["device_identity_ca_key_path"] = "ca.key.pem"
    for name in names.values():
        (directory / name).write_text("-----BEGIN CERTIFICATE-----\n", encoding="ascii")
    return {option: str(directory / name) for option, name in names.items()}


def test_present_ca_files_pass(tmp_path: Path) -> None:
    run = check(tmp_path / "work", ca_files(tmp_path / "pki"))
    assert run.returncode == 0, run.output()


def test_every_missing_or_non_file_ca_path_is_named_once_in_one_line(tmp_path: Path) -> None:
    files = ca_files(tmp_path / "pki")
    (tmp_path / "pki" / "ca.key.pem").unlink()
    hosts = {"pi-01": {}, "pi-02": {"device_identity_root_cert_path": str(tmp_path)}}  # a directory, not a file
    run = check(tmp_path / "work", files, hosts)
    assert run.returncode != 0
    fatal = [line for line in run.stdout.splitlines() if line.startswith("fatal:")]
    assert len(fatal) == 1, run.output()  # once for the play, not per device
    message = fatal[0]
    assert f"device_identity_ca_key_path: {tmp_path}/pki/ca.key.pem does not exist on the controller;" in message
    assert f"device_identity_root_cert_path: {tmp_path} does not exist on the controller" in message
    assert message.count("ca.key.pem does not exist") == 1  # two devices, one file: named once
    assert "run `ansible-playbook -i <inventory> playbooks/ca.yml` once to create the lab CA" in message
    assert "point device_identity_ca_key_path, device_identity_root_cert_path at your CA's file" in message
