"""Unit tests for plugin_utils/_device_read: the one plain command the action plugins read a device with, run here
by /bin/sh as the device would run it."""

from __future__ import annotations

import base64
import os
import subprocess

import pytest

from ansible_collections.iotfleet.aziot.plugins.plugin_utils._device_read import (
    INSTALLED,
    attributes_match,
    file_section,
    install_command,
    octal_mode,
    parse_read,
    parse_stat,
    read_command,
    stat_section,
)

SEPARATOR = "iotfleet-0123456789abcdef-"


def run(sections) -> dict | None:
    answer = subprocess.run(["/bin/sh", "-c", read_command(sections, SEPARATOR)], capture_output=True, check=True)
    return parse_read(answer.stdout.decode(), SEPARATOR, [name for name, _command in sections])


def test_files_come_back_exactly_and_an_absent_one_empty(tmp_path):
    (tmp_path / "a").write_bytes(b"no newline at the end")
    (tmp_path / "b b").write_bytes(b"C\r\nD\n\n")  # a name with a space, CR LF inside
    read = run(
        [
            file_section("a", str(tmp_path / "a")),
            file_section("b", str(tmp_path / "b b")),
            file_section("c", str(tmp_path / "absent")),
        ]
    )
    assert read == {"a": b"no newline at the end", "b": b"C\r\nD\n\n", "c": b""}


@pytest.mark.parametrize(
    "output", ["", "unexpected\n", f"\n{SEPARATOR}a\nYQ==\n", f"\n{SEPARATOR}a\n!!\n\n{SEPARATOR}b\n"]
)
def test_output_that_is_not_the_read_s_settles_nothing(output):
    assert parse_read(output, SEPARATOR, ["a", "b"]) is None


def test_a_terminal_s_line_ends_and_what_comes_before_the_first_separator_change_nothing():
    files = {"marker": b"{}", "chain": b"C\r\nD\n"}
    encoded = "".join(f"\n{SEPARATOR}{name}\n{base64.b64encode(text).decode()}" for name, text in files.items())
    output = ("BECOME-SUCCESS-abc\n" + encoded + "\n").replace("\n", "\r\n")  # sudo over SSH: a terminal
    assert parse_read(output, SEPARATOR, ["marker", "chain"]) == files


def test_stat_of_a_file_a_directory_and_nothing(tmp_path):
    path = tmp_path / "key"
    path.write_text("k")
    path.chmod(0o640)
    tmp_path.chmod(0o750)
    read = run(
        [
            stat_section("file", str(path)),
            stat_section("dir", str(tmp_path)),
            stat_section("none", str(tmp_path / "absent")),
        ]
    )
    found = parse_stat(read["file"])
    assert found["mode"] == 0o640 and found["type"] == "regular file" and found["uid"] == str(os.getuid())
    assert parse_stat(read["dir"])["type"] == "directory" and parse_stat(read["dir"])["mode"] == 0o750
    assert parse_stat(read["none"]) is None
    assert attributes_match(found, "regular file", found["owner"], found["gid"], "0640")
    assert attributes_match(found, "regular file", None, None, None)
    assert not attributes_match(found, "directory", None, None, None)
    assert not attributes_match(found, "regular file", None, None, "0600")
    assert not attributes_match(found, "regular file", "nobody-here", None, None)
    assert not attributes_match(found, "regular file", None, "nogroup-here", None)
    assert not attributes_match(found, "regular file", None, None, "u=rw,g=r")  # symbolic: the module decides
    assert not attributes_match(None, "regular file", None, None, None)


@pytest.mark.parametrize(
    ("mode", "number"), [("0600", 0o600), ("755", 0o755), (0o644, 0o644), ("u=rw", None), (True, None), ("08", None)]
)
def test_modes_the_read_can_compare(mode, number):
    assert octal_mode(mode) == number


def test_install_replaces_each_file_atomically_with_its_mode(tmp_path):
    (tmp_path / "cert.pem").write_text("old")
    files = [(str(tmp_path / "cert.pem"), b"new cert\n"), (str(tmp_path / "chain.pem"), b"new chain\n")]
    done = subprocess.run(["/bin/sh", "-c", install_command(files, None, None, 0o640)], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.split() == [INSTALLED], done
    assert (tmp_path / "cert.pem").read_bytes() == b"new cert\n" and (
        tmp_path / "chain.pem"
    ).read_bytes() == b"new chain\n"
    assert {oct((tmp_path / name).stat().st_mode & 0o7777) for name in ("cert.pem", "chain.pem")} == {"0o640"}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cert.pem", "chain.pem"]  # no temporary file left


def test_an_install_that_fails_says_nothing_and_leaves_no_temporary_file(tmp_path):
    (tmp_path / "cert.pem").write_text("old")
    files = [(str(tmp_path / "cert.pem"), b"new\n")]
    command = install_command(files, "no-such-user-here", None, 0o644)
    done = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True)
    assert done.returncode != 0 and INSTALLED not in done.stdout
    assert (tmp_path / "cert.pem").read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["cert.pem"]
