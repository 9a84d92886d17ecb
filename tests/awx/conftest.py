"""Session fixtures of the AWX suite: the collection built once as a tarball and installed once from it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.paths import BIN, REPO_ROOT
from tests.support.playbook import clean_env, run_ansible


@pytest.fixture(scope="session")
def awx_work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("awx")


@pytest.fixture(scope="session")
def plain_ansible_cfg(awx_work: Path) -> Path:
    """An ansible.cfg with nothing of the checkout's (its collections_path and roles_path point into the checkout)."""
    path = awx_work / "ansible.cfg"
    path.write_text("[defaults]\nretry_files_enabled = False\ninterpreter_python = auto_silent\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def collection_tarball(awx_work: Path, plain_ansible_cfg: Path) -> Path:
    """`ansible-galaxy collection build` of the checkout: the artefact users install (and the EE is built from)."""
    out = awx_work / "dist"
    built = run_ansible(
        [str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out), str(REPO_ROOT)],
        clean_env(plain_ansible_cfg),
        awx_work,
        timeout=300,
    )
    assert built.returncode == 0, built.output()
    (tarball,) = out.glob("iotfleet-aziot-*.tar.gz")
    return tarball


@pytest.fixture(scope="session")
def installed_collection(awx_work: Path, collection_tarball: Path, plain_ansible_cfg: Path) -> Path:
    """The tarball installed into an empty collections path, offline: the Galaxy server is set to a closed local port,
    so any attempt to reach a Galaxy fails the install. The collections path is only that directory (otherwise
    ansible-galaxy finds a copy elsewhere, e.g. ~/.ansible/collections from a molecule prerun, and installs nothing)."""
    path = awx_work / "installed"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    env = clean_env(plain_ansible_cfg, path, ANSIBLE_GALAXY_SERVER="http://127.0.0.1:9/")
    installed = run_ansible(
        [str(BIN / "ansible-galaxy"), "collection", "install", str(collection_tarball), "-p", str(path)],
        env,
        awx_work,
        timeout=300,
    )
    assert installed.returncode == 0, installed.output()
    assert (path / "ansible_collections" / "iotfleet" / "aziot" / "MANIFEST.json").is_file(), installed.output()
    return path
