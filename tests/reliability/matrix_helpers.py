"""Helpers of the reliability & security fault matrix (docs/reliability.md); conftest.py registers the fixtures.

The shared test support (tests/support) gives the PKI builder, run_playbook, run_module (with killer.py, which
SIGKILLs a module process at a chosen point of its write path) and the emulator factory. Here:
- `pki`, `emulator`: one test PKI and one DPS emulator for the session, X.509 group (root CA) + symmetric-key group;
- `snapshot`: sha256 + mode of every file under a directory, to prove nothing was lost or half-written;
- what a leaked secret would look like, and where to look for one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import stat
import sys
import urllib.parse
from pathlib import Path

import pytest

from tests.support.emulator import fleet_config
from tests.support.pki import Pki

AUDIT_HOOK = Path(__file__).resolve().parent / "hooks" / "audit"

ID_SCOPE = "0ne00RELIAB"
HUB = "hub-reliability.azure-devices.net"
GROUP_KEY = base64.b64encode(b"reliability-group-key-0123456789").decode()


def snapshot(directory: Path) -> dict[str, tuple[str, str]]:
    """{relative path: (sha256, octal mode)} of every regular file under `directory`."""
    found = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.is_symlink():
            found[str(path.relative_to(directory))] = (
                hashlib.sha256(path.read_bytes()).hexdigest(),
                oct(stat.S_IMODE(path.stat().st_mode)),
            )
    return found


def connection(emulator) -> dict:
    return {"id_scope": ID_SCOPE, "provisioning_host": f"{emulator.host}:{emulator.port}", "ca_path": emulator.ca_cert}


def registered_devices(emulator) -> dict[str, dict]:
    return {device["registrationId"]: device for device in emulator.devices()}


# --- secrets: what a leak would look like -------------------------------------------------------------------


def derived_key(group_key: str, registration_id: str) -> str:
    digest = hmac.new(base64.b64decode(group_key), registration_id.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def sas_signatures(device_key: str, registration_id: str, expiries: range) -> list[str]:
    """Every SAS signature the module could have sent for these expiry times (raw and url-encoded)."""
    resource = urllib.parse.quote(f"{ID_SCOPE}/registrations/{registration_id}", safe="")
    found = []
    for expiry in expiries:
        for sr in (resource, f"{ID_SCOPE}/registrations/{registration_id}"):
            signature = base64.b64encode(
                hmac.new(base64.b64decode(device_key), f"{sr}\n{expiry}".encode(), hashlib.sha256).digest()
            ).decode()
            found += [signature, urllib.parse.quote(signature, safe="")]
    return found


def pem_body_lines(pem: bytes) -> list[str]:
    """The base64 lines of a PEM private key: any of them in the output is a leak."""
    return [line for line in pem.decode().splitlines() if line and not line.startswith("-----") and len(line) >= 40]


def device_interpreter(tmp_path: Path, log: Path) -> str:
    """A 'device' Python: the same interpreter with the audit hook logging to the device-side log."""
    wrapper = tmp_path / "device-python"
    wrapper.write_text(
        f'#!/bin/sh\nRELIABILITY_OPEN_LOG="{log}" PYTHONPATH="{AUDIT_HOOK}" exec "{sys.executable}" "$@"\n',
        encoding="utf-8",
    )
    wrapper.chmod(0o755)
    return str(wrapper)


def output_and_files(stdout: str, stderr: str, root: Path, intended: set[Path], since: float) -> dict[str, str]:
    """Where a leaked secret would show: the run's output, every file written under `root` since `since` except
    the `intended` ones (the secrets' own places), and everything new in ~/.ansible/tmp."""
    ansible_tmp = Path.home() / ".ansible" / "tmp"
    haystacks = {"stdout": stdout, "stderr": stderr}
    for path in [*root.rglob("*"), *(ansible_tmp.rglob("*") if ansible_tmp.exists() else [])]:
        try:  # other Ansible runs on this machine come and go in ~/.ansible/tmp
            if path.is_file() and path not in intended and path.stat().st_mtime >= since - 1:
                haystacks[str(path)] = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
    return haystacks


def assert_no_secret(secrets: dict[str, list[str]], haystacks: dict[str, str]) -> None:
    assert all(secrets.values()), [what for what, values in secrets.items() if not values]
    for what, values in secrets.items():
        for where, text in haystacks.items():
            for value in values:
                assert value not in text, f"{what} found in {where}"
    assert "SharedAccessSignature" not in haystacks["stdout"]  # the Authorization header, not even at -vvv


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"), label="Reliability")


@pytest.fixture(scope="session")
def emulator(pki, dps_emulator_factory):
    return dps_emulator_factory(fleet_config(ID_SCOPE, HUB, pki.root_path, GROUP_KEY, prefix="rel"))
