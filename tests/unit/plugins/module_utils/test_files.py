"""Unit tests for plugins/module_utils/_files.py: atomic writes with the final mode from the start."""

from __future__ import annotations

import os
import stat

import pytest
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.testing import patch_module_args

from ansible_collections.iotfleet.aziot.plugins.module_utils import _files


@pytest.fixture
def module():
    with patch_module_args({}):
        yield AnsibleModule(argument_spec={})


def test_new_file_never_exists_with_a_looser_mode(module, tmp_path, monkeypatch):
    target = tmp_path / "device.key.pem"
    seen = []
    real_rename = os.rename

    def spy_rename(src, dst):
        seen.append(stat.S_IMODE(os.stat(src).st_mode))
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", spy_rename)
    args = _files.file_args_for(module, str(target), None, None, "0600")
    _files.write_file_atomic(module, str(target), b"secret", args)
    assert seen == [0o600]  # the temp file already had its final mode when it got its name
    assert target.read_bytes() == b"secret"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["device.key.pem"]  # no temp file left behind


def test_backup_keeps_the_previous_content(module, tmp_path):
    target = tmp_path / "cert.pem"
    target.write_bytes(b"old")
    args = _files.file_args_for(module, str(target), None, None, "0644")
    backup = _files.write_file_atomic(module, str(target), b"new", args, backup=True)
    assert target.read_bytes() == b"new"
    with open(backup, "rb") as handle:
        assert handle.read() == b"old"


def test_missing_directory_fails_cleanly(module, tmp_path):
    target = tmp_path / "missing" / "x.pem"
    args = _files.file_args_for(module, str(target), None, None, "0600")
    with pytest.raises(SystemExit):
        _files.write_file_atomic(module, str(target), b"x", args)


def test_failed_rename_leaves_old_file_and_no_temp(module, tmp_path, monkeypatch):
    target = tmp_path / "cert.pem"
    target.write_bytes(b"old")

    def broken_rename(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "rename", broken_rename)
    args = _files.file_args_for(module, str(target), None, None, "0644")
    with pytest.raises(SystemExit):
        _files.write_file_atomic(module, str(target), b"new", args)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["cert.pem"]
