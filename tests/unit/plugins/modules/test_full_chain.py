"""full_chain: the order and content of the chain file, its attributes, check and diff mode, and the refusals."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

import pytest

from ansible_collections.iotfleet.aziot.plugins.modules import full_chain
from tests.support.modules import run_module
from tests.support.pki import DAY, Pki, issue

OWNER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    made = Pki(tmp_path / "pki")
    made.device("pi-chain-01")
    return made


def run(pki: Pki, path: Path, **args) -> dict:
    defaults = {
        "path": str(path),
        "leaf_path": str(pki.directory / "pi-chain-01.leaf.pem"),
        "ca_certificates": [pki.intermediate.pem_text],
        "root_certificate": pki.root.pem_text,
        "registration_id": "pi-chain-01",
        "owner": OWNER,
        "group": GROUP,
    }
    return run_module(full_chain, {**defaults, **args}).result


def test_leaf_then_intermediate_then_root_written_once(pki: Pki, tmp_path: Path) -> None:
    path = tmp_path / "full-chain.pem"
    check = run(pki, path, _ansible_check_mode=True, _ansible_diff=True)
    assert check["changed"] is True and not path.exists()
    assert check["diff"]["before"] == ""
    assert check["diff"]["after"].splitlines()[0].startswith("CN=pi-chain-01 (until ")
    first = run(pki, path)
    leaf = Path(pki.directory / "pi-chain-01.leaf.pem").read_bytes()
    assert path.read_bytes() == leaf + pki.intermediate.pem + pki.root.pem
    assert first["chain"] == ["CN=pi-chain-01", "CN=Test Intermediate CA", "CN=Test Root CA"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # a new file's default
    assert run(pki, path)["changed"] is False


def test_without_the_root_and_with_unused_certificates(pki: Pki, tmp_path: Path) -> None:
    path = tmp_path / "full-chain.pem"
    stranger = issue("Stranger CA", ca=True)
    result = run(pki, path, include_root=False, ca_certificates=[stranger.pem_text + pki.intermediate.pem_text])
    assert result["chain"] == ["CN=pi-chain-01", "CN=Test Intermediate CA"]
    assert result["unused"] == ["CN=Stranger CA"]
    assert not path.read_bytes().endswith(pki.root.pem)


def test_owner_group_and_mode_are_kept(pki: Pki, tmp_path: Path) -> None:
    path = tmp_path / "full-chain.pem"
    run(pki, path, mode="0640")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    path.chmod(0o666)
    fixed = run(pki, path, mode="0640")
    assert fixed["changed"] is True and stat.S_IMODE(path.stat().st_mode) == 0o640
    assert (path.stat().st_uid, path.stat().st_gid) == (os.getuid(), os.getgid())


def test_backup_of_the_replaced_file(pki: Pki, tmp_path: Path) -> None:
    path = tmp_path / "full-chain.pem"
    path.write_text("an old chain\n")
    result = run(pki, path, backup=True)
    assert Path(result["backup_file"]).read_text() == "an old chain\n"
    assert run(pki, path, backup=True).get("backup_file") is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"registration_id": "pi-other"}, "has CN 'pi-chain-01', not the registration id 'pi-other'"),
        ({"leaf_path": "/nonexistent/leaf.pem"}, "leaf_path /nonexistent/leaf.pem does not exist"),
        ({"ca_certificates": []}, "so the chain does not reach the root 'CN=Test Root CA'"),
        ({"root_certificate": "not a certificate"}, "root_certificate holds no PEM certificate"),
    ],
)
def test_refusals_write_nothing(pki: Pki, tmp_path: Path, args: dict, message: str) -> None:
    path = tmp_path / "full-chain.pem"
    result = run(pki, path, **args)
    assert result["failed"] and message in result["msg"], result
    assert not path.exists()


def test_an_expired_intermediate_is_refused(pki: Pki, tmp_path: Path) -> None:
    expired = issue("Test Intermediate CA", pki.root, ca=True, not_before=-10 * DAY, not_after=-DAY)
    device = pki.device("pi-chain-02", issuer=expired)
    result = run(
        pki, tmp_path / "c.pem", leaf_path=device.leaf_file, ca_certificates=[expired.pem_text], registration_id=None
    )
    assert result["failed"] and "expired on" in result["msg"], result
