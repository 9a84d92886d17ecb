"""The collection as users get it: `ansible-galaxy collection build`, the tarball's content, an offline install
into an empty path, and ansible-doc and the collection's playbooks run from that install only
(ANSIBLE_COLLECTIONS_PATH = the install; not the checkout's .collections, nor the `ansible` package's collections).
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

from tests.support.fleet import SimulatedFleet
from tests.support.paths import BIN, REPO_ROOT
from tests.support.playbook import clean_env, run_ansible

# What a built collection may hold at its top level (collection content), and below extensions/ only the AWX
# credential types (extensions/molecule is test scaffolding).
CONTENT = {
    "MANIFEST.json",
    "FILES.json",
    "README.md",
    "CHANGELOG.md",
    "LICENSE",
    "COPYING",
    "meta",
    "plugins",
    "roles",
    "playbooks",
    "docs",
    "extensions",
    "inventory",
    "changelogs",
    # Read by ansible-builder's introspection when the collection goes into an execution environment.
    "requirements.txt",
    "bindep.txt",
}
EXTENSIONS = {"awx"}
MODULES = sorted(path.stem for path in (REPO_ROOT / "plugins" / "modules").glob("[a-z]*.py"))
ROLES = sorted(path.name for path in (REPO_ROOT / "roles").iterdir() if (path / "tasks").is_dir())


def not_content(names: list[str]) -> dict[str, int]:
    """Top-level entries (extensions/<x> for extensions) that are not collection content -> how many files each."""
    found: dict[str, int] = {}
    for name in names:
        parts = name.split("/")
        top = parts[0]
        wrong = top not in CONTENT or (top == "extensions" and len(parts) > 2 and parts[1] not in EXTENSIONS)
        wrong = wrong or "__pycache__" in parts or name.endswith((".pyc", ".retry"))
        if wrong:
            key = "/".join(parts[:2]) if top == "extensions" else top
            found[key] = found.get(key, 0) + 1
    return found


def test_not_content_names_what_does_not_belong() -> None:
    """The check itself: the things issue 16 names are caught, collection content passes."""
    names = ["plugins/modules/x509_ca.py", "roles/pki/tasks/main.yml", "extensions/awx/credential_types/a.yml"]
    assert not_content(names) == {}
    wrong = [
        "tests/unit/test_a.py",
        "bench/run.py",
        "tools/device_containers.py",
        "build/ee/x.tar.gz",
        "scripts/demo.sh",
        ".venv/bin/python",
        ".collections/ansible_collections",
        "extensions/molecule/fleet/molecule.yml",
        "plugins/modules/__pycache__/x.pyc",
    ]
    assert set(not_content(wrong)) == {
        "tests",
        "bench",
        "tools",
        "build",
        "scripts",
        ".venv",
        ".collections",
        "extensions/molecule",
        "plugins",
    }


def test_tarball_holds_only_collection_content(collection_tarball: Path) -> None:
    with tarfile.open(collection_tarball) as archive:
        names = [member.name for member in archive.getmembers() if member.isfile()]
    wrong = not_content(names)
    assert not wrong, (
        f"{collection_tarball.name} holds what is not collection content (top-level entry: files): "
        + ", ".join(f"{key}: {count}" for key, count in sorted(wrong.items()))
        + " - galaxy.yml build_ignore should leave these out"
    )


def test_tarball_ships_the_awx_credential_types(collection_tarball: Path) -> None:
    expected = sorted((REPO_ROOT / "extensions" / "awx" / "credential_types").glob("*.yml"))
    assert expected
    with tarfile.open(collection_tarball) as archive:
        for path in expected:
            member = archive.extractfile(f"extensions/awx/credential_types/{path.name}")
            assert member is not None and member.read() == path.read_bytes(), path.name


def test_ansible_doc_documents_every_module_and_role_from_the_install(
    installed_collection: Path, plain_ansible_cfg: Path, tmp_path: Path
) -> None:
    env = clean_env(plain_ansible_cfg, installed_collection)
    names = [f"iotfleet.aziot.{module}" for module in MODULES]
    documented = run_ansible([str(BIN / "ansible-doc"), "--json", *names], env, tmp_path)
    assert documented.returncode == 0, documented.output()
    docs = json.loads(documented.stdout)
    assert sorted(docs) == sorted(names)
    install_root = str(installed_collection / "ansible_collections" / "iotfleet" / "aziot")
    for name, entry in docs.items():
        assert entry["doc"]["module"] == name.rsplit(".", 1)[1] and entry["doc"]["description"], name
        assert entry["doc"]["filename"].startswith(install_root), (name, entry["doc"]["filename"])
        assert entry["examples"] and entry["return"] is not None, name
    roles = run_ansible([str(BIN / "ansible-doc"), "--json", "-t", "role", "-l", "iotfleet.aziot"], env, tmp_path)
    assert roles.returncode == 0, roles.output()
    assert sorted(json.loads(roles.stdout)) == [f"iotfleet.aziot.{role}" for role in ROLES], roles.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="the roles give device files to root (run as root)")
def test_playbooks_run_from_the_install(
    installed_collection: Path, plain_ansible_cfg: Path, dps_emulator_factory, tmp_path: Path
) -> None:
    """ca, validate, provision (twice), fleet_status - by their FQCN, on 3 simulated devices. The only collections
    path is the install (sys.path scanning off), so iotfleet.aziot.* can only come from there."""
    env = clean_env(plain_ansible_cfg, installed_collection)
    hosts = ["art-dev-1", "art-dev-2", "art-dev-3"]
    fleet = SimulatedFleet(tmp_path, hosts)
    pki_dir = fleet.pki_dir

    def playbook(name: str, *args: str):
        return fleet.playbook(f"iotfleet.aziot.{name}", *args, env=env, cwd=tmp_path)

    made = playbook("ca")
    assert made.returncode == 0, made.output()
    assert (pki_dir / "intermediate-ca.key.pem").is_file()
    fleet.use_emulator(dps_emulator_factory(fleet.emulator_config(), name="artefact"))

    checked = playbook("validate")
    assert checked.returncode == 0 and "3 devices, inventory ok" in checked.stdout, checked.output()
    first = playbook("provision")
    assert first.returncode == 0, first.output()
    assert first.changed_hosts() == set(hosts), first.recap
    devices = fleet.hub_devices("art-dev-")
    assert sorted(devices) == hosts and all(device["assignedHub"] == fleet.hub for device in devices.values()), devices
    status_file = tmp_path / "status.txt"
    status = playbook("fleet_status", "-e", f"fleet_status_file={status_file}")
    assert status.returncode == 0, status.output()
    lines = status_file.read_text(encoding="utf-8").splitlines()
    for host in hosts:
        assert any(line.split()[:2] == [host, "assigned"] for line in lines), lines
    again = playbook("provision")
    assert again.returncode == 0 and not again.changed_hosts(), again.recap
