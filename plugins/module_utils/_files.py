# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Atomic file writes for modules.

`AnsibleModule.atomic_move` gives a *new* destination file the umask default mode (0644 with the
usual umask) before `set_fs_attributes_if_different` narrows it, which would leave a fresh private
key world-readable for a moment. `write_file_atomic` instead gives the temporary file its final
owner and mode *before* the rename, so the file appears complete and with its final permissions,
or not at all.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile


def backup_argument_spec() -> dict:
    """The `backup` option; documented once in the doc fragment iotfleet.aziot.backup."""
    return {"backup": {"type": "bool", "default": False}}


def read_file(path: str) -> bytes | None:
    """Content of `path`, or None when it does not exist."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def file_args_for(module, path: str, owner: str | None, group: str | None, mode: str | None) -> dict:
    """The dict `set_fs_attributes_if_different` takes, for a path that is not `module.params['path']`."""
    return module.load_file_common_arguments({"path": path, "owner": owner, "group": group, "mode": mode})


def write_file_atomic(module, path: str, content: bytes, file_args: dict, backup: bool = False) -> str | None:
    """Replace `path` with `content` atomically (temp file in the same directory + rename).

    The temp file is created 0600, gets `file_args` owner/group/mode, is fsynced, then renamed over
    `path`. Returns the backup file name when `backup` is true and a previous file existed.
    Fails the module (one line, naming the path) if the directory is missing or not writable.
    After a successful rename, temporary files of `path` that a killed earlier run left are removed.
    """
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(directory):
        module.fail_json(msg=f"cannot write {path}: directory {directory} does not exist; create it first")
    backup_file = None
    try:
        fd, tmp_path = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        module.fail_json(msg=f"cannot write {path}: {exc.strerror}; nothing was changed{_fix_hint(directory)}")
    try:
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            tmp_args = dict(file_args, path=tmp_path)
            module.set_owner_if_different(tmp_path, tmp_args.get("owner"), False)
            module.set_group_if_different(tmp_path, tmp_args.get("group"), False)
            module.set_mode_if_different(tmp_path, tmp_args.get("mode"), False)
            if backup and os.path.exists(path):
                backup_file = module.backup_local(path)
            os.rename(tmp_path, path)
        except OSError as exc:
            module.fail_json(msg=f"cannot write {path}: {exc.strerror}; nothing was changed{_fix_hint(directory)}")
        tmp_path = None
        _fsync_directory(directory)
        _remove_stale_temporaries(directory, os.path.basename(path))
    finally:
        if tmp_path is not None and os.path.exists(tmp_path):
            os.unlink(tmp_path)
    return backup_file


def _fix_hint(directory: str) -> str:
    return f" (make {directory} writable and give it free space, then run again)"


def _remove_stale_temporaries(directory: str, name: str) -> None:
    """Remove the temporary files of `name` a killed earlier run left behind (they may hold a private key)."""
    pattern = re.compile(rf"\.{re.escape(name)}\.[A-Za-z0-9_]{{8}}\.tmp\Z")
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for entry in entries:
        if pattern.match(entry):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, entry))


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
