"""Building the execution environment for the tests: the local base image, then ansible-builder (podman).

    base_image()        tests/awx/ee-base/Containerfile on the debootstrap root filesystem `make images` imported
    build_ee(tarball)   ansible-builder build of the repository's execution-environment.yml, from the built tarball

Registries cannot be reached here, so the base users would name (quay.io/ansible/awx-ee, ee-minimal-rhel9) is
replaced by a Debian 12 base built locally; everything else is the definition users build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.support.paths import BIN, REPO_ROOT

CONTAINERS_CONF = REPO_ROOT / "tests" / "containers" / "containers.conf"
ROOTFS_IMAGE = "localhost/iotfleet-debian:bookworm-amd64-base"  # tests/containers/build-images.sh imports it
BASE_IMAGE = "localhost/iotfleet-ee-base:bookworm"
EE_IMAGE = "localhost/iotfleet-aziot-ee:test"
EE_DEFINITION = REPO_ROOT / "execution-environment.yml"
# Where the definition's additional_build_files expects the built collection.
EE_TARBALL = REPO_ROOT / "build" / "ee" / "iotfleet-aziot.tar.gz"
# The build host's extra CA certificates (a TLS proxy in front of PyPI, here): the base trusts them too.
HOST_EXTRA_CAS = Path("/usr/local/share/ca-certificates")


class BuildError(RuntimeError):
    pass


def podman_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(argv: list[str], log: Path, timeout: float = 900) -> float:
    started = time.monotonic()
    with log.open("w") as out:
        result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=podman_env(), timeout=timeout)
    if result.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-4000:]
        raise BuildError(f"{' '.join(argv[:3])} failed (rc {result.returncode}), {log}:\n{tail}")
    return time.monotonic() - started


def image_exists(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name], env=podman_env(), check=False).returncode == 0


def base_image(work: Path) -> float:
    """Build BASE_IMAGE (seconds taken); podman's layer cache makes a rebuild quick."""
    if not image_exists(ROOTFS_IMAGE):
        raise BuildError(f"{ROOTFS_IMAGE} is missing: run `make images` (tests/containers/build-images.sh)")
    context = work / "ee-base"
    shutil.rmtree(context, ignore_errors=True)
    (context / "ca").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "tests" / "awx" / "ee-base" / "Containerfile", context / "Containerfile")
    for certificate in sorted(HOST_EXTRA_CAS.glob("*.crt")):
        shutil.copy(certificate, context / "ca" / certificate.name)
    argv = ["podman", "build", "--network", "host", "--build-arg", f"BASE={ROOTFS_IMAGE}", "-t", BASE_IMAGE]
    return _run([*argv, str(context)], work / "ee-base.log")


def build_ee(tarball: Path, work: Path) -> float:
    """ansible-builder build of execution-environment.yml on BASE_IMAGE, tagged EE_IMAGE (seconds taken)."""
    EE_TARBALL.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(tarball, EE_TARBALL)
    argv = [
        str(BIN / "ansible-builder"),
        "build",
        "-f",
        str(EE_DEFINITION),
        "--context",
        str(work / "ee-context"),
        "--tag",
        EE_IMAGE,
        "--container-runtime",
        "podman",
        "--build-arg",
        f"EE_BASE_IMAGE={BASE_IMAGE}",
        # RUN steps reach PyPI (ansible-core, ansible-runner, the collection's requirements) through the host.
        "--extra-build-cli-args",
        "--network host",
        "-v",
        "2",
    ]
    return _run(argv, work / "ansible-builder.log")
