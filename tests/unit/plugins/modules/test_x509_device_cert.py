"""x509_device_cert, the device half (the module): key policy, directories, CSR, install checks, refusals.

The controller half (the action plugin: signing, re-issue reasons, the four-run idempotence) is exercised through
ansible-playbook in tests/integration/targets/x509_device_cert.yml.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from ansible_collections.iotfleet.aziot.plugins.modules import x509_device_cert
from tests.support.modules import run_module
from tests.support.pki import issue

OWNER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name
REG_ID = "pi-unit-01"


def run(**args: Any) -> dict[str, Any]:
    """The device half alone, with the device options only (the action plugin sends nothing else)."""
    args.setdefault("registration_id", REG_ID)
    for name in ("key_owner", "cert_owner"):
        args.setdefault(name, OWNER)
    for name in ("key_group", "cert_group"):
        args.setdefault(name, GROUP)
    return run_module(x509_device_cert, args).result


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def paths(root: Path) -> dict[str, str]:
    return {
        "key_path": str(root / "secrets" / "device.key.pem"),
        "cert_path": str(root / "certs" / "device.cert.pem"),
        "full_chain_path": str(root / "certs" / "full-chain.pem"),
    }


def self_signed(cn: str) -> str:
    return issue(cn).pem_text


def test_without_phase_it_refuses_to_run_alone(tmp_path: Path) -> None:
    result = run(**paths(tmp_path))
    assert result["failed"] and "must run through its action plugin" in result["msg"]


def test_missing_directory_without_dir_modes_fails_naming_it(tmp_path: Path) -> None:
    result = run(_phase="inspect", **paths(tmp_path))
    assert result["failed"]
    assert result["msg"] == (
        f"cannot write {tmp_path}/secrets/device.key.pem: directory {tmp_path}/secrets does not exist; create it first"
    )
    assert not (tmp_path / "secrets").exists()


def test_dir_modes_create_the_directories_key_first_then_nothing_changes(tmp_path: Path) -> None:
    args = dict(paths(tmp_path / "var" / "aziot"), key_dir_mode="0700", cert_dir_mode="0755", _phase="inspect")
    first = run(**args)
    assert first["changed"] and first["key_generated"]
    secrets, certs = tmp_path / "var/aziot/secrets", tmp_path / "var/aziot/certs"
    assert sorted(first["created_directories"]) == sorted([str(secrets), str(certs)])
    assert mode(secrets) == 0o700 and mode(certs) == 0o755
    assert mode(secrets / "device.key.pem") == 0o600
    csr = x509.load_pem_x509_csr(first["csr"].encode())
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == REG_ID
    second = run(**args)
    assert not second["changed"] and "created_directories" not in second and not second["key_generated"]


def test_dir_modes_in_check_mode_create_nothing(tmp_path: Path) -> None:
    args = dict(paths(tmp_path), key_dir_mode="0700", cert_dir_mode="0755", _phase="inspect")
    result = run(_ansible_check_mode=True, **args)
    assert result["changed"] and len(result["created_directories"]) == 2
    assert "csr" not in result or result["csr"] is None
    assert list(tmp_path.iterdir()) == []


def test_dir_mode_fixes_an_existing_directory(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir(mode=0o755)
    (tmp_path / "secrets").chmod(0o755)
    (tmp_path / "certs").mkdir()
    result = run(key_dir_mode="0700", _phase="inspect", **paths(tmp_path))
    assert result["changed"] and "created_directories" not in result
    assert mode(tmp_path / "secrets") == 0o700


def test_shared_directory_with_different_modes_is_refused(tmp_path: Path) -> None:
    args = {
        "key_path": str(tmp_path / "d" / "device.key.pem"),
        "cert_path": str(tmp_path / "d" / "device.cert.pem"),
    }
    result = run(key_dir_mode="0700", cert_dir_mode="0755", _phase="inspect", **args)
    assert result["failed"] and result["msg"].startswith(f"{REG_ID}: the key and the certificate are both in ")
    assert "set only one of key_dir_mode and cert_dir_mode" in result["msg"]
    assert not (tmp_path / "d").exists()


def test_a_file_where_the_directory_should_be_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secrets").write_text("not a directory")
    result = run(key_dir_mode="0700", _phase="inspect", **paths(tmp_path))
    assert result["failed"]
    assert result["msg"] == (
        f"{REG_ID}: {tmp_path}/secrets exists but is not a directory; move it away so the key and certificate "
        "directory can be created"
    )
    assert (tmp_path / "secrets").read_text() == "not a directory"


def test_wrong_key_type_with_policy_never_keeps_the_key(tmp_path: Path) -> None:
    args = dict(paths(tmp_path), key_dir_mode="0700", cert_dir_mode="0755", _phase="inspect")
    run(**args)
    key = Path(args["key_path"]).read_bytes()
    result = run(key_type="rsa-2048", **args)
    assert result["failed"] and "is ec-p256 but key_type is rsa-2048" in result["msg"]
    assert Path(args["key_path"]).read_bytes() == key


def test_install_refuses_a_certificate_for_another_key(tmp_path: Path) -> None:
    args = dict(paths(tmp_path), key_dir_mode="0700", cert_dir_mode="0755")
    run(_phase="inspect", **args)
    result = run(_phase="install", _certificate=self_signed(REG_ID), **args)
    assert result["failed"] and "the signed certificate does not match the key" in result["msg"]
    assert not Path(args["cert_path"]).exists()
