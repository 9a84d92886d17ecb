"""Record every file a Python process opens (PEP 578 audit hook), for tests/reliability/test_secrets.py.

Active only when RELIABILITY_OPEN_LOG names a log file; each `open` audit event (open(), os.open(), io.open_code())
appends "<pid> <absolute path>" to it. The log is opened once, before the hook is installed, and written with
os.write, which raises no audit event, so logging does not recurse. Forked children (Ansible workers) keep logging.
"""

import os
import sys

_LOG = os.environ.get("RELIABILITY_OPEN_LOG")

if _LOG:
    _fd = os.open(_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def _record(event, args):
        if event != "open" or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        try:
            path = os.path.abspath(os.fsdecode(args[0]))
            os.write(_fd, f"{os.getpid()} {path}\n".encode("utf-8", "backslashreplace"))
        except Exception:  # an audit hook must never break the process it watches
            pass

    sys.addaudithook(_record)
