"""Run a module file as __main__, SIGKILLing the process at a chosen point of its write path.

Usage: `install(kill_at, kill_path)` in the module process (tests/support/modules.py `run_module(kill_at=...)` does
it in a forked child), or `python killer.py <module.py> <args.json>` with
  RELIABILITY_KILL_AT=write   -> killed after half of the content reached the temporary file (os.fsync is never
                                 reached: a torn write, like a power cut during the write)
  RELIABILITY_KILL_AT=rename  -> killed after the temporary file is complete and fsynced, just before the rename
  RELIABILITY_KILL_PATH=<path> only the write whose final destination is <path> is killed (empty: the first one).
The kill is SIGKILL: no finally block, no atexit, exactly what the OOM killer or a power cut leaves behind.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys

_real_rename = os.rename
_real_fdopen = os.fdopen
_settings = {"at": None, "path": None}


def install(kill_at: str, kill_path: str | None) -> None:
    """Patch os.rename/os.fdopen in this process so that it SIGKILLs itself at `kill_at` ('write' | 'rename')."""
    _settings.update(at=kill_at, path=kill_path or None)
    os.rename = _rename
    os.fdopen = _fdopen


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _targets(destination: str) -> bool:
    return _settings["path"] is None or os.path.abspath(destination) == os.path.abspath(_settings["path"])


def _rename(source, destination, *args, **kwargs):
    if _settings["at"] == "rename" and _targets(os.fsdecode(destination)):
        _die()
    return _real_rename(source, destination, *args, **kwargs)


class _TornFile:
    """Writes half of the first write to the temporary file, flushes it to disk, then dies."""

    def __init__(self, handle) -> None:
        self._handle = handle

    def write(self, data):
        self._handle.write(data[: max(1, len(data) // 2)])
        self._handle.flush()
        os.fsync(self._handle.fileno())
        _die()

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._handle.__exit__(*exc)


def _fdopen(fd, *args, **kwargs):
    handle = _real_fdopen(fd, *args, **kwargs)
    if _settings["at"] != "write":
        return handle
    # The temporary file is named after its destination (".<basename>.XXXXXXXX.tmp" in the same directory).
    temp_name = os.readlink(f"/proc/self/fd/{fd}")
    kill_path = _settings["path"]
    if kill_path is None or (
        os.path.dirname(temp_name) == os.path.dirname(os.path.abspath(kill_path))
        and os.path.basename(temp_name).startswith("." + os.path.basename(kill_path) + ".")
    ):
        return _TornFile(handle)
    return handle


if __name__ == "__main__":
    install(os.environ["RELIABILITY_KILL_AT"], os.environ.get("RELIABILITY_KILL_PATH"))
    module_file = sys.argv[1]
    sys.argv = [module_file, *sys.argv[2:]]
    runpy.run_path(module_file, run_name="__main__")
