# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One plain shell command that reads what an action plugin needs from a device, instead of a module run.

A module run costs the device a Python start and the module's imports, and the controller a fork, an AnsiballZ
payload and a round trip or more; on a re-run where the device is as it should be, a plain command that prints a few
files and their `stat` answers the same question for the price of one round trip. The action plugins that use it
(x509_device_cert, dps_register) fall back to their module whenever the read does not settle the question.

Each section's output is sent in base64: a become method that needs a terminal (sudo over SSH) turns every newline
of the output into CR LF, and a file must come back exactly as it is on the device.
"""

from __future__ import annotations

import base64
import re
import secrets
import shlex
import typing as t

from ansible.module_utils.common.text.converters import to_text

# A section: (name, shell command whose standard output is the section's content). Names: letters, digits, _ and -.
Section = tuple[str, str]


def file_section(name: str, path: str) -> Section:
    """The file's bytes (nothing when it is absent or unreadable)."""
    return name, f"cat -- {shlex.quote(path)}"


def stat_section(name: str, path: str) -> Section:
    """`<octal mode> <uid> <gid> <owner> <group> <type>` of the path itself (a symlink is not followed), nothing when
    it does not exist; parse it with `parse_stat`."""
    return name, f"stat -c '%a %u %g %U %G %F' -- {shlex.quote(path)}"


def read_command(sections: t.Sequence[Section], separator: str) -> str:
    """One shell command printing, after a separator line each, each section's output in base64."""
    parts = []
    for name, command in sections:
        parts.append(f"printf '\\n%s\\n' {shlex.quote(separator + name)}")
        parts.append(f"{{ {command} ; }} 2>/dev/null | base64 -w 0")
    return "; ".join(parts)


def parse_read(output: str, separator: str, names: t.Sequence[str]) -> dict[str, bytes] | None:
    """Each section's output, exactly as on the device, from `read_command`'s output; None when the output is not
    what it prints."""
    output = output.replace("\r\n", "\n")
    pieces = re.split("\n" + re.escape(separator) + "(" + "|".join(map(re.escape, names)) + ")\n", output)
    # What comes before the first separator (a login banner, a become plugin's success line) is not the read's.
    if len(pieces) != 2 * len(names) + 1 or tuple(pieces[1::2]) != tuple(names):
        return None
    try:
        contents = zip(names, pieces[2::2], strict=True)
        return {name: base64.b64decode(text.strip(), validate=True) for name, text in contents}
    except ValueError:
        return None


def read_device(action, sections: t.Sequence[Section]) -> dict[str, bytes] | None:
    """Run the read on the action's host (as the task becomes), or None when it does not answer as expected. A
    connection that fails raises AnsibleError, for the caller to say in one line."""
    separator = f"iotfleet-{secrets.token_hex(8)}-"
    answer = action._low_level_execute_command(read_command(sections, separator))
    if answer.get("rc") != 0:
        return None
    output = to_text(answer.get("stdout", ""), errors="surrogate_or_strict")
    return parse_read(output, separator, [name for name, _command in sections])


def parse_stat(text: bytes) -> dict | None:
    """`stat_section`'s output as {mode, uid, gid, owner, group, type}; None for an absent path."""
    fields = text.decode("utf-8", "replace").strip().split(" ", 5)
    if len(fields) != 6 or not re.fullmatch("[0-7]+", fields[0]):
        return None
    return {
        "mode": int(fields[0], 8),
        "uid": fields[1],
        "gid": fields[2],
        "owner": fields[3],
        "group": fields[4],
        "type": fields[5],
    }


def octal_mode(mode) -> int | None:
    """A file module `mode` as a number, when it is one the read can compare (an int, or octal digits); None for
    one it cannot (symbolic modes such as u=rw): the module must decide."""
    if isinstance(mode, int) and not isinstance(mode, bool):
        return mode
    if isinstance(mode, str) and re.fullmatch("[0-7]{1,4}", mode):
        return int(mode, 8)
    return None


def attributes_match(found: dict | None, kind: str, owner, group, mode) -> bool:
    """Whether the path `found` (parse_stat) is of `kind` (`regular file`, `directory`) and has the owner, group
    and mode the module would set (None: whatever it has). False whenever the read cannot tell."""
    if found is None or found["type"] != kind:
        return False
    if owner is not None and str(owner) not in (found["owner"], found["uid"]):
        return False
    if group is not None and str(group) not in (found["group"], found["gid"]):
        return False
    if mode is None:
        return True
    wanted = octal_mode(mode)
    return wanted is not None and wanted == found["mode"]


def selinux_section() -> Section:
    """`on` when SELinux is enabled: file contexts the read does not compare, so the module must decide."""
    return "selinux", "if test -e /sys/fs/selinux/enforce; then echo on; fi"


INSTALLED = "iotfleet-installed"


def install_command(files: t.Sequence[tuple[str, bytes]], owner, group, mode: int) -> str:
    """One shell command that replaces each (path, content) atomically - a temporary file in the same directory,
    created 0600 by mktemp, given its owner, group and mode, flushed to disk, then renamed over the path - and prints
    INSTALLED when all went through. For public files (certificates): the content is on the command line."""
    parts = ["set -e"]
    ownership = ":".join(str(part) for part in (owner, group) if part is not None)
    for index, (path, content) in enumerate(files):
        directory, name = path.rsplit("/", 1) if "/" in path else (".", path)
        template = (directory or "/") + "/." + name + ".XXXXXX"
        temporary = f"t{index}"
        parts += [
            f"{temporary}=$(mktemp -- {shlex.quote(template)})",
            f"printf '%s' {shlex.quote(base64.b64encode(content).decode('ascii'))} | base64 -d > \"${temporary}\"",
        ]
        if owner is not None:
            parts.append(f'chown -- {shlex.quote(ownership)} "${temporary}"')
        elif group is not None:
            parts.append(f'chgrp -- {shlex.quote(str(group))} "${temporary}"')
        parts += [
            f'chmod -- {mode:o} "${temporary}"',
            f'sync -- "${temporary}"',
            f'mv -f -- "${temporary}" {shlex.quote(path)}',
        ]
    parts.append(f"echo {INSTALLED}")
    # On any failure: no temporary file left behind (the paths keep what they held).
    cleanup = " ".join(f'"${{t{index}:-}}"' for index in range(len(files)))
    return f"trap 'rm -f -- {cleanup} 2>/dev/null' EXIT; " + "; ".join(parts)
