"""What the locally built device images hold (tests/containers/build-images.sh).

Each image is started once and inspected with `podman exec` (the podman connection is kept here on purpose: these
checks are about the image contents, not about how Ansible reaches a device - tests/containers/test_ssh.py does
that over SSH). Skipped only when podman is not installed; a missing image is a failure that says how to build it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tools.device_containers import IMAGE_REPO, podman

pytestmark = pytest.mark.skipif(
    shutil.which("podman") is None,
    reason="podman is not installed (run tests/containers/install-host-deps.sh as root)",
)

# image tag -> (dpkg architecture, Python minor version, cryptography major version on the prepared images)
IMAGES = {
    "bookworm-amd64": ("amd64", "3.11", None),
    "bookworm-amd64-prepared": ("amd64", "3.11", "38"),
    "trixie-amd64": ("amd64", "3.13", None),
    "trixie-amd64-prepared": ("amd64", "3.13", "43"),
    "trixie-arm64-prepared": ("arm64", "3.13", "43"),
}


@pytest.fixture(scope="module", params=sorted(IMAGES))
def device(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    tag = request.param
    image = f"{IMAGE_REPO}:{tag}"
    if podman("image", "exists", image, check=False).returncode != 0:
        pytest.fail(f"image {image} is missing: build it with `make images` (tests/containers/build-images.sh)")
    name = f"iotfleet-image-test-{tag}"
    podman("rm", "-f", "-t", "0", name, check=False)
    podman("run", "-d", "--rm", "--stop-timeout=1", "--arch", IMAGES[tag][0], "--name", name, image)
    try:
        yield name, tag
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)


def _exec(name: str, *cmd: str) -> str:
    result = podman("exec", name, *cmd, check=False)
    return result.stdout.strip() if result.returncode == 0 else f"(exit {result.returncode}) {result.stderr.strip()}"


def test_image_is_a_pi_like_device(device: tuple[str, str]) -> None:
    name, tag = device
    arch, python, cryptography = IMAGES[tag]
    assert _exec(name, "dpkg", "--print-architecture") == arch
    assert _exec(name, "python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])") == python
    # Reached as a Pi is: the user pi with passwordless sudo, an SSH server with host keys of its own.
    assert _exec(name, "su", "pi", "-s", "/bin/sh", "-c", "sudo -n id -u") == "0"
    started = 'for i in $(seq 100); do [ "$(cat /proc/1/comm)" = sshd ] && break; sleep 0.1; done; cat /proc/1/comm'
    assert _exec(name, "sh", "-c", started) == "sshd"
    assert _exec(name, "sh", "-c", "ls /etc/ssh/ssh_host_ed25519_key.pub") == "/etc/ssh/ssh_host_ed25519_key.pub"
    # No apt lists, like the official Debian images: roles that install packages must update the cache.
    assert _exec(name, "sh", "-c", "ls /var/lib/apt/lists | grep -c _Packages || true") == "0"
    if cryptography is None:
        # The stock device has none of what the roles install: they must install it themselves.
        for module in ("cryptography", "tomlkit"):
            assert _exec(name, "python3", "-c", f"import {module}").startswith("(exit"), f"{module} in {tag}"
        assert _exec(name, "sh", "-c", "command -v openssl").startswith("(exit"), f"openssl in {tag}"
    else:
        version = _exec(name, "python3", "-c", "import cryptography, tomlkit; print(cryptography.__version__)")
        assert version.split(".")[0] == cryptography
        assert _exec(name, "openssl", "version").startswith("OpenSSL 3.")


def test_host_keys_differ_between_devices() -> None:
    """Each container makes its own host keys at first start, like each re-imaged Pi."""
    image = f"{IMAGE_REPO}:bookworm-amd64"
    keys = []
    for index in range(2):
        name = f"iotfleet-image-test-hostkey-{index}"
        podman("rm", "-f", "-t", "0", name, check=False)
        podman("run", "-d", "--rm", "--stop-timeout=1", "--name", name, image)
        try:
            wait = "for i in $(seq 100); do [ -s /etc/ssh/ssh_host_ed25519_key.pub ] && break; sleep 0.1; done"
            keys.append(_exec(name, "sh", "-c", f"{wait}; cat /etc/ssh/ssh_host_ed25519_key.pub"))
        finally:
            podman("rm", "-f", "-t", "0", name, check=False)
    assert keys[0] != keys[1] and all(key.startswith("ssh-ed25519 ") for key in keys)
