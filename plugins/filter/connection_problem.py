# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: connection_problem
short_description: Explain in one line why Ansible cannot use a device, and how to fix it
version_added: 0.1.0
author: iotfleet developers (@iotfleet)
description:
  - Turns the error text of a failed or unreachable connection (SSH, sudo, Python on the device) into one line that
    names the host, says what went wrong and gives the fix.
  - Recognises a changed SSH host key, an unknown host key under strict checking, a refused SSH key, nothing
    listening, sudo asking for a password, a wrong sudo password, a user who may not use sudo, and a missing
    Python. Anything else is reported with the last line of the original text.
  - Used by the collection's playbooks (C(playbooks/tasks/check_connection.yml)) before any device is changed.
options:
  _input:
    description: The C(msg) of the failed or unreachable task result.
    type: str
    required: true
  host:
    description: The inventory name of the device.
    type: str
    required: true
  user:
    description: The remote user (C(ansible_user)).
    type: str
    default: pi
  address:
    description: The address Ansible connects to (C(ansible_host)); defaults to O(host).
    type: str
  port:
    description: The SSH port (C(ansible_port)).
    type: int
    default: 22
"""

EXAMPLES = r"""
---
- name: Stop on a device Ansible cannot use, saying why
  ansible.builtin.fail:
    msg: "{{ connection_result.msg | iotfleet.aziot.connection_problem(inventory_hostname, ansible_user) }}"
  when: connection_result is failed or connection_result is unreachable
"""

RETURN = r"""
---
_value:
  description: One line, starting with the host name, ending with the fix.
  type: str
"""

import re

_KEYGEN_REMOVE = re.compile(r'ssh-keygen -f "([^"]+)" -R "([^"]+)"')


def _known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.replace("\r", "\n").split("\n") if line.strip()]
    return lines[-1] if lines else "no error text"


def connection_problem(message: str, host: str, user: str = "pi", address: str | None = None, port: int = 22) -> str:
    """One line: `<host>: <what is wrong>; <the fix>`."""
    text = str(message or "")
    address = address or host
    port = int(port or 22)
    where = f"{user}@{address}" + ("" if port == 22 else f" port {port}")
    lowered = text.lower()

    if "remote host identification has changed" in lowered or "has changed and you have requested strict" in lowered:
        remove = _KEYGEN_REMOVE.search(text)
        command = (
            f'ssh-keygen -f "{remove.group(1)}" -R "{remove.group(2)}"'
            if remove
            else f'ssh-keygen -R "{_known_hosts_name(address, port)}"'
        )
        return (
            f"{host}: the SSH host key of {address}:{port} changed since it was recorded in known_hosts; if the device "
            f"was re-imaged or replaced, remove the old key with `{command}` and run again - otherwise do not: the "
            "connection may be intercepted"
        )
    if "host key verification failed" in lowered:
        return (
            f"{host}: the SSH host key of {address}:{port} is not in known_hosts and strict checking is on; check the "
            f"device's key fingerprint, then add it: `ssh-keyscan -p {port} {address} >> ~/.ssh/known_hosts`"
        )
    if "missing sudo password" in lowered or "a password is required" in lowered:
        return (
            f"{host}: sudo on the device asks {user} for a password; give {user} passwordless sudo "
            f"(`echo '{user} ALL=(ALL) NOPASSWD: ALL' | sudo tee /etc/sudoers.d/010_{user}-nopasswd`) "
            "or run ansible-playbook with --ask-become-pass"
        )
    if "incorrect sudo password" in lowered or "incorrect password attempt" in lowered:
        return (
            f"{host}: the sudo password for {user} is wrong; check --ask-become-pass or ansible_become_password "
            "for this device"
        )
    if "not in the sudoers file" in lowered or "is not allowed to run sudo" in lowered:
        return (
            f"{host}: {user} may not use sudo on the device; add {user} to the sudo group (`usermod -aG sudo {user}` "
            "as root) or connect as a user who may"
        )
    if "permission denied (publickey" in lowered or "permission denied, please try again" in lowered:
        return (
            f"{host}: {where} refused the controller's SSH key; install it on the device "
            f"(`ssh-copy-id -p {port} {user}@{address}`) or point ansible_ssh_private_key_file at the right key"
        )
    for symptom in ("connection refused", "connection timed out", "no route to host", "could not resolve hostname"):
        if symptom in lowered:
            return (
                f"{host}: nothing answers SSH at {address}:{port} ({symptom}); check that the device is on and "
                "reachable, that ansible_host/ansible_port are right, and that its SSH server is enabled"
            )
    if re.search(r"python3?: (not found|no such file)|/usr/bin/python3?: no such file", lowered):
        return (
            f"{host}: the device has no Python for Ansible; install it (`sudo apt-get install python3`) or set "
            "ansible_python_interpreter"
        )
    return f"{host}: Ansible cannot use the device: {_last_line(text)}"


class FilterModule:
    def filters(self) -> dict:
        return {"connection_problem": connection_problem}
