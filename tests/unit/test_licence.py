"""The licence (fault 8 of issue 19): galaxy.yml, every plugin file and the LICENSE file name the same licence, and
the built collection carries the full text."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import yaml

from tests.support.paths import BIN, REPO_ROOT

LICENCE_LINE = "# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)"


def test_galaxy_plugins_and_license_file_agree() -> None:
    galaxy = yaml.safe_load((REPO_ROOT / "galaxy.yml").read_text(encoding="utf-8"))
    assert galaxy["license"] == ["GPL-3.0-or-later"]
    assert "license_file" not in galaxy  # galaxy.yml takes one of license / license_file
    text = (REPO_ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.split()[:6] == ["GNU", "GENERAL", "PUBLIC", "LICENSE", "Version", "3,"]
    assert "END OF TERMS AND CONDITIONS" in text and "How to Apply These Terms to Your New Programs" in text  # full
    plugin_files = sorted((REPO_ROOT / "plugins").rglob("*.py"))
    assert plugin_files
    wrong = [
        str(path.relative_to(REPO_ROOT))
        for path in plugin_files
        if LICENCE_LINE not in path.read_text(encoding="utf-8").splitlines()[:3]
    ]
    assert not wrong, f"these plugin files do not carry the licence line: {wrong}"


def test_built_collection_carries_the_license(tmp_path: Path) -> None:
    built = subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path), str(REPO_ROOT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (tarball,) = tmp_path.glob("iotfleet-aziot-*.tar.gz")
    with tarfile.open(tarball) as archive:
        shipped = archive.extractfile("LICENSE").read()
    assert shipped == (REPO_ROOT / "LICENSE").read_bytes()
