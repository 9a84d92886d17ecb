"""Smoke test for the locally built container targets (tests/containers/build-images.sh).

For each architecture it starts the stock and the prepared image with podman, checks what is (and is not)
installed, and lets Ansible drive the stock container through the containers.podman.podman connection.
Skipped only when podman is not installed; missing images are a failure that says how to build them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
BIN = Path(sys.executable).parent
REPO = "localhost/iotfleet-debian"
ARCHES = ["amd64", "arm64"]

pytestmark = pytest.mark.skipif(
    shutil.which("podman") is None,
    reason="podman is not installed (run tests/containers/install-host-deps.sh as root)",
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(HERE / "containers.conf"))
    env["ANSIBLE_CONFIG"] = str(REPO_ROOT / "ansible.cfg")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], env=_env(), capture_output=True, text=True, check=check, timeout=120)


def _container(image: str, arch: str) -> Iterator[str]:
    if _podman("image", "exists", image, check=False).returncode != 0:
        pytest.fail(f"image {image} is missing: build it with `make images` (tests/containers/build-images.sh)")
    name = f"iotfleet-test-{arch}-{uuid.uuid4().hex[:8]}"
    _podman("run", "-d", "--rm", "--stop-timeout=1", "--arch", arch, "--name", name, image, "sleep", "infinity")
    try:
        yield name
    finally:
        _podman("rm", "-f", "-t", "0", name, check=False)


@pytest.fixture(scope="module", params=ARCHES)
def stock(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    arch = request.param
    for name in _container(f"{REPO}:bookworm-{arch}", arch):
        yield name, arch


@pytest.fixture(scope="module", params=ARCHES)
def prepared(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    arch = request.param
    for name in _container(f"{REPO}:bookworm-{arch}-prepared", arch):
        yield name, arch


def _exec(name: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return _podman("exec", name, *cmd, check=False)


def test_stock_image_is_a_bare_device(stock: tuple[str, str]) -> None:
    name, arch = stock
    assert _exec(name, "dpkg", "--print-architecture").stdout.strip() == arch
    assert _exec(name, "python3", "-c", "import sys; print(sys.version_info[:2])").stdout.strip() == "(3, 11)"
    # The baseline has none of what the roles install: they must install it themselves.
    for module in ("cryptography", "tomlkit"):
        assert _exec(name, "python3", "-c", f"import {module}").returncode != 0, f"{module} present in stock image"
    assert _exec(name, "sh", "-c", "command -v openssl").returncode != 0, "openssl present in stock image"


def test_prepared_image_has_role_dependencies(prepared: tuple[str, str]) -> None:
    name, arch = prepared
    assert _exec(name, "dpkg", "--print-architecture").stdout.strip() == arch
    result = _exec(name, "python3", "-c", "import cryptography, tomlkit; print('ok')")
    assert result.stdout.strip() == "ok", result.stderr
    assert _exec(name, "openssl", "version").stdout.startswith("OpenSSL 3.")


def test_ansible_drives_the_container(stock: tuple[str, str]) -> None:
    name, arch = stock
    result = subprocess.run(
        [
            str(BIN / "ansible"),
            name,
            "-i",
            f"{name},",
            "-c",
            "containers.podman.podman",
            "-m",
            "ansible.builtin.setup",
            "-a",
            "gather_subset=!all,!min,architecture",
        ],
        env={**_env(), "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    facts = json.loads(result.stdout)["plays"][0]["tasks"][0]["hosts"][name]["ansible_facts"]
    assert facts["ansible_architecture"] == {"amd64": "x86_64", "arm64": "aarch64"}[arch]
