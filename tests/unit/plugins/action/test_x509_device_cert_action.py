"""x509_device_cert, the controller half (the action plugin), with the real module as its device half.

`_execute_module` is replaced by a run of the module in this process (tests/support run_module), so a test sees
what the controller sends to the device and what the device writes, without ansible-playbook.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ansible_collections.iotfleet.aziot.plugins.action import x509_device_cert as action
from ansible_collections.iotfleet.aziot.plugins.module_utils._device_cert import (
    PHASE_INSPECT,
    PHASE_INSTALL,
    controller_argument_spec,
    device_argument_spec,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._pki import issued_by
from ansible_collections.iotfleet.aziot.plugins.modules import x509_device_cert as module
from tests.support.modules import run_module
from tests.support.pki import Pki

REG_ID = "pi-action-01"


class Controller:
    """Runs the action plugin for one task; the module calls it makes are run for real and recorded."""

    def __init__(self, pki: Pki, device: Path) -> None:
        self.pki = pki
        self.device = device
        self.sent: list[dict] = []  # module_args of every module call, in order
        self.reads: list[str] = []  # every plain command the plugin ran on the device (here: this machine)
        self.outputs: list[bytes] = []  # and what each printed
        self.warnings: list[str] = []

    def args(self, **extra) -> dict:
        return {
            "registration_id": REG_ID,
            "key_path": str(self.device / "device.key.pem"),
            "cert_path": str(self.device / "device.cert.pem"),
            "ca_cert_path": "intermediate.pem",  # relative: resolved on the controller (path_dwim)
            "ca_key_path": str(self.pki.intermediate_key_path),
            **extra,
        }

    def run(self, check_mode: bool = False, diff: bool = False, read: bool = True, **args) -> dict:
        """One task; with read=False the device's plain read fails (rc 1), as where a command it needs is missing."""
        task = SimpleNamespace(
            args=self.args(**args), async_val=0, check_mode=check_mode, diff=diff, action="x509_device_cert"
        )
        connection = SimpleNamespace(_shell=SimpleNamespace(tmpdir="/nonexistent/remote-tmp"))
        loader = SimpleNamespace(path_dwim=lambda path: str(self.pki.directory / path))
        plugin = action.ActionModule(task, connection, None, loader, None, None)
        self.sent.clear()
        self.reads.clear()
        self.outputs.clear()

        def execute_module(module_name, module_args, task_vars):
            assert module_name == "iotfleet.aziot.x509_device_cert"
            self.sent.append(dict(module_args))
            args = dict(module_args, _ansible_check_mode=check_mode, _ansible_diff=diff)
            return run_module(module, args).result

        def low_level_execute_command(command, *_args, **_kwargs):
            self.reads.append(command)
            done = subprocess.run(["/bin/sh", "-c", command if read else "exit 1"], capture_output=True, check=False)
            self.outputs.append(done.stdout)
            return {"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr}

        with (
            mock.patch.object(plugin, "_execute_module", execute_module),
            mock.patch.object(plugin, "_low_level_execute_command", low_level_execute_command),
            mock.patch.object(plugin._display, "warning", self.warnings.append),
        ):
            return plugin.run(task_vars={})


@pytest.fixture
def controller(tmp_path: Path) -> Controller:
    device = tmp_path / "device"
    device.mkdir()
    return Controller(Pki(tmp_path / "pki"), device)


def test_signs_on_the_controller_and_sends_the_device_only_its_own_options(controller: Controller) -> None:
    result = controller.run(ca_key_passphrase=None, valid_days=90, read=False)  # the module installs too
    assert not result.get("failed"), result
    assert (result["changed"], result["reissued"], result["key_generated"]) == (True, True, True)
    assert [sent["_phase"] for sent in controller.sent] == [PHASE_INSPECT, PHASE_INSTALL]
    assert (result["device_check"], result["device_install"]) == ("module", "module")
    for sent in controller.sent:
        assert not set(sent) & set(controller_argument_spec()), sorted(sent)
        assert set(sent) - {"_phase", "_certificate", "_full_chain"} == set(device_argument_spec())
    cert = x509.load_pem_x509_certificate((controller.device / "device.cert.pem").read_bytes())
    assert issued_by(cert, controller.pki.intermediate.cert)
    assert cert.subject.rfc4514_string() == f"CN={REG_ID}" == result["subject"]
    key = serialization.load_pem_private_key((controller.device / "device.key.pem").read_bytes(), None)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 90  # valid_days, read on the controller


def test_the_ca_passphrase_never_reaches_the_device(controller: Controller, tmp_path: Path) -> None:
    encrypted = tmp_path / "pki" / "intermediate.encrypted.key"
    encrypted.write_bytes(
        controller.pki.intermediate.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"ca-secret-passphrase"),
        )
    )
    result = controller.run(ca_key_path=str(encrypted), ca_key_passphrase="ca-secret-passphrase")
    assert result["reissued"], result
    assert "ca-secret-passphrase" not in repr(controller.sent)
    wrong = controller.run(ca_key_path=str(encrypted), ca_key_passphrase="wrong", renew_before=400)
    assert wrong["failed"] and wrong["msg"].endswith("could not be decrypted: wrong passphrase"), wrong
    assert controller.sent == []  # refused on the controller before the device is asked anything


def test_check_mode_then_idempotent(controller: Controller) -> None:
    check = controller.run(check_mode=True, diff=True)
    assert (check["changed"], check["reissued"]) == (True, True)
    assert check["reissue_reasons"] == ["new_key: no device key yet"]
    assert check["diff"]["after"] == f"subject: CN={REG_ID}\nissuer: CN=Test Intermediate CA\n"
    assert [sent["_phase"] for sent in controller.sent] == [PHASE_INSPECT]
    assert list(controller.device.iterdir()) == []
    assert controller.run()["changed"] is True
    again = controller.run()
    assert (again["changed"], again["reissued"], again["reissue_reasons"]) == (False, False, [])
    assert controller.sent == [] and again["device_check"] == "read"  # one plain read, no module


def test_full_chain_from_the_controller_chain(controller: Controller) -> None:
    chain_path = controller.device / "full-chain.pem"
    args = {"full_chain_path": str(chain_path), "ca_chain_paths": [str(controller.pki.root_path)]}
    result = controller.run(**args)
    assert result["full_chain"] == [f"CN={REG_ID}", "CN=Test Intermediate CA", "CN=Test Root CA"]
    assert result["full_chain_changed"] is True
    written = chain_path.read_bytes()
    assert written.startswith((controller.device / "device.cert.pem").read_bytes())
    assert written.endswith(controller.pki.intermediate.pem + controller.pki.root.pem)
    without_root = controller.run(full_chain_include_root=False, **args)
    assert without_root["full_chain_changed"] is True and without_root["reissued"] is False
    assert not chain_path.read_bytes().endswith(controller.pki.root.pem)
    again = controller.run(full_chain_include_root=False, **args)
    assert (again["changed"], again["full_chain_changed"]) == (False, False)


def test_full_chain_needs_the_root(controller: Controller) -> None:
    result = controller.run(full_chain_path=str(controller.device / "full-chain.pem"))
    assert result["failed"] and "full_chain_path needs ca_chain_paths" in result["msg"], result
    assert controller.sent == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"registration_id": "pi 01"}, "registration_id: registration id 'pi 01' contains ' '"),
        ({"registration_id": "p" * 65}, "is 65 characters long; DPS allows at most 64 when it is an X.509"),
        ({"valid_days": 0}, f"{REG_ID}: valid_days must be positive, got 0"),
        ({"renew_before": -1}, f"{REG_ID}: renew_before must be positive, got -1"),
        ({"ca_cert_path": "missing.pem"}, "cannot read ca_cert_path"),
    ],
)
def test_refused_on_the_controller_before_the_device_is_asked(controller: Controller, args, message) -> None:
    result = controller.run(**args)
    assert result["failed"] and message in result["msg"], result
    assert controller.sent == []


def test_renew_before_longer_than_the_validity_warns(controller: Controller) -> None:
    controller.run(valid_days=10, renew_before=30)
    assert controller.warnings == [
        f"{REG_ID}: renew_before (30) >= valid_days (10): every run will re-issue the certificate"
    ]


def test_without_cryptography_on_the_controller(controller: Controller, monkeypatch) -> None:
    monkeypatch.setattr(action, "HAS_CRYPTOGRAPHY", False)
    result = controller.run()
    assert result["failed"] and result["msg"].startswith(
        "iotfleet.aziot.x509_device_cert needs the Python library cryptography on the controller"
    )
    assert controller.sent == []


# --- issued_cert_dir: the controller's copy of the certificate the device holds ------------------------------


def leftovers(directory: Path) -> list[str]:
    """Temporary files a write left behind (the copy is written through `.<name>.XXXX` in the same directory)."""
    return sorted(path.name for path in directory.iterdir() if path.name.startswith("."))


def test_issued_copy_is_written_with_the_certificate_and_kept_in_step(controller: Controller, tmp_path: Path) -> None:
    issued = tmp_path / "controller" / "issued"  # missing: created
    copy = issued / f"{REG_ID}.cert.pem"
    check = controller.run(check_mode=True, issued_cert_dir=str(issued))
    assert (check["changed"], check["issued_cert_changed"], check["issued_cert_path"]) == (True, True, str(copy))
    assert not issued.exists()  # never in check mode

    first = controller.run(issued_cert_dir=str(issued))
    assert (first["changed"], first["reissued"], first["issued_cert_changed"]) == (True, True, True)
    assert copy.read_bytes() == (controller.device / "device.cert.pem").read_bytes()
    assert oct(copy.stat().st_mode & 0o777) == "0o644" and leftovers(issued) == []
    assert "issued_cert_dir" not in repr(controller.sent)  # a controller option: the device never sees it

    again = controller.run(issued_cert_dir=str(issued))
    assert (again["changed"], again["issued_cert_changed"]) == (False, False)
    assert controller.run(check_mode=True, issued_cert_dir=str(issued))["changed"] is False

    renewed = controller.run(issued_cert_dir=str(issued), renew_before=400)  # inside the window: re-issued
    assert renewed["reissued"] and renewed["issued_cert_changed"], renewed
    assert copy.read_bytes() == (controller.device / "device.cert.pem").read_bytes()
    assert renewed["sha256_thumbprint"] != first["sha256_thumbprint"]


def test_issued_copy_of_a_device_that_already_has_its_certificate(controller: Controller, tmp_path: Path) -> None:
    """Turning the option on for a provisioned fleet: the copy is written without re-issuing anything."""
    controller.run()
    issued = tmp_path / "issued"
    check = controller.run(check_mode=True, issued_cert_dir=str(issued))
    assert (check["changed"], check["reissued"], check["issued_cert_changed"]) == (True, False, True)
    assert not issued.exists()
    result = controller.run(issued_cert_dir=str(issued))
    assert (result["changed"], result["reissued"], result["issued_cert_changed"]) == (True, False, True)
    assert controller.sent == []  # the device read once, nothing sent back to it
    assert (issued / f"{REG_ID}.cert.pem").read_bytes() == (controller.device / "device.cert.pem").read_bytes()


def test_a_stale_issued_copy_is_replaced(controller: Controller, tmp_path: Path) -> None:
    """The copy holds another certificate (a replaced device's, say): the device's own one wins."""
    issued = tmp_path / "issued"
    issued.mkdir()
    copy = issued / f"{REG_ID}.cert.pem"
    copy.write_bytes(controller.pki.device("old-hardware").issued.pem)
    result = controller.run(issued_cert_dir=str(issued))
    assert result["issued_cert_changed"] is True
    assert copy.read_bytes() == (controller.device / "device.cert.pem").read_bytes()


def test_issued_copy_relative_to_the_playbook(controller: Controller) -> None:
    result = controller.run(issued_cert_dir="issued")  # resolved on the controller, like ca_cert_path
    assert result["issued_cert_path"] == str(controller.pki.directory / "issued" / f"{REG_ID}.cert.pem")
    assert (controller.pki.directory / "issued" / f"{REG_ID}.cert.pem").is_file()


def test_issued_copy_that_cannot_be_written_fails_in_one_line(controller: Controller, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the directory should be\n")
    result = controller.run(issued_cert_dir=str(blocker / "issued"))
    assert result["failed"], result
    assert result["msg"].startswith(f"{REG_ID}: cannot write issued_cert_dir copy {blocker}/issued/{REG_ID}.cert.pem")
    assert "set issued_cert_dir to another one" in result["msg"] and "\n" not in result["msg"]
    # The device got its certificate; the next run writes the copy once the directory is fixed.
    assert (controller.device / "device.cert.pem").is_file()
    blocker.unlink()
    fixed = controller.run(issued_cert_dir=str(blocker / "issued"))
    assert (fixed["reissued"], fixed["issued_cert_changed"]) == (False, True)


def test_a_failed_rename_leaves_the_old_copy_whole(controller: Controller, tmp_path: Path, monkeypatch) -> None:
    issued = tmp_path / "issued"
    controller.run(issued_cert_dir=str(issued))
    copy = issued / f"{REG_ID}.cert.pem"
    before = copy.read_bytes()

    def refuse(_source, _target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(action.os, "replace", refuse)
    result = controller.run(issued_cert_dir=str(issued), renew_before=400)
    assert result["failed"] and "No space left on device" in result["msg"], result
    assert copy.read_bytes() == before and leftovers(issued) == []


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            AnsibleConnectionFailure(
                "Failed to connect to the host via ssh: ssh: connect to host 192.0.2.7 port 2222: Connection refused"
            ),
            f"{REG_ID}: nothing answers SSH at 192.0.2.7:2222 (connection refused); check that the device is on",
        ),
        (AnsibleError("Missing sudo password"), f"{REG_ID}: sudo on the device asks admin for a password;"),
    ],
)
def test_a_device_ansible_cannot_use_fails_in_one_line_with_the_fix(
    controller: Controller, error: Exception, message: str
) -> None:
    """The inspect phase is the task's first round trip to the device: provision.yml sends no ping before it."""
    task = SimpleNamespace(args=controller.args(), async_val=0, check_mode=False, diff=False, action="x509_device_cert")
    loader = DataLoader()
    connection = SimpleNamespace(_shell=SimpleNamespace(tmpdir="/nonexistent/remote-tmp"))
    plugin = action.ActionModule(task, connection, None, loader, Templar(loader=loader), None)
    task_vars = {
        "inventory_hostname": REG_ID,
        "ansible_user": trust_as_template("{{ 'admin' }}"),  # a template, as an inventory may give it
        "ansible_host": "192.0.2.7",
        "ansible_port": 2222,
    }
    with (
        mock.patch.object(plugin, "_execute_module", side_effect=error),
        mock.patch.object(plugin, "_low_level_execute_command", side_effect=error),
        mock.patch.object(loader, "path_dwim", lambda path: str(controller.pki.directory / path)),
    ):
        result = plugin.run(task_vars=task_vars)
    assert result["failed"] and result["msg"].startswith(message), result
    assert "\n" not in result["msg"], result


FULL_CHAIN = "full-chain.pem"


def chain_args(controller: Controller, **extra) -> dict:
    return {
        "full_chain_path": str(controller.device / "certs" / FULL_CHAIN),
        "cert_path": str(controller.device / "certs" / "device.cert.pem"),
        "key_path": str(controller.device / "secrets" / "device.key.pem"),
        "ca_chain_paths": [str(controller.pki.root_path)],
        "key_dir_mode": "0700",
        "cert_dir_mode": "0755",
        **extra,
    }


def test_a_device_as_it_should_be_gets_the_module_s_answer_from_one_read(controller: Controller, tmp_path) -> None:
    args = chain_args(controller, issued_cert_dir=str(tmp_path / "issued"))
    assert controller.run(**args)["changed"] is True
    by_module = controller.run(read=False, **args)
    assert by_module["device_check"] == "module" and [s["_phase"] for s in controller.sent] == [PHASE_INSPECT]
    by_read = controller.run(**args)
    assert by_read["device_check"] == "read" and controller.sent == [] and len(controller.reads) == 1
    # What came back from the device: the key's public half, never the key (each section is base64 on its own line).
    sections = [base64.b64decode(line) for line in controller.outputs[0].split() if not line.startswith(b"iotfleet-")]
    key = serialization.load_pem_private_key(Path(args["key_path"]).read_bytes(), None)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert public in sections and not [section for section in sections if b"PRIVATE" in section]
    assert dict(by_read, device_check="module") == by_module
    check = controller.run(check_mode=True, **args)
    assert (check["changed"], check["device_check"]) == (False, "read")


def _replace_key(args: dict) -> None:
    """Another key of the same type at key_path (a swapped SD card, a restored backup)."""
    new = ec.generate_private_key(ec.SECP256R1())
    pem = new.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    Path(args["key_path"]).write_bytes(pem)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda c, a: _replace_key(a), "key_mismatch"),
        (lambda c, a: Path(a["cert_path"]).chmod(0o600), None),
        (lambda c, a: Path(a["key_path"]).chmod(0o644), None),
        (lambda c, a: Path(a["key_path"]).parent.chmod(0o755), None),
        (lambda c, a: Path(a["full_chain_path"]).write_text(Path(a["cert_path"]).read_text()), None),
        (lambda c, a: Path(a["cert_path"]).unlink(), "missing"),
        (lambda c, a: Path(a["key_path"]).unlink(), "new_key"),
        (lambda c, a: a.update(renew_before=400, valid_days=500), "renewal_window"),
        (lambda c, a: a.update(key_type="ec-p384", regenerate_key="on_mismatch"), "new_key"),
        (lambda c, a: a.update(regenerate_key="always"), "new_key"),
        (lambda c, a: a.update(backup=True), None),
        (lambda c, a: a.update(cert_mode="u=rw,go=r"), None),
    ],
    ids=[
        "another-key",
        "cert-mode",
        "key-mode",
        "key-dir-mode",
        "chain-differs",
        "no-cert",
        "no-key",
        "renewal-window",
        "other-key-type",
        "regenerate-always",
        "backup",
        "symbolic-mode",
    ],
)
def test_anything_to_change_or_any_doubt_runs_the_module(controller: Controller, change, reason) -> None:
    """Each difference the read must not hide: the module runs (and fixes it, here)."""
    args = chain_args(controller)
    assert controller.run(**args)["changed"] is True
    change(controller, args)
    result = controller.run(**args)
    assert result["device_check"] == "module" and controller.sent[0]["_phase"] == PHASE_INSPECT, result
    if reason is not None:
        assert result["reissued"] and result["reissue_reasons"][0].startswith(reason), result
    if args.get("regenerate_key") != "always" and not args.get("backup") and "cert_mode" not in args:
        again = controller.run(**args)
        assert (again["changed"], again["device_check"]) == (False, "read"), again


def test_a_device_without_openssl_is_checked_by_the_module(controller: Controller, monkeypatch) -> None:
    args = chain_args(controller)
    controller.run(**args)
    monkeypatch.setenv("PATH", "/nonexistent")  # the read's commands and openssl are not found
    result = controller.run(**args)
    assert (result["changed"], result["device_check"]) == (False, "module")


def test_the_new_certificate_and_chain_are_written_by_one_plain_command(controller: Controller) -> None:
    """After the device's read (no SELinux, an octal cert_mode, no backup): no install module, the same files."""
    args = chain_args(controller, cert_mode="0640")
    result = controller.run(**args)
    assert (result["changed"], result["device_install"]) == (True, "plain"), result
    assert [sent["_phase"] for sent in controller.sent] == [PHASE_INSPECT]
    assert "PRIVATE" not in controller.reads[-1] and "iotfleet-installed" in controller.reads[-1]
    cert_path, chain_path = Path(args["cert_path"]), Path(args["full_chain_path"])
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert issued_by(cert, controller.pki.intermediate.cert)
    assert chain_path.read_text().startswith(cert_path.read_text()) and chain_path.read_text().count("BEGIN") == 3
    assert {oct(path.stat().st_mode & 0o7777) for path in (cert_path, chain_path)} == {"0o640"}
    assert sorted(p.name for p in cert_path.parent.iterdir()) == sorted([cert_path.name, chain_path.name])
    again = controller.run(**args)
    assert (again["changed"], again["device_check"], "device_install" in again) == (False, "read", False)


def test_a_plain_install_that_fails_leaves_it_to_the_module(controller: Controller, monkeypatch) -> None:
    monkeypatch.setattr(action, "install_command", lambda *_args: "exit 3")
    args = chain_args(controller)
    result = controller.run(**args)
    assert (result["changed"], result["device_install"]) == (True, "module"), result
    assert [sent["_phase"] for sent in controller.sent] == [PHASE_INSPECT, PHASE_INSTALL]
    assert controller.run(**args)["changed"] is False
