"""Unit tests for dps_register's controller half: the one plain read of the device's marker, chain and CA file, and
the decision that no request (and no module) is needed (_dps_register.no_request_result) - compared with what the
module itself answers against the DPS emulator, and for every difference that must send the module."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ansible_collections.iotfleet.aziot.plugins.action.dps_register import read_sections
from ansible_collections.iotfleet.aziot.plugins.module_utils._dps_register import no_request_result
from ansible_collections.iotfleet.aziot.plugins.modules import dps_register
from ansible_collections.iotfleet.aziot.plugins.plugin_utils._device_read import parse_read, read_command
from tests.support.dps_fakes import EMULATED_HUB, EMULATED_ID_SCOPE

SEPARATOR = "iotfleet-0123456789abcdef-"


def read_on_device(params: dict) -> dict | None:
    """dps_register's read, run on this machine as the device."""
    sections = read_sections(params)
    answer = subprocess.run(["/bin/sh", "-c", read_command(sections, SEPARATOR)], capture_output=True, check=True)
    return parse_read(answer.stdout.decode(), SEPARATOR, [name for name, _command in sections])


def test_the_read_returns_each_file_exactly_and_never_the_key(tmp_path):
    (tmp_path / "marker").write_text('{"version": 1}')  # no newline at the end
    (tmp_path / "chain").write_text("-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n\n")
    (tmp_path / "key").write_text("-----BEGIN PRIVATE KEY-----\nSECRET\n")
    params = {
        "provisioning_marker": str(tmp_path / "marker"),
        "client_cert": str(tmp_path / "chain"),
        "client_key": str(tmp_path / "key"),
        "ca_path": str(tmp_path / "no ca"),
        "ca_content": "a CA",
    }
    files = read_on_device(params)
    assert files == {
        "marker": b'{"version": 1}',
        "chain": b"-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n\n",
        "ca": b"",  # absent
        "key": b"present\n",
    }
    assert b"SECRET" not in b"".join(files.values())
    without_ca = read_on_device(dict(params, ca_content=None, client_key=str(tmp_path / "missing key")))
    assert without_ca["key"] == b"" and "ca" not in without_ca


@pytest.fixture
def registered(dps_module, emulator_pki, tmp_path):
    """A device registered by the module with a marker; the args a re-run gives and the module's own answer."""
    files = emulator_pki.device("pi-action").files()
    marker = tmp_path / "dps-registration.json"
    ca_path = tmp_path / "dps-server-ca.pem"
    ca_content = Path(dps_module.emulator.ca_cert).read_text(encoding="ascii")
    args = dict(
        id_scope=EMULATED_ID_SCOPE,
        registration_id="pi-action",
        provisioning_host=dps_module.address,
        ca_path=str(ca_path),
        ca_content=ca_content,
        client_cert=files["chain"],
        client_key=files["key"],
        registration_state={},
        provisioning_marker=str(marker),
    )
    first = dps_module.run(dps_register, args)
    assert first.result["changed"] is True and first.result["ca_changed"] is True
    assert ca_path.read_text() == ca_content and oct(ca_path.stat().st_mode & 0o777) == "0o644"
    known = dict(status="assigned", assigned_hub=EMULATED_HUB, device_id="pi-action", enrollment_iot_hubs=[])
    rerun_args = dict(args, registration_state=known)
    module_answer = dps_module.run(dps_register, rerun_args).result
    assert module_answer["changed"] is False and module_answer["requests"] == 0
    texts = {
        "marker_text": marker.read_text(),
        "chain_text": Path(files["chain"]).read_text(encoding="ascii"),
        "key_present": True,
        "ca_text": ca_path.read_text(),
    }
    return rerun_args, texts, module_answer


def test_a_device_registered_as_it_should_be_gets_the_module_s_answer_without_it(registered):
    args, texts, module_answer = registered
    answer = no_request_result(args, **texts)
    assert answer is not None
    assert {key: answer[key] for key in module_answer if key != "invocation"} == {
        key: value for key, value in module_answer.items() if key != "invocation"
    }


@pytest.mark.parametrize(
    ("arg_change", "text_change"),
    [
        ({"force": True}, {}),
        ({"registration_state": {"status": "disabled"}}, {}),
        ({"registration_state": {}}, {}),  # DPS has no record of it
        ({"registration_state": {"status": "assigned", "assigned_hub": "other.azure-devices.net"}}, {}),
        ({"validate_certs": False}, {}),  # the module warns every run: it runs
        ({"ca_content": "-----BEGIN CERTIFICATE-----\nnew CA\n-----END CERTIFICATE-----\n"}, {}),
        ({}, {"key_present": False}),
        ({}, {"ca_text": None}),
        ({}, {"marker_text": None}),
        ({}, {"marker_text": '{"version": 1, "registration_id": "pi-other"}'}),
        ({}, {"chain_text": None}),
        ({}, {"chain_text": "not a certificate"}),
    ],
    ids=[
        "force",
        "disabled",
        "no-record",
        "other-hub",
        "no-validate-certs",
        "new-ca",
        "no-key",
        "no-ca-file",
        "no-marker",
        "other-marker",
        "no-chain",
        "bad-chain",
    ],
)
def test_any_difference_leaves_the_decision_to_the_module(registered, arg_change, text_change):
    args, texts, _module_answer = registered
    assert no_request_result(dict(args, **arg_change), **dict(texts, **text_change)) is None


def test_a_renewed_certificate_leaves_the_decision_to_the_module(registered, emulator_pki):
    args, texts, _module_answer = registered
    renewed = Path(emulator_pki.device("pi-action").files()["chain"]).read_text(encoding="ascii")
    assert renewed != texts["chain_text"]
    assert no_request_result(args, **dict(texts, chain_text=renewed)) is None


def test_check_mode_writes_no_ca_file_and_says_it_would(dps_module, emulator_pki, tmp_path):
    files = emulator_pki.device("pi-action-check").files()
    ca_path = tmp_path / "certs" / "dps-server-ca.pem"
    args = dict(
        id_scope=EMULATED_ID_SCOPE,
        registration_id="pi-action-check",
        provisioning_host=dps_module.address,
        ca_path=str(ca_path),
        ca_content=Path(dps_module.emulator.ca_cert).read_text(encoding="ascii"),
        client_cert=files["chain"],
        client_key=files["key"],
    )
    checked = dps_module.run(dps_register, dict(args, _ansible_check_mode=True))
    assert checked.result["changed"] is True and checked.result["ca_changed"] is True, checked.result
    assert not ca_path.exists()
    assert dps_module.run(dps_register, args).result["ca_changed"] is True  # the directory made too
    again = dps_module.run(dps_register, args).result
    assert (again["changed"], again["ca_changed"]) == (False, False)


def test_a_ca_path_that_cannot_be_read_fails_in_one_line_naming_it(dps_module, emulator_pki, tmp_path):
    files = emulator_pki.device("pi-action-dir").files()
    args = dict(
        id_scope=EMULATED_ID_SCOPE,
        registration_id="pi-action-dir",
        provisioning_host=dps_module.address,
        ca_path=str(tmp_path),  # a directory
        ca_content=Path(dps_module.emulator.ca_cert).read_text(encoding="ascii"),
        client_cert=files["chain"],
        client_key=files["key"],
    )
    failed = dps_module.run(dps_register, args).result
    assert failed["failed"] and failed["msg"].startswith(f"pi-action-dir: cannot read ca_path {tmp_path}: "), failed
    assert "\n" not in failed["msg"] and "point ca_path at a file" in failed["msg"]
