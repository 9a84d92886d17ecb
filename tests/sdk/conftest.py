"""What the suites of tests/sdk share: node with the SDKs of package.json, an emulator on port 443 of a loopback
address of its own, and run_node.

The SDKs take a host name and always dial port 443 (azure-iot-http-base's Http.buildRequest sets a port only from
request options that neither the service client nor the device transport passes), so the emulator listens on port
443 of a loopback address of its own (127.0.0.N), that address is the device client's provisioning host and the
connection string's HostName, and node trusts the emulator's server CA through NODE_EXTRA_CA_CERTS.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.emulator import fleet_config
from tests.support.fleet import POLICY, POLICY_KEY, POLICY_RIGHTS
from tests.support.pki import Pki

SDK_DIR = Path(__file__).resolve().parent
ID_SCOPE = "0ne00SDKJDG"
HUB = "hub-sdk.azure-devices.net"
GROUP_KEY = base64.b64encode(b"sdk-judge-symmetric-group-key-01").decode()
PORT = 443  # the only port the SDKs dial


def loopback_address() -> str:
    """A 127.0.0.N whose port 443 is free (so parallel sessions do not collide), or a one-line failure."""
    for last in range(2, 255):
        address = f"127.0.0.{last}"
        with socket.socket() as probe:
            try:
                probe.bind((address, PORT))
            except PermissionError:
                pytest.fail(
                    "tests/sdk: Microsoft's SDKs dial port 443 only: run as root or lower "
                    "net.ipv4.ip_unprivileged_port_start to 443"
                )
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise
            return address
    pytest.fail("tests/sdk: port 443 is taken on every 127.0.0.N address")


@pytest.fixture(scope="module")
def node() -> str:
    """node, with every package of package.json installed."""
    found = shutil.which("node")
    wanted = json.loads((SDK_DIR / "package.json").read_text(encoding="utf-8"))["dependencies"]
    missing = [name for name in wanted if not (SDK_DIR / "node_modules" / name / "package.json").is_file()]
    if not found or missing:
        pytest.fail("tests/sdk: needs node and the SDKs: run `make sdk` (npm ci --prefix tests/sdk)")
    return found


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("sdk-pki"), label="SDK")


@pytest.fixture(scope="module")
def emulator(dps_emulator_factory, pki: Pki):
    policies = [{"name": POLICY, "primary_key": POLICY_KEY, "rights": POLICY_RIGHTS}]
    config = fleet_config(ID_SCOPE, HUB, pki.root_path, GROUP_KEY, prefix="sdk", shared_access_policies=policies)
    return dps_emulator_factory(config, "dps-sdk", host=loopback_address(), port=PORT)


def run_node(node: str, emulator, script: str, *args: str, **env: str) -> dict:
    """Run a script of tests/sdk against `emulator`; its JSON outcome."""
    environment = {
        **os.environ,
        "NODE_EXTRA_CA_CERTS": emulator.ca_cert,
        "DPS_CONNECTION_STRING": (
            f"HostName={emulator.host};SharedAccessKeyName={POLICY};SharedAccessKey={POLICY_KEY}"
        ),
        "DPS_PROVISIONING_HOST": emulator.host,
        "DPS_ID_SCOPE": ID_SCOPE,
        **env,
    }
    done = subprocess.run(
        [node, script, *args], cwd=SDK_DIR, env=environment, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"node {script} {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
    return json.loads(done.stdout)
