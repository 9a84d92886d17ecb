"""Fault matrix, secrets: the whole provisioning of one device at -vvv leaks nothing, and the CA key stays home.

One playbook, run with -vvv: x509_device_cert (device key made on the device, CSR signed on the controller),
full_chain, aziot_config (DPS symmetric-key variant, the derived device key inline), dps_register with the group key
(symmetric key) and with the device certificate (X.509), plus the TLS checks. Then:
- no private key PEM body (device key, CA key), group key, derived device key or SAS signature is in stdout/stderr,
  in the registered results, in any file of the test directory other than its intended place, or in anything left
  under ~/.ansible/tmp;
- the device key and config.toml are 0600;
- dps_register verifies the DPS server certificate by default (fails without ca_path, naming the fix), and
  validate_certs=false works only as an explicit option that warns;
- the CA key is read by the controller and never by the device: the controller and the "device" interpreter each
  run with an audit hook (hooks/audit/sitecustomize.py) that logs every file they open.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from matrix_helpers import (
    AUDIT_HOOK,
    GROUP_KEY,
    assert_no_secret,
    connection,
    derived_key,
    device_interpreter,
    output_and_files,
    pem_body_lines,
    sas_signatures,
)

from tests.support.pki import Pki
from tests.support.playbook import clean_env, run_playbook

REGISTRATION_ID = "rel-secret-01"


def provisioning_tasks(work: Path) -> list[dict]:
    device, etc = work / "device", work / "etc"
    register = {
        "id_scope": "{{ id_scope }}",
        "registration_id": REGISTRATION_ID,
        "provisioning_host": "{{ provisioning_host }}",
        "timeout": 30,
    }
    return [
        {
            "name": "Device key and certificate",
            "iotfleet.aziot.x509_device_cert": {
                "registration_id": REGISTRATION_ID,
                "key_path": f"{device}/device.key",
                "cert_path": f"{device}/device.pem",
                "ca_cert_path": "{{ ca_cert }}",
                "ca_key_path": "{{ ca_key }}",
            },
            "register": "device_cert",
        },
        {
            "name": "Full chain",
            "iotfleet.aziot.full_chain": {
                "path": f"{device}/full-chain.pem",
                "leaf_path": f"{device}/device.pem",
                "ca_certificates": "{{ lookup('ansible.builtin.file', ca_cert) }}",
                "root_certificate": "{{ lookup('ansible.builtin.file', root_cert) }}",
                "registration_id": REGISTRATION_ID,
            },
            "register": "chain",
        },
        {
            "name": "config.toml, symmetric-key variant",
            "iotfleet.aziot.aziot_config": {
                "path": f"{etc}/config.toml",
                "hostname": REGISTRATION_ID,
                "provisioning": {
                    "source": "dps",
                    "global_endpoint": "https://global.azure-devices-provisioning.net",
                    "id_scope": "{{ id_scope }}",
                    "attestation": {
                        "method": "symmetric_key",
                        "registration_id": REGISTRATION_ID,
                        "symmetric_key": "{{ device_key }}",
                    },
                },
            },
            "register": "config",
        },
        {
            "name": "Register with the group key",
            "iotfleet.aziot.dps_register": dict(
                register, ca_path="{{ ca_path }}", attestation="symmetric_key", group_key="{{ group_key }}"
            ),
            "register": "sym",
        },
        {
            "name": "Register with the device certificate",
            "iotfleet.aziot.dps_register": dict(
                register,
                registration_id="rel-secret-x509",
                ca_path="{{ ca_path }}",
                client_cert="{{ x509_chain }}",
                client_key="{{ x509_key }}",
            ),
            "register": "x509",
        },
        {
            "name": "Register without ca_path: the DPS server certificate must verify",
            "iotfleet.aziot.dps_register": dict(register, attestation="symmetric_key", group_key="{{ group_key }}"),
            "register": "no_ca",
            "failed_when": False,
        },
        {
            "name": "Register with validate_certs=false: explicit, and it warns",
            "iotfleet.aziot.dps_register": dict(
                register, attestation="symmetric_key", group_key="{{ group_key }}", validate_certs=False
            ),
            "register": "unverified",
        },
    ]


def test_provisioning_leaks_nothing_and_ca_key_stays_on_the_controller(emulator, pki: Pki, tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "device").mkdir(parents=True)
    (work / "etc").mkdir()
    device_log, controller_log = tmp_path / "device-open.log", tmp_path / "controller-open.log"
    x509_files = pki.device("rel-secret-x509")
    device_key = derived_key(GROUP_KEY, REGISTRATION_ID)
    variables = dict(
        connection(emulator),
        ca_cert=str(pki.intermediate_path),
        ca_key=str(pki.intermediate_key_path),
        root_cert=str(pki.root_path),
        group_key=GROUP_KEY,
        device_key=device_key,
        x509_chain=x509_files.chain_file,
        x509_key=x509_files.key_file,
    )
    started = time.time()
    run = run_playbook(
        work,
        provisioning_tasks(work),
        variables,
        verbosity=3,
        interpreter=device_interpreter(tmp_path, device_log),
        env=clean_env(PYTHONPATH=str(AUDIT_HOOK), RELIABILITY_OPEN_LOG=str(controller_log)),
        name="provision",
    )
    finished = time.time()
    results = run.results
    assert run.returncode == 0 and results, run.output()
    assert results["device_cert"]["changed"] and results["sym"]["status"] == "assigned", results
    assert results["x509"]["status"] == "assigned", results["x509"]

    # TLS: verification is on by default; turning it off is an explicit option that warns.
    message = results["no_ca"].get("msg", "")
    assert "the DPS server certificate did not verify" in message and "set ca_path" in message, message
    assert message.startswith(f"{REGISTRATION_ID}: ") and "\n" not in message
    assert results["unverified"]["status"] == "assigned"
    assert any("validate_certs=false" in warning for warning in results["unverified"].get("warnings", []))
    assert "[WARNING]: validate_certs=false" in run.stdout + run.stderr

    # Keys and the config holding the device key: 0600.
    device_key_file = work / "device" / "device.key"
    config_file = work / "etc" / "config.toml"
    for path in (device_key_file, config_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert device_key in config_file.read_text(encoding="utf-8")  # its intended place

    # No secret anywhere but its intended place.
    secrets = {
        "device private key": pem_body_lines(device_key_file.read_bytes()),
        "CA private key": pem_body_lines(pki.intermediate_key_path.read_bytes()),
        "x509 device private key": pem_body_lines(Path(x509_files.key_file).read_bytes()),
        "group key": [GROUP_KEY],
        "derived device key": [device_key],
        "SAS signature": sas_signatures(
            device_key, REGISTRATION_ID, range(int(started) + 3600 - 1, int(finished) + 3600 + 2)
        ),
    }
    intended = {
        device_key_file,
        config_file,
        work / "provision.vars.json",  # the input, like an inventory (vault) file
    }
    haystacks = output_and_files(run.stdout, run.stderr, work, intended, started)
    assert str(work / "provision.results.json") in haystacks
    assert "<localhost> EXEC" in run.stdout and "ESTABLISH LOCAL CONNECTION" in run.stdout  # -vvv really ran
    assert_no_secret(secrets, haystacks)

    # The CA key: read on the controller (to sign), never on the device.
    ca_key_path = os.path.realpath(pki.intermediate_key_path)
    controller_opens = controller_log.read_text(encoding="utf-8").splitlines()
    device_opens = device_log.read_text(encoding="utf-8").splitlines()
    assert any(line.endswith(" " + ca_key_path) for line in controller_opens)
    assert any(line.endswith(" " + str(device_key_file)) for line in device_opens)  # the hook ran on the device
    assert not [line for line in device_opens if pki.intermediate_key_path.name in line]
