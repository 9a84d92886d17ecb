"""`Chromium`: Debian's chromium, headless, driven over the DevTools protocol (websocket-client), for tests of the
pages the collection writes (the fleet report).

    with Chromium(tmp_path, width=1400, height=1000) as browser:
        browser.open(page)                                  # file:// URL or path; waits for the load
        assert browser.evaluate("document.title") == "..."
        browser.screenshot(tmp_path / "page.png")
        browser.requests                                    # every URL the page asked for

A new profile per browser (--user-data-dir), no network services of its own (no sync, updates, QUIC, background
fetches); the DevTools port is chosen by Chromium and read from the profile's DevToolsActivePort.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import websocket

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


class BrowserError(RuntimeError):
    """Chromium did not start, or a DevTools command or page script failed."""


class Chromium:
    def __init__(self, work: Path, width: int = 1400, height: int = 1000, timeout: float = 30) -> None:
        if CHROMIUM is None:
            raise BrowserError(
                "chromium is not installed (apt-get install chromium: tests/containers/install-host-deps.sh)"
            )
        self.work = work
        self.width, self.height, self.timeout = width, height, timeout
        self.requests: list[str] = []
        self._next_id = 0
        self._process: subprocess.Popen | None = None
        self._socket = None

    def __enter__(self) -> Chromium:
        profile = self.work / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        self._log = (self.work / "chromium.log").open("w")
        argv = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--window-size={self.width},{self.height}"]
        self._process = subprocess.Popen([*argv, "about:blank"], stdout=self._log, stderr=subprocess.STDOUT)
        port = self._port(profile / "DevToolsActivePort")
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with no_proxy.open(f"http://127.0.0.1:{port}/json/list", timeout=self.timeout) as answer:
            targets = json.load(answer)
        page = next(target for target in targets if target["type"] == "page")
        self._socket = websocket.create_connection(
            page["webSocketDebuggerUrl"], timeout=self.timeout, suppress_origin=True, http_no_proxy=["127.0.0.1"]
        )
        self.send("Network.enable")
        self.send("Page.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
        )
        return self

    def __exit__(self, *_exc) -> None:
        try:
            if self._socket is not None:
                self._socket.close()
        finally:
            if self._process is not None:
                self._process.terminate()
                try:
                    self._process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            self._log.close()

    def _port(self, port_file: Path) -> int:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrowserError(f"chromium exited with {self._process.returncode}: see {self._log.name}")
            if port_file.exists() and port_file.read_text().strip():
                return int(port_file.read_text().splitlines()[0])
            time.sleep(0.1)
        raise BrowserError(f"chromium did not open its DevTools port within {self.timeout} s")

    def send(self, method: str, params: dict | None = None) -> dict:
        """One DevTools command; its result. Events that arrive meanwhile are noted (requests) and dropped."""
        self._next_id += 1
        command_id = self._next_id
        self._socket.send(json.dumps({"id": command_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            message = json.loads(self._socket.recv())
            if message.get("method") == "Network.requestWillBeSent":
                self.requests.append(message["params"]["request"]["url"])
            if message.get("id") == command_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
        raise BrowserError(f"{method}: no answer within {self.timeout} s")

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (JSON-serialisable); a script error raises."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError(f"{expression[:80]}...: {details.get('exception', {}).get('description', details)}")
        return result["result"].get("value")

    def open(self, page: Path | str) -> None:
        url = page.resolve().as_uri() if isinstance(page, Path) else page
        self.send("Page.navigate", {"url": url})
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.evaluate("document.readyState") == "complete":
                return
            time.sleep(0.05)
        raise BrowserError(f"{url} did not finish loading within {self.timeout} s")

    def screenshot(self, path: Path) -> Path:
        """A PNG of the viewport."""
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
        return path
