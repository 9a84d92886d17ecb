"""Shared helpers of the reliability & security fault matrix (docs/reliability.md); conftest.py has the fixtures.

- `Pki`: a root and an intermediate CA made with `cryptography`, plus device certificates with any validity window.
- `run_playbook`: ansible-playbook on localhost; the registered results come back as a dict (a last task writes
  them as JSON), so the Python test asserts on them together with the files on disk.
- `run_module`: one module process (forked), executed directly (`<module file> <args.json>`, the way AnsibleModule
  reads its arguments outside AnsiballZ), optionally with `hooks/killer.py` installed, which SIGKILLs the process at
  a chosen point of the write path.
- `snapshot`: sha256 + mode of every file under a directory, to prove nothing was lost or half-written.
- `emulator`: one DPS emulator for the session (tools/dps_emulator), X.509 group (root CA) + symmetric-key group.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import os
import runpy
import signal
import stat
import subprocess
import sys
import traceback
import urllib.parse
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
from dps_emulator.testing import start_emulator

sys.path.insert(0, str(Path(__file__).resolve().parent / "hooks"))
import killer

BIN = Path(sys.executable).parent
AUDIT_HOOK = Path(__file__).resolve().parent / "hooks" / "audit"
COLLECTIONS = REPO_ROOT / ".collections"
MODULES = REPO_ROOT / "plugins" / "modules"

ID_SCOPE = "0ne00RELIAB"
HUB = "hub-reliability.azure-devices.net"
GROUP_KEY = base64.b64encode(b"reliability-group-key-0123456789").decode()
PEM = serialization.Encoding.PEM


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def issue(
    subject_cn: str,
    key,
    issuer_cert,
    issuer_key,
    ca: bool,
    not_before: datetime.timedelta = datetime.timedelta(minutes=-5),
    not_after: datetime.timedelta = datetime.timedelta(days=2),
) -> x509.Certificate:
    """A certificate valid from now+not_before to now+not_after (self-signed when issuer_cert is None)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject_cn))
        .issuer_name(issuer_cert.subject if issuer_cert is not None else _name(subject_cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + not_before)
        .not_valid_after(now + not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def key_pem(key) -> bytes:
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


class Pki:
    """Root -> intermediate CA written to `directory`; `device()` writes a device key, full chain and leaf."""

    def __init__(self, directory: Path, name: str = "Reliability") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = issue(f"{name} Root CA", self.root_key, None, self.root_key, ca=True, not_after=_days(3650))
        self.intermediate_key = ec.generate_private_key(ec.SECP256R1())
        self.intermediate = issue(
            f"{name} Intermediate CA", self.intermediate_key, self.root, self.root_key, True, not_after=_days(1825)
        )
        self.root_path = directory / "root.pem"
        self.root_path.write_bytes(self.root.public_bytes(PEM))
        self.intermediate_path = directory / "intermediate.pem"
        self.intermediate_path.write_bytes(self.intermediate.public_bytes(PEM))
        self.intermediate_key_path = directory / "intermediate.key"
        self.intermediate_key_path.write_bytes(key_pem(self.intermediate_key))
        self.intermediate_key_path.chmod(0o600)

    def device(
        self,
        registration_id: str,
        cn: str | None = None,
        not_before: datetime.timedelta = datetime.timedelta(minutes=-5),
        not_after: datetime.timedelta = datetime.timedelta(days=2),
    ) -> dict[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = issue(cn or registration_id, key, self.intermediate, self.intermediate_key, False, not_before, not_after)
        paths = {name: self.directory / f"{registration_id}.{name}.pem" for name in ("key", "chain", "leaf")}
        paths["key"].write_bytes(key_pem(key))
        paths["key"].chmod(0o600)
        paths["chain"].write_bytes(leaf.public_bytes(PEM) + self.intermediate.public_bytes(PEM))
        paths["leaf"].write_bytes(leaf.public_bytes(PEM))
        return {name: str(path) for name, path in paths.items()}


def _days(days: int) -> datetime.timedelta:
    return datetime.timedelta(days=days)


def clean_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
    env.update(
        ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    env.update(extra)
    return env


class PlaybookRun:
    def __init__(self, process: subprocess.CompletedProcess, results: dict) -> None:
        self.process = process
        self.results = results
        self.stdout = process.stdout
        self.stderr = process.stderr

    def output(self) -> str:
        return self.stdout[-6000:] + self.stderr[-3000:]


def run_playbook(
    work: Path,
    tasks: list[dict],
    variables: dict | None = None,
    verbosity: int = 0,
    interpreter: str | None = None,
    env: dict[str, str] | None = None,
    name: str = "playbook",
) -> PlaybookRun:
    """Run `tasks` on localhost; every `register:` name comes back in `.results` (None when skipped)."""
    work.mkdir(parents=True, exist_ok=True)
    registered = [task["register"] for task in tasks if "register" in task]
    results_path = work / f"{name}.results.json"
    if registered:
        literal = ", ".join(f"'{item}': {item} | default(None)" for item in registered)
        tasks = [
            *tasks,
            {
                "name": "Save the registered results for the Python test",
                "ansible.builtin.copy": {
                    "content": "{{ {%s} | to_json }}" % literal,
                    "dest": str(results_path),
                    "mode": "0600",
                },
            },
        ]
    playbook = [{"name": "reliability", "hosts": "localhost", "gather_facts": False, "tasks": tasks}]
    playbook_path = work / f"{name}.yml"
    playbook_path.write_text(yaml.safe_dump(playbook, sort_keys=False), encoding="utf-8")
    vars_path = work / f"{name}.vars.json"
    vars_path.write_text(json.dumps(variables or {}), encoding="utf-8")
    command = [
        str(BIN / "ansible-playbook"),
        "-i",
        "localhost,",
        "-c",
        "local",
        "-e",
        f"ansible_python_interpreter={interpreter or sys.executable}",
        "-e",
        f"@{vars_path}",
        str(playbook_path),
    ]
    if verbosity:
        command.append("-" + "v" * verbosity)
    process = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    results = json.loads(results_path.read_text(encoding="utf-8")) if results_path.exists() else {}
    return PlaybookRun(process, results)


class ModuleRun:
    def __init__(self, returncode: int, output: str) -> None:
        self.returncode = returncode
        self.text = output
        self.result = None
        for line in reversed(output.strip().splitlines()):
            if line.startswith("{"):
                try:
                    self.result = json.loads(line)
                except ValueError:
                    continue
                break

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL

    def output(self) -> str:
        return f"rc={self.returncode}\n{self.text[-6000:]}"


def run_module(
    module: str, args: dict, work: Path, kill_at: str | None = None, kill_path: str | None = None
) -> ModuleRun:
    """Run plugins/modules/<module>.py in its own (forked) process, the way AnsibleModule runs outside AnsiballZ.

    The child process reads its arguments from a file (`<module.py> <args.json>`) and exits like a module does;
    forking from the test process just saves re-importing ansible for every run. `kill_at` ('write' | 'rename'):
    the child SIGKILLs itself at that point of writing `kill_path` (hooks/killer.py).
    """
    work.mkdir(parents=True, exist_ok=True)
    args_path = work / f"{module}.args.json"
    args_path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}), encoding="utf-8")
    out_path = work / f"{module}.out"
    module_file = str(MODULES / f"{module}.py")
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the module process
        code = 70
        try:
            fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout = sys.stderr = open(1, "w", closefd=False)  # noqa: SIM115 - flushed in finally
            os.chdir(work)
            if kill_at:
                killer.install(kill_at, kill_path)
            sys.argv = [module_file, str(args_path)]
            runpy.run_path(module_file, run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            os._exit(code)
    _pid, status = os.waitpid(pid, 0)
    returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return ModuleRun(returncode, out_path.read_text(encoding="utf-8", errors="replace"))


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
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def emulator(pki, tmp_path_factory):
    directory = tmp_path_factory.mktemp("dps")
    config = {
        "id_scope": ID_SCOPE,
        "linked_hubs": [HUB],
        "defaults": {"assignment_delay": 0.2, "retry_after": 1},
        "enrollment_groups": [
            {"name": "rel-x509", "attestation": "x509", "ca_cert": str(pki.root_path), "verified": True},
            {"name": "rel-sym", "attestation": "symmetric_key", "primary_key": GROUP_KEY},
        ],
    }
    config_path = directory / "enrollments.yml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    running = start_emulator(config_path, directory / "state")
    try:
        yield running
    finally:
        running.stop()
