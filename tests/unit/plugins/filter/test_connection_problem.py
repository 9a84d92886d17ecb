"""The one-line explanations of playbooks/tasks/check_connection.yml (filter iotfleet.aziot.connection_problem)."""

from __future__ import annotations

import pytest

from ansible_collections.iotfleet.aziot.plugins.filter.connection_problem import FilterModule, connection_problem

# What ansible-core 2.19 reported for a device re-created with new host keys on the same port (captured here).
HOST_KEY_CHANGED = (
    'Task failed: Data could not be sent to remote host "127.0.0.1". Make sure this host can be reached over ssh: '
    "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\n@    WARNING: REMOTE HOST IDENTIFICATION HAS "
    "CHANGED!     @\r\n@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\nIT IS POSSIBLE THAT SOMEONE IS "
    "DOING SOMETHING NASTY!\r\nOffending ED25519 key in /tmp/run/known_hosts:1\r\n  remove with:\r\n  ssh-keygen -f "
    '"/tmp/run/known_hosts" -R "[127.0.0.1]:2299"\r\nHost key for [127.0.0.1]:2299 has changed and you have '
    "requested strict checking.\r\nHost key verification failed."
)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (HOST_KEY_CHANGED, 'remove the old key with `ssh-keygen -f "/tmp/run/known_hosts" -R "[127.0.0.1]:2299"`'),
        ("Host key verification failed.", "ssh-keyscan -p 2299 127.0.0.1 >> ~/.ssh/known_hosts"),
        ("Task failed: Missing sudo password", "sudo on the device asks pi for a password"),
        ("Incorrect sudo password", "the sudo password for pi is wrong"),
        ("pi is not in the sudoers file.  This incident will be reported.", "usermod -aG sudo pi"),
        ("Failed to connect to the host via ssh: pi@127.0.0.1: Permission denied (publickey).", "ssh-copy-id -p 2299"),
        ("ssh: connect to host 127.0.0.1 port 2299: Connection refused", "nothing answers SSH at 127.0.0.1:2299"),
        ("/bin/sh: 1: /usr/bin/python3: not found", "the device has no Python for Ansible"),
        ("something new\r\nthe last line says it", "Ansible cannot use the device: the last line says it"),
    ],
)
def test_each_problem_gets_one_line_with_host_and_fix(message: str, expected: str) -> None:
    line = connection_problem(message, "pi-0042", "pi", "127.0.0.1", 2299)
    assert line.startswith("pi-0042: ")
    assert expected in line
    assert "\n" not in line and "\r" not in line


def test_default_port_and_address() -> None:
    line = connection_problem("Host key verification failed.", "pi-0001")
    assert "ssh-keyscan -p 22 pi-0001" in line


def test_registered_as_a_filter() -> None:
    assert FilterModule().filters()["connection_problem"] is connection_problem
