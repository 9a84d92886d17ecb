"""Fault matrix, files: corrupt PEM, wrong CA, hand-edited config, killed runs, read-only and full filesystems.

Every case checks the three things of docs/reliability.md: a one-line error naming the device (or the file) and
the fix, or success when the case is recoverable; the files before and after (sha256 + mode); a plain re-run that
converges (changed, then not changed).
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from matrix_helpers import snapshot

from tests.support.modules import run_module
from tests.support.pki import DAY, Issued, Pki, issue, key_pem, new_key
from tests.support.playbook import run_playbook

# Each module run in its own process, like a module on a device (tests/support/modules.py).
run_isolated = functools.partial(run_module, isolated=True)


def refused(result: dict) -> bool:
    """A task run with failed_when: false failed when it carries a message (successes here have none)."""
    return bool(result.get("msg")) and result.get("failed_when_result") is False


def one_line(message: str) -> bool:
    return bool(message) and "\n" not in message.strip() and "Traceback" not in message


def device_task(name: str, register: str, registration_id: str, device_dir: str, ca: str, **extra) -> dict:
    args = {
        "registration_id": registration_id,
        "key_path": f"{device_dir}/device.key",
        "cert_path": f"{device_dir}/device.pem",
        "ca_cert_path": f"{ca}.pem",
        "ca_key_path": f"{ca}.key",
        **extra,
    }
    return {"name": name, "iotfleet.aziot.x509_device_cert": args, "register": register, "failed_when": False}


# --------------------------------------------------------------------------------------------------------------------
# PKI inputs: corrupt PEM, mismatched/expired CA, a certificate from another CA


@pytest.fixture(scope="module")
def ca_variants(tmp_path_factory, pki: Pki) -> dict[str, str]:
    """CA files on the controller: good, corrupt cert, corrupt key, mismatched pair, expired."""
    directory = tmp_path_factory.mktemp("ca-variants")
    good_cert = pki.intermediate.pem
    good_key = pki.intermediate.key_pem
    expired = issue("Expired Intermediate CA", pki.root, ca=True, not_before=-30 * DAY, not_after=-DAY)
    other_pki = Pki(directory / "other", label="Other")
    variants = {
        "good": (good_cert, good_key),
        "corrupt_cert": (good_cert[:60] + b"!!corrupt!!" + good_cert[80:], good_key),
        "corrupt_key": (good_cert, good_key[:50] + b"#corrupt#" + good_key[70:]),
        "mismatch": (good_cert, key_pem(new_key())),
        "expired": (expired.pem, expired.key_pem),
        "other": (other_pki.intermediate.pem, other_pki.intermediate.key_pem),
    }
    paths = {}
    for name, (cert, key) in variants.items():
        (directory / f"{name}.pem").write_bytes(cert)
        (directory / f"{name}.key").write_bytes(key)
        (directory / f"{name}.key").chmod(0o600)
        paths[name] = str(directory / name)
    return paths


def test_pki_inputs_refused_or_repaired_then_converge(tmp_path: Path, ca_variants: dict[str, str]) -> None:
    devices = tmp_path / "devices"
    refusals = {  # case -> (CA variant, what the one-line message must say)
        "corrupt-cacert": ("corrupt_cert", ["ca_cert_path", "certificate #1 is corrupt"]),
        "corrupt-cakey": ("corrupt_key", ["ca_key_path", "is not a readable PEM private key"]),
        "mismatch": ("mismatch", ["the CA key does not belong to the CA certificate", "give the matching key"]),
        "expired-ca": ("expired", ["the CA certificate expired on", "renew the CA"]),
    }
    for case in [*refusals, "corrupt-key", "corrupt-cert", "other-ca"]:
        (devices / case).mkdir(parents=True)
    # A corrupt device key, a corrupt device certificate, a certificate issued by another CA.
    (devices / "corrupt-key" / "device.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64\n")
    (devices / "corrupt-key" / "device.key").chmod(0o600)
    (devices / "corrupt-cert" / "device.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\ntruncated")
    (devices / "corrupt-cert" / "device.key").write_bytes(key_pem(new_key()))
    (devices / "corrupt-cert" / "device.key").chmod(0o600)
    other_ca = Issued(
        x509.load_pem_x509_certificate(Path(ca_variants["other"] + ".pem").read_bytes()),
        serialization.load_pem_private_key(Path(ca_variants["other"] + ".key").read_bytes(), None),
    )
    other = issue("pi-other-ca", other_ca, not_after=300 * DAY)
    (devices / "other-ca" / "device.key").write_bytes(other.key_pem)
    (devices / "other-ca" / "device.key").chmod(0o600)
    (devices / "other-ca" / "device.pem").write_bytes(other.pem)
    before = snapshot(devices)

    tasks = [
        device_task(f"Case {case}", case.replace("-", "_"), f"pi-{case}", str(devices / case), ca_variants[variant])
        for case, (variant, _words) in refusals.items()
    ]
    tasks += [
        device_task(
            "Corrupt device key", "corrupt_key", "pi-corrupt-key", str(devices / "corrupt-key"), ca_variants["good"]
        ),
        device_task(
            "Corrupt cert", "corrupt_cert", "pi-corrupt-cert", str(devices / "corrupt-cert"), ca_variants["good"]
        ),
        device_task("Other CA", "other_ca", "pi-other-ca", str(devices / "other-ca"), ca_variants["good"]),
    ]
    run = run_playbook(tmp_path, tasks, name="faults")
    results = run.results
    assert results, run.output()
    for case, (_variant, words) in refusals.items():
        result = results[case.replace("-", "_")]
        assert refused(result), (case, result)
        message = result["msg"]
        assert one_line(message), message
        assert message.startswith(f"pi-{case}: "), message  # names the device
        for word in words:
            assert word in message, (case, message)
    # A corrupt device key is refused with the fix (never silently replaced: it may be the enrolled identity).
    message = results["corrupt_key"]["msg"]
    assert refused(results["corrupt_key"]) and one_line(message), message
    assert message.startswith("pi-corrupt-key: device key") and "regenerate_key=on_mismatch" in message, message
    # Recoverable: a corrupt certificate and one issued by another CA are re-issued, with the reason.
    assert results["corrupt_cert"]["reissued"], results["corrupt_cert"]
    assert [r.split(":")[0] for r in results["corrupt_cert"]["reissue_reasons"]] == ["unparseable"]
    assert results["other_ca"]["reissued"], results["other_ca"]
    assert [r.split(":")[0] for r in results["other_ca"]["reissue_reasons"]] == ["issuer_mismatch"]

    after = snapshot(devices)
    # Nothing touched on refused devices (the CA is checked on the controller before the device is contacted),
    # nor the corrupt key; only the two recoverable devices changed, and only what had to.
    for case in [*refusals, "corrupt-key"]:
        assert {k: v for k, v in after.items() if k.startswith(case + "/")} == {
            k: v for k, v in before.items() if k.startswith(case + "/")
        }, case
    assert after["other-ca/device.key"] == before["other-ca/device.key"]  # same key, new certificate
    assert after["other-ca/device.pem"] != before["other-ca/device.pem"]
    new_cert = x509.load_pem_x509_certificate((devices / "other-ca" / "device.pem").read_bytes())
    assert "Reliability Intermediate CA" in new_cert.issuer.rfc4514_string()
    assert after["corrupt-cert/device.key"] == before["corrupt-cert/device.key"]  # the key is kept

    # A plain re-run with the inputs fixed converges: changed once, then not changed.
    converge = []
    for case in [*refusals, "corrupt-key", "corrupt-cert", "other-ca"]:
        extra = {"regenerate_key": "on_mismatch", "backup": True} if case == "corrupt-key" else {}
        for attempt in (1, 2):
            converge.append(
                device_task(
                    f"Re-run {case} #{attempt}",
                    f"{case.replace('-', '_')}_{attempt}",
                    f"pi-{case}",
                    str(devices / case),
                    ca_variants["good"],
                    **extra,
                )
            )
    rerun = run_playbook(tmp_path, converge, name="rerun")
    for case in [*refusals, "corrupt-key", "corrupt-cert", "other-ca"]:
        first, second = (rerun.results[f"{case.replace('-', '_')}_{n}"] for n in (1, 2))
        assert not refused(first) and not refused(second), (case, first, second)
        assert first["changed"] is (case not in ("corrupt-cert", "other-ca")), (case, first)
        assert second["changed"] is False, (case, second)
    # backup=true kept the corrupt key instead of losing it
    backups = [p for p in (devices / "corrupt-key").iterdir() if p.name.startswith("device.key.") and "~" in p.name]
    assert backups and backups[0].read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\nnot base64")


# --------------------------------------------------------------------------------------------------------------------
# A hand-edited config.toml with a syntax error


def test_broken_config_toml_is_refused_not_overwritten_then_converges(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "config.toml"
    config.parent.mkdir()
    config.write_text('# edited by hand\n[provisioning]\nsource = "dps\nid_scope = "0ne00ABCDEF"\n', encoding="utf-8")
    config.chmod(0o600)
    before = snapshot(config.parent)
    args = aziot_args(config)
    refused = run_isolated("aziot_config", args, tmp_path)
    assert refused.result and refused.result.get("failed"), refused.output()
    assert one_line(refused.result["msg"]), refused.result["msg"]
    assert refused.result["msg"].startswith(f"{config}: TOML syntax error at line 3"), refused.result["msg"]
    assert "fix the file by hand (it was not changed)" in refused.result["msg"]
    assert snapshot(config.parent) == before
    # The operator fixes the quote; a plain re-run converges.
    config.write_text('# edited by hand\n[provisioning]\nsource = "dps"\nid_scope = "0ne00ABCDEF"\n', encoding="utf-8")
    first, second = run_isolated("aziot_config", args, tmp_path), run_isolated("aziot_config", args, tmp_path)
    assert first.result and first.result["changed"] is True, first.output()
    assert second.result and second.result["changed"] is False, second.output()
    assert "# edited by hand" in config.read_text(encoding="utf-8")  # the hand-written comment is kept


def aziot_args(config: Path, hostname: str = "pi-rel-01") -> dict:
    return {
        "path": str(config),
        "hostname": hostname,
        "provisioning": {
            "source": "dps",
            "global_endpoint": "https://global.azure-devices-provisioning.net",
            "id_scope": "0ne00ABCDEF",
            "attestation": {
                "method": "symmetric_key",
                "registration_id": "pi-rel-01",
                "symmetric_key": "c2VjcmV0LWtleS1mb3ItcmVsaWFiaWxpdHktdGVzdHM=",
            },
        },
    }


# --------------------------------------------------------------------------------------------------------------------
# A run killed in the middle of writing a key, a certificate or config.toml


def device_args(directory: Path, phase: str, registration_id: str = "pi-kill", **extra) -> dict:
    return {
        "registration_id": registration_id,
        "key_path": str(directory / "device.key"),
        "cert_path": str(directory / "device.pem"),
        "_phase": phase,
        **extra,
    }


def temp_remnants(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]


@pytest.mark.parametrize("kill_at", ["write", "rename"])
def test_killed_while_writing_a_new_key(tmp_path: Path, kill_at: str) -> None:
    device = tmp_path / "device"
    device.mkdir()
    key = device / "device.key"
    killed = run_module(
        "x509_device_cert", device_args(device, "inspect"), tmp_path, kill_at=kill_at, kill_path=str(key)
    )
    assert killed.killed, killed.output()
    assert not key.exists()  # no key at all rather than a truncated one
    remnants = temp_remnants(device)
    assert remnants, "the killed run left no temporary file next to the key: where did it write?"
    for remnant in remnants:
        assert oct(remnant.stat().st_mode & 0o777) == "0o600", remnant  # never readable by others
    # the next run converges: a complete key, 0600; then nothing to do
    first = run_isolated("x509_device_cert", device_args(device, "inspect"), tmp_path)
    second = run_isolated("x509_device_cert", device_args(device, "inspect"), tmp_path)
    assert first.result["changed"] and first.result["key_generated"], first.output()
    assert not second.result["changed"] and not second.result["key_generated"], second.output()
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----") and oct(key.stat().st_mode & 0o777) == "0o600"
    assert first.result["public_key"] == second.result["public_key"]
    assert temp_remnants(device) == []  # the converging run removed what the killed one left


@pytest.mark.parametrize("kill_at", ["write", "rename"])
def test_killed_while_replacing_a_certificate(tmp_path: Path, pki: Pki, kill_at: str) -> None:
    device = tmp_path / "device"
    device.mkdir()
    assert run_isolated("x509_device_cert", device_args(device, "inspect"), tmp_path).result["key_generated"]
    key = serialization.load_pem_private_key((device / "device.key").read_bytes(), None)
    (device / "device.pem").write_bytes(issue("pi-kill", pki.intermediate, key=key).pem)
    new = issue("pi-kill", pki.intermediate, key=key).pem_text
    before = snapshot(device)
    install = device_args(device, "install", _certificate=new)
    killed = run_module("x509_device_cert", install, tmp_path, kill_at=kill_at, kill_path=str(device / "device.pem"))
    assert killed.killed, killed.output()
    after = {k: v for k, v in snapshot(device).items() if not k.endswith(".tmp")}
    assert after == before  # the old certificate, whole
    assert temp_remnants(device), "the killed run left no temporary file next to the certificate"
    first, second = (
        run_isolated("x509_device_cert", install, tmp_path),
        run_isolated("x509_device_cert", install, tmp_path),
    )
    assert first.result["changed"] is True and second.result["changed"] is False, first.output() + second.output()
    assert (device / "device.pem").read_text() == new
    assert temp_remnants(device) == []


@pytest.mark.parametrize("kill_at", ["write", "rename"])
def test_killed_while_rewriting_config_toml(tmp_path: Path, kill_at: str) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    config = etc / "config.toml"
    assert run_isolated("aziot_config", aziot_args(config), tmp_path).result["changed"]
    before = snapshot(etc)
    changed_args = aziot_args(config, hostname="pi-rel-renamed")
    killed = run_module("aziot_config", changed_args, tmp_path, kill_at=kill_at, kill_path=str(config))
    assert killed.killed, killed.output()
    assert {k: v for k, v in snapshot(etc).items() if not k.endswith(".tmp")} == before
    remnants = temp_remnants(etc)
    assert remnants, "the killed run left no temporary file next to config.toml: where did it write?"
    for remnant in remnants:
        assert oct(remnant.stat().st_mode & 0o777) == "0o600", remnant
    first = run_isolated("aziot_config", changed_args, tmp_path)
    second = run_isolated("aziot_config", changed_args, tmp_path)
    assert first.result["changed"] is True and second.result["changed"] is False, first.output() + second.output()
    assert 'hostname = "pi-rel-renamed"' in config.read_text(encoding="utf-8")
    assert temp_remnants(etc) == []


# --------------------------------------------------------------------------------------------------------------------
# Read-only and full filesystems (a tmpfs mounted for the test; needs root)


@pytest.fixture
def tmpfs(tmp_path: Path):
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], check=False)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def remount(mount_point: Path, option: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{option}", str(mount_point)], check=True)


def assert_refused(run, path: Path, problem: str) -> None:
    """The module failed with one line naming the file and the problem."""
    assert run.result and run.result.get("failed"), run.output()
    message = run.result["msg"]
    assert one_line(message) and str(path) in message and problem in message, message


def assert_converges(work: Path, *runs: tuple[str, dict]) -> None:
    """Each (module, args) changes on its first run and nothing on its second."""
    for module, args in runs:
        first, second = run_isolated(module, args, work), run_isolated(module, args, work)
        assert first.result["changed"] is True and second.result["changed"] is False, first.output() + second.output()


def test_read_only_filesystem(tmp_path: Path, tmpfs: Path) -> None:
    config, key = tmpfs / "config.toml", tmpfs / "device.key"
    assert run_isolated("aziot_config", aziot_args(config), tmp_path).result["changed"]
    before = snapshot(tmpfs)
    remount(tmpfs, "ro")
    changed_args = aziot_args(config, hostname="pi-rel-ro")
    assert_refused(run_isolated("aziot_config", changed_args, tmp_path), config, "Read-only file system")
    new_key = run_isolated("x509_device_cert", device_args(tmpfs, "inspect"), tmp_path)
    assert_refused(new_key, key, "Read-only file system")
    assert snapshot(tmpfs) == before  # old config intact, no key, no temp file
    remount(tmpfs, "rw")
    assert_converges(tmp_path, ("aziot_config", changed_args), ("x509_device_cert", device_args(tmpfs, "inspect")))


def test_full_filesystem(tmp_path: Path, tmpfs: Path) -> None:
    config, key = tmpfs / "config.toml", tmpfs / "device.key"
    assert run_isolated("aziot_config", aziot_args(config), tmp_path).result["changed"]
    before = snapshot(tmpfs)
    filler = tmpfs / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], check=False, capture_output=True)
    filled = snapshot(tmpfs)
    changed_args = aziot_args(config, hostname="pi-rel-" + "x" * 40)
    assert_refused(run_isolated("aziot_config", changed_args, tmp_path), config, "No space left on device")
    new_key = run_isolated("x509_device_cert", device_args(tmpfs, "inspect"), tmp_path)
    assert_refused(new_key, key, "No space left on device")
    assert snapshot(tmpfs) == filled  # old config intact, no half-written key or temp file
    filler.unlink()
    assert snapshot(tmpfs) == before
    assert_converges(tmp_path, ("aziot_config", changed_args), ("x509_device_cert", device_args(tmpfs, "inspect")))


# --------------------------------------------------------------------------------------------------------------------
# x509_ca (on the controller): a corrupt CA file is refused, never replaced


@pytest.mark.parametrize("damaged", ["root-ca.cert.pem", "intermediate-ca.key.pem"])
def test_x509_ca_refuses_a_corrupt_ca_file(tmp_path: Path, damaged: str) -> None:
    ca_dir = tmp_path / "ca"
    args = {"path": str(ca_dir), "key_type": "ec-p256"}
    assert run_isolated("x509_ca", args, tmp_path).result["changed"] is True
    good = (ca_dir / damaged).read_bytes()
    (ca_dir / damaged).write_bytes(good[:40] + b"#corrupt#" + good[60:])
    before = snapshot(ca_dir)
    refused_run = run_isolated("x509_ca", args, tmp_path)
    assert refused_run.result and refused_run.result.get("failed"), refused_run.output()
    message = refused_run.result["msg"]
    assert one_line(message) and damaged in message, message
    assert snapshot(ca_dir) == before  # a CA key or certificate is never silently replaced
    (ca_dir / damaged).write_bytes(good)  # restored from a backup
    again = run_isolated("x509_ca", args, tmp_path)
    assert again.result and again.result["changed"] is False, again.output()
