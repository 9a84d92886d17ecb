"""aziot_config module: check mode, diff masking, backup, atomic write, changed, refusals."""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.iotfleet.aziot.plugins.modules import aziot_config
from tests.support.modules import run_module

FIXTURES = Path(__file__).resolve().parents[3] / "integration" / "files" / "aziot_config"
KEY_B64 = "YXppb3QtaWRlbnRpdHktc2VydmljZXxhemlvdC1pZGU="
OWNER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name


def run(**args: Any) -> dict[str, Any]:
    args.setdefault("owner", OWNER)
    args.setdefault("group", GROUP)
    return run_module(aziot_config, args).result


def symmetric_key_args(path: Path) -> dict[str, Any]:
    return {
        "path": str(path),
        "provisioning": {
            "source": "dps",
            "id_scope": "0ne00ABCDEF",
            "attestation": {"method": "symmetric_key", "registration_id": "sensor-17", "symmetric_key": KEY_B64},
        },
    }


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text((FIXTURES / "config.toml").read_text())
    path.chmod(0o600)
    return path


def test_check_mode_reports_change_writes_nothing_and_masks_the_diff(config: Path) -> None:
    before = config.read_bytes()
    result = run(_ansible_check_mode=True, _ansible_diff=True, **symmetric_key_args(config))
    assert result["changed"] is True
    assert result["content_changed"] is True
    assert config.read_bytes() == before
    diff = result["diff"]
    assert KEY_B64 not in json.dumps(result)
    assert "SharedAccessKey=********" in diff["before"]
    assert 'symmetric_key = {value = "********"}' in diff["after"]
    assert result["config"]["provisioning"]["attestation"]["symmetric_key"] == {"value": "********"}
    assert result["removed_keys"] == ["provisioning.connection_string"]


def test_run_writes_then_second_run_is_unchanged(config: Path) -> None:
    first = run(backup=True, **symmetric_key_args(config))
    assert first["changed"] is True
    assert first["content_changed"] is True
    backup = Path(first["backup_file"])
    assert backup.read_text() == (FIXTURES / "config.toml").read_text()
    text = config.read_text()
    assert f'symmetric_key = {{value = "{KEY_B64}"}}' in text
    assert "# Hand-added by ops: pin the agent image.\n[agent]" in text
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert not list(config.parent.glob(".config.toml.*"))  # no temp file left behind

    second = run(backup=True, **symmetric_key_args(config))
    assert second["changed"] is False
    assert second["content_changed"] is False
    assert "backup_file" not in second


def test_new_file_is_created_0600(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    old_umask = os.umask(0o022)
    try:
        result = run(**symmetric_key_args(path))
    finally:
        os.umask(old_umask)
    assert result["changed"] is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("[provisioning]\n")


def test_mode_fix_alone_is_a_change_but_not_a_content_change(config: Path) -> None:
    run(**symmetric_key_args(config))
    config.chmod(0o644)
    result = run(**symmetric_key_args(config))
    assert result["changed"] is True
    assert result["content_changed"] is False
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_misspelt_key_fails_and_leaves_the_file_untouched(config: Path) -> None:
    before = config.read_bytes()
    result = run(
        path=str(config),
        settings={"provisioning": {"attestation": {"registation_id": "x"}}},
        provisioning={"source": "dps", "id_scope": "s", "attestation": {"method": "tpm", "registration_id": "r"}},
    )
    assert result["failed"] is True
    assert result["msg"] == (
        f"provisioning.attestation: unknown key 'registation_id' in {config}; did you mean 'registration_id'? "
        "(the file was not changed)"
    )
    assert config.read_bytes() == before


def test_syntax_error_is_refused_with_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text((FIXTURES / "broken.toml").read_text())
    before = path.read_bytes()
    result = run(path=str(path), hostname="x")
    assert result["failed"] is True
    assert result["msg"].startswith(f"{path}: TOML syntax error at line 3, column ")
    assert result["line"] == 3
    assert path.read_bytes() == before


def test_both_inline_and_file_key_are_refused(config: Path) -> None:
    args = symmetric_key_args(config)
    args["provisioning"]["attestation"]["symmetric_key_uri"] = "/var/aziot/secrets/k"
    before = config.read_bytes()
    result = run(**args)
    assert result["failed"] is True
    assert result["msg"] == (
        "parameters are mutually exclusive: symmetric_key|symmetric_key_uri found in provisioning -> attestation"
    )
    assert config.read_bytes() == before


def test_identity_service_refuses_edge_options(config: Path) -> None:
    result = run(path=str(config), product="identity_service")
    assert result["failed"] is True
    assert result["msg"].startswith("agent: key not allowed with product = 'identity_service'")


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    result = run(**symmetric_key_args(tmp_path / "missing" / "config.toml"))
    assert result["failed"] is True
    assert "does not exist" in result["msg"]
