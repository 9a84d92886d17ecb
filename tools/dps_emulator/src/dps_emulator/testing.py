"""Start the DPS emulator as a subprocess from tests or scripts.

Stable interface (other test suites depend on it)::

    from dps_emulator.testing import start_emulator

    emulator = start_emulator("enrollments.yml", tmp_path / "dps")
    try:
        emulator.url        # "https://127.0.0.1:PORT"
        emulator.host       # "127.0.0.1"
        emulator.port       # int
        emulator.ca_cert    # path of the server CA PEM (trust it in the client)
        emulator.state_dir  # Path
        emulator.devices()  # list of registered devices (the "IoT Hub device list")
        emulator.set_faults([{"type": "throttle", "count": 2}])
        emulator.clear_faults()
        emulator.operations()  # DPS operations billed so far: total, by_api, by_kind, per_minute
        emulator.reset_operations()
    finally:
        emulator.stop()

`Emulator` is also a context manager. From a shell script, start
`dps-emulator serve --config F --state-dir D &` and wait with `dps-emulator wait --state-dir D`.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The directory that holds the `dps_emulator` package: put on the child's PYTHONPATH when this interpreter found the
# package some other way than sys.path (e.g. a source checkout imported by path), so the child runs the same code.
PACKAGE_PARENT = Path(__file__).resolve().parent.parent
ENDPOINT_FILE = "endpoint.json"


class EmulatorStartError(RuntimeError):
    """The emulator process did not come up."""


def read_endpoint(state_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Return the parsed endpoint.json of a state dir, or None when it is absent or incomplete."""
    path = Path(state_dir) / ENDPOINT_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def wait_for_endpoint(
    state_dir: str | os.PathLike[str], timeout: float = 20.0, pid: int | None = None
) -> dict[str, Any]:
    """Wait until endpoint.json exists (and names `pid` when given); return its content."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        endpoint = read_endpoint(state_dir)
        if endpoint is not None and (pid is None or endpoint.get("pid") == pid):
            return endpoint
        time.sleep(0.05)
    raise EmulatorStartError(f"DPS emulator did not write {Path(state_dir) / ENDPOINT_FILE} within {timeout} s")


@dataclass
class Emulator:
    """A running emulator process and where to reach it."""

    url: str
    host: str
    port: int
    ca_cert: str
    state_dir: Path
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    _ssl_context: ssl.SSLContext | None = field(default=None, repr=False)

    # --- admin API -----------------------------------------------------------------------------------------
    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context(cafile=self.ca_cert)
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(  # noqa: S310 - https URL built from our own endpoint.json
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, context=self._ssl_context, timeout=10) as response:  # noqa: S310
            return json.loads(response.read() or b"null")

    def devices(self) -> list[dict[str, Any]]:
        """Registered devices (GET /_emulator/devices)."""
        return self._admin("GET", "/_emulator/devices")

    def registrations(self) -> dict[str, Any]:
        """Every registration record, keyed by registration id (GET /_emulator/registrations)."""
        return self._admin("GET", "/_emulator/registrations")

    def set_faults(self, faults: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Add runtime faults (POST /_emulator/faults); returns the active fault list."""
        return self._admin("POST", "/_emulator/faults", {"faults": faults})

    def clear_faults(self) -> list[dict[str, Any]]:
        """Remove every fault (DELETE /_emulator/faults)."""
        return self._admin("DELETE", "/_emulator/faults")

    def operations(self) -> dict[str, Any]:
        """The DPS operations counted as DPS bills them (GET /_emulator/operations): total, by_api, by_kind,
        throttled, per_minute."""
        return self._admin("GET", "/_emulator/operations")

    def reset_operations(self) -> dict[str, Any]:
        """Start counting DPS operations from zero (DELETE /_emulator/operations); returns the zeroed counters."""
        return self._admin("DELETE", "/_emulator/operations")

    # --- lifecycle -----------------------------------------------------------------------------------------
    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process (SIGTERM, then SIGKILL after `timeout`)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)

    def log(self) -> str:
        """What the emulator wrote to stdout/stderr so far."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_emulator(
    config_path: str | os.PathLike[str],
    state_dir: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 0,
    extra_args: list[str] | tuple[str, ...] = (),
    timeout: float = 20.0,
    python: str | None = None,
) -> Emulator:
    """Start `python -m dps_emulator serve` and wait until it listens.

    `extra_args` go to `serve` as given, e.g. `["--san", "dps.local"]` or `["--cert", F, "--key", K]`.
    The emulator's output goes to `<state_dir>/emulator.log`.
    """
    state = Path(state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    (state / ENDPOINT_FILE).unlink(missing_ok=True)
    log_path = state / "emulator.log"
    command = [
        python or sys.executable,
        "-m",
        "dps_emulator",
        "serve",
        "--config",
        str(Path(config_path).resolve()),
        "--state-dir",
        str(state),
        "--host",
        host,
        "--port",
        str(port),
        *extra_args,
    ]
    env = dict(os.environ)
    if str(PACKAGE_PARENT) not in sys.path:
        env["PYTHONPATH"] = str(PACKAGE_PARENT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            command, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + timeout
    endpoint = None
    while time.monotonic() < deadline:
        endpoint = read_endpoint(state)
        if endpoint is not None and endpoint.get("pid") == process.pid:
            break
        if process.poll() is not None:
            output = log_path.read_text(encoding="utf-8", errors="replace").strip()
            raise EmulatorStartError(f"DPS emulator exited with code {process.returncode}: {output}")
        time.sleep(0.05)
    else:
        process.kill()
        process.wait()
        raise EmulatorStartError(f"DPS emulator did not write {state / ENDPOINT_FILE} within {timeout} s")
    return Emulator(
        url=endpoint["url"],
        host=endpoint["host"],
        port=int(endpoint["port"]),
        ca_cert=endpoint["ca_cert"],
        state_dir=state,
        process=process,
        log_path=log_path,
    )
