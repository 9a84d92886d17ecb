"""A software TPM 2.0 for tests: swtpm on two loopback TCP ports, driven with tpm2-tools (Debian packages swtpm and
tpm2-tools; tests/containers/install-host-deps.sh installs them).

    def test_something(software_tpm):
        tpm = software_tpm("device-1")        # started, with its EK at 0x81010001 and SRK at 0x81000001
        tpm.endorsement_key                   # TPM2B_PUBLIC bytes: base64 of it is DPS's endorsementKey
        tpm.import_authentication_key(blob)   # DPS's authenticationKey -> HMAC key persisted at 0x81000100
        tpm.hmac(b"data")                     # HMAC-SHA256 inside the TPM with that key

swtpm runs as `swtpm socket --tpm2 --server type=tcp,port=P --ctrl type=tcp,port=P+1 --tpmstate dir=D --flags
not-need-init,startup-clear` (TPM2_Startup done by swtpm itself). tpm2-tools reach it with the TCTI
`swtpm:host=127.0.0.1,port=P` (`mssim:` sends Microsoft-simulator platform commands that swtpm's control port does
not take). swtpm has no resource manager: transient objects are flushed (`tpm2_flushcontext -t`) after every command,
or the TPM runs out of object slots. swtpm serves one client at a time on its data port: a client that holds it (a
Node TPM client while it runs) makes tpm2-tools wait, so take turns.

The device side of DPS's TPM flow here is written from the TPM 2.0 and tpm2-tools documentation, independently of the
emulator's tpm.py: the blob is split by its size fields and every cryptographic step happens inside the TPM.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

EK_HANDLE = 0x81010001
SRK_HANDLE = 0x81000001
ID_KEY_HANDLE = 0x81000100  # where DPS clients persist the authentication key (Node, C SDK, aziot-tpmd)
# The SRK template DPS clients create (Node _srkTemplate, C SDK GetSrkTemplate, aziot-tpmd SRK_RSA_TEMPLATE):
# RSA-2048, AES-128-CFB, no scheme; tpm2_createprimary's default attributes lack noda, so they are given.
SRK_ATTRIBUTES = "restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda"
TOOLS = ("swtpm", "tpm2_createek", "tpm2_createprimary", "tpm2_activatecredential", "tpm2_import", "tpm2_hmac")
INSTALL_HINT = "the software TPM tests need them: run tests/containers/install-host-deps.sh (as root)"
CREDENTIAL_MAGIC = 0xBADCC0DE  # tpm2-tools' credential file header: magic, version 1, TPM2B_ID_OBJECT, secret
START_TIMEOUT = 10.0
COMMAND_TIMEOUT = 60.0


class TpmError(RuntimeError):
    """A tpm2-tools command failed; the message has its command line and stderr."""


def missing_packages() -> list[str]:
    """The Debian packages whose commands are not on PATH."""
    missing = {"swtpm" if tool == "swtpm" else "tpm2-tools" for tool in TOOLS if shutil.which(tool) is None}
    return sorted(missing)


def _free_port_pair() -> int:
    """A port P with P and P+1 free on loopback (swtpm's data and control ports)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free TCP ports on 127.0.0.1")


def split_authentication_key(blob: bytes) -> list[bytes]:
    """DPS's authenticationKey as its six TPM2B fields (each with its u16 size): TPM2B_ID_OBJECT,
    TPM2B_ENCRYPTED_SECRET (for ActivateCredential), TPM2B_PRIVATE, TPM2B_ENCRYPTED_SECRET (for Import), TPM2B_PUBLIC
    (the key), TPM2B_DATA (unused)."""
    fields, offset = [], 0
    for index in range(6):
        if offset + 2 > len(blob):
            raise ValueError(f"authenticationKey ends before field {index + 1} of 6 ({len(blob)} bytes)")
        (size,) = struct.unpack(">H", blob[offset : offset + 2])
        if offset + 2 + size > len(blob):
            raise ValueError(f"authenticationKey field {index + 1} says {size} bytes; fewer follow")
        fields.append(blob[offset : offset + 2 + size])
        offset += 2 + size
    if offset != len(blob):
        raise ValueError(f"authenticationKey has {len(blob) - offset} bytes after its six fields")
    return fields


@dataclasses.dataclass
class SoftwareTpm:
    """One running swtpm and the tpm2-tools commands that drive it."""

    name: str
    state_dir: Path
    port: int
    process: subprocess.Popen
    host: str = "127.0.0.1"
    endorsement_key: bytes = b""  # TPM2B_PUBLIC of the EK at 0x81010001
    storage_root_key: bytes = b""  # TPM2B_PUBLIC of the SRK at 0x81000001

    @property
    def tcti(self) -> str:
        return f"swtpm:host={self.host},port={self.port}"

    # --- running tpm2-tools ---------------------------------------------------------------------------------------
    def run(self, *args: str, data: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """One tpm2-tools command (in the state dir, with this TPM's TCTI), then a flush of transient objects."""
        completed = self._tool(list(args), data, check)
        self._tool(["tpm2_flushcontext", "-t"], None, True)
        return completed

    def _tool(self, args: list[str], data: bytes | None, check: bool) -> subprocess.CompletedProcess:
        env = {**os.environ, "TPM2TOOLS_TCTI": self.tcti}
        completed = subprocess.run(
            args, input=data, capture_output=True, cwd=self.state_dir, env=env, timeout=COMMAND_TIMEOUT, check=False
        )
        if check and completed.returncode != 0:
            stderr = completed.stderr.decode(errors="replace").strip()
            raise TpmError(f"TPM {self.name}: {' '.join(args)} failed ({completed.returncode}): {stderr}")
        return completed

    def file(self, name: str) -> Path:
        return self.state_dir / name

    def read_public(self, handle: int) -> bytes | None:
        """The TPM2B_PUBLIC of a persistent object, None when the handle is empty."""
        out = f"public-{handle:08x}.tpm2b"
        if self.run("tpm2_readpublic", "-c", hex(handle), "-o", out, check=False).returncode != 0:
            return None
        return self.file(out).read_bytes()

    def object_name(self, handle: int) -> bytes:
        """The Name the TPM computes for a persistent object (tpm2_readpublic's `name:` line)."""
        output = self.run("tpm2_readpublic", "-c", hex(handle)).stdout.decode()
        for line in output.splitlines():
            if line.startswith("name:"):
                return bytes.fromhex(line.split(":", 1)[1].strip())
        raise TpmError(f"TPM {self.name}: tpm2_readpublic printed no name:\n{output}")

    # --- the keys a DPS device has --------------------------------------------------------------------------------
    def ensure_keys(self) -> None:
        """Create the EK (tpm2_createek: RSA-2048 template L-1) and the SRK when absent; read both."""
        if self.read_public(EK_HANDLE) is None:
            self.run("tpm2_createek", "-c", hex(EK_HANDLE), "-G", "rsa", "-u", "ek-created.pub")
        if self.read_public(SRK_HANDLE) is None:
            self.run(
                "tpm2_createprimary", "-C", "o", "-g", "sha256", "-G", "rsa2048:null:aes128cfb",
                "-a", SRK_ATTRIBUTES, "-c", "srk.ctx",
            )  # fmt: skip
            self.run("tpm2_evictcontrol", "-C", "o", "-c", "srk.ctx", hex(SRK_HANDLE))
        self.endorsement_key = self.read_public(EK_HANDLE) or b""
        self.storage_root_key = self.read_public(SRK_HANDLE) or b""

    # --- the device side of DPS's TPM flow ------------------------------------------------------------------------
    def import_authentication_key(self, blob: bytes, handle: int = ID_KEY_HANDLE) -> None:
        """What a DPS device does with an authenticationKey, all inside the TPM: ActivateCredential with the EK (under
        a PolicySecret(endorsement) session) for the inner wrapper key, Import of the HMAC key under the SRK, Load,
        and persist it at `handle` (replacing what was there)."""
        id_object, secret, private, seed, public, _unused = split_authentication_key(blob)
        self.file("auth.cred").write_bytes(struct.pack(">II", CREDENTIAL_MAGIC, 1) + id_object + secret)
        self.file("auth.dup").write_bytes(private)
        self.file("auth.seed").write_bytes(seed)
        self.file("auth.pub").write_bytes(public)
        self.run("tpm2_startauthsession", "--policy-session", "-S", "session.ctx")
        try:
            self._tool(["tpm2_policysecret", "-S", "session.ctx", "-c", "e"], None, True)
            self._tool(
                ["tpm2_activatecredential", "-c", hex(SRK_HANDLE), "-C", hex(EK_HANDLE), "-i", "auth.cred",
                 "-o", "auth.inner", "-P", "session:session.ctx"],
                None,
                True,
            )  # fmt: skip
        finally:
            self._tool(["tpm2_flushcontext", "session.ctx"], None, False)
        self.run(
            "tpm2_import", "-C", hex(SRK_HANDLE), "-u", "auth.pub", "-i", "auth.dup", "-s", "auth.seed",
            "-k", "auth.inner", "-r", "auth.priv",
        )  # fmt: skip
        self.file("auth.inner").unlink()
        if self.read_public(handle) is not None:
            self.run("tpm2_evictcontrol", "-C", "o", "-c", hex(handle))
        load = ["tpm2_load", "-C", hex(SRK_HANDLE), "-u", "auth.pub", "-r", "auth.priv", "-c", "auth.ctx"]
        self._tool(load, None, True)
        try:
            self._tool(["tpm2_evictcontrol", "-C", "o", "-c", "auth.ctx", hex(handle)], None, True)
        finally:
            self._tool(["tpm2_flushcontext", "-t"], None, True)

    def hmac(self, data: bytes, handle: int = ID_KEY_HANDLE) -> bytes:
        """HMAC-SHA256 of `data` by the key at `handle`, computed inside the TPM."""
        self.run("tpm2_hmac", "-c", hex(handle), "-g", "sha256", "-o", "hmac.out", data=data)
        return self.file("hmac.out").read_bytes()

    # --- lifetime ---------------------------------------------------------------------------------------------------
    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"swtpm {self.name} exited with {self.process.returncode}: {self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    pass
            except OSError:
                time.sleep(0.05)
                continue
            if self._tool(["tpm2_getrandom", "--hex", "4"], None, False).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"swtpm {self.name} on port {self.port} did not answer within {START_TIMEOUT} s")

    def log(self) -> str:
        path = self.file("swtpm.log")
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_software_tpm(name: str, state_dir: Path | None = None) -> SoftwareTpm:
    """Start a swtpm with its state in `state_dir` (a new temporary directory by default), wait until it answers,
    and make sure it has an EK and an SRK."""
    state_dir = Path(state_dir or tempfile.mkdtemp(prefix=f"swtpm-{name}-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    for _attempt in range(3):  # another process may take the ports between the probe and swtpm's bind
        port = _free_port_pair()
        command = [
            "swtpm", "socket", "--tpm2",
            "--server", f"type=tcp,port={port}", "--ctrl", f"type=tcp,port={port + 1}",
            "--tpmstate", f"dir={state_dir}", "--flags", "not-need-init,startup-clear",
            "--log", f"file={state_dir / 'swtpm.log'}",
        ]  # fmt: skip
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        tpm = SoftwareTpm(name=name, state_dir=state_dir, port=port, process=process)
        try:
            tpm.wait_ready()
        except RuntimeError:
            tpm.stop()
            continue
        tpm.ensure_keys()
        return tpm
    raise RuntimeError(f"swtpm {name} did not start: {tpm.log()}")


SoftwareTpmFactory = Callable[[str], SoftwareTpm]


@pytest.fixture(scope="session")
def software_tpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftwareTpmFactory]:
    """A factory: software_tpm(name) starts a swtpm (EK and SRK created) that is stopped at the end of the session.
    Fails (never skips) when swtpm or tpm2-tools are missing."""
    missing = missing_packages()
    if missing:
        pytest.fail(f"{' and '.join(missing)} not installed: {INSTALL_HINT}", pytrace=False)
    started: list[SoftwareTpm] = []

    def start(name: str) -> SoftwareTpm:
        tpm = start_software_tpm(name, tmp_path_factory.mktemp(f"swtpm-{name}"))
        started.append(tpm)
        return tpm

    yield start
    for tpm in started:
        tpm.stop()


@pytest.fixture(scope="module")
def device_tpm(software_tpm: SoftwareTpmFactory, request: pytest.FixtureRequest) -> SoftwareTpm:
    """The test module's device: a software TPM with its EK and SRK."""
    return software_tpm(f"{request.module.__name__.rsplit('.', 1)[-1]}-device")


@pytest.fixture(scope="module")
def other_tpm(software_tpm: SoftwareTpmFactory, request: pytest.FixtureRequest) -> SoftwareTpm:
    """Another device's TPM in the same test module: an EK and SRK that are not device_tpm's."""
    return software_tpm(f"{request.module.__name__.rsplit('.', 1)[-1]}-other")
