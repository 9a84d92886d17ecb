"""tpm_keys against a software TPM (swtpm + tpm2-tools, tests/support/swtpm.py): through ansible-playbook the four
runs of a TPM without keys (check: would create, real: creates, check and real again: nothing to do), the keys equal
what tpm2_readpublic reads at the DPS handles; and the one-line refusals: a TCTI that cannot be opened, an owner
hierarchy with a password.
"""

from __future__ import annotations

import base64
import socket

import pytest

from ansible_collections.iotfleet.aziot.plugins.modules import tpm_keys
from tests.support.modules import run_module
from tests.support.playbook import assert_four, four_runs, run_playbook
from tests.support.swtpm import EK_HANDLE, SRK_HANDLE, SoftwareTpm

MODULE = "iotfleet.aziot.tpm_keys"
OWNER_PASSWORD = "owner-password-17"


def without_keys(tpm: SoftwareTpm) -> SoftwareTpm:
    """The software_tpm fixture creates the EK and SRK; a new device's TPM has neither: evict both."""
    for handle in (EK_HANDLE, SRK_HANDLE):
        tpm.run("tpm2_evictcontrol", "-C", "o", "-c", hex(handle))
    assert tpm.read_public(EK_HANDLE) is None and tpm.read_public(SRK_HANDLE) is None
    return tpm


def handles(tpm: SoftwareTpm, kind: str) -> str:
    """What `tpm2_getcap handles-<kind>` lists (persistent, transient)."""
    return tpm.run("tpm2_getcap", f"handles-{kind}").stdout.decode().strip()


def test_a_new_tpm_gets_its_keys_once(software_tpm, tmp_path):
    tpm = without_keys(software_tpm("tpm-keys-new"))
    run = run_playbook(tmp_path, four_runs(MODULE, {"tcti": tpm.tcti}, "keys"))
    assert run.returncode == 0, run.output()
    results = run.results
    assert_four(results, "keys")

    ek = base64.b64encode(tpm.read_public(EK_HANDLE)).decode()
    srk = base64.b64encode(tpm.read_public(SRK_HANDLE)).decode()
    both = ["endorsement_key", "storage_root_key"]
    for name in ("check1", "real1", "check2", "real2"):
        result = results[f"keys_{name}"]
        # check mode computes the same primary keys the real run persists
        assert (result["endorsement_key"], result["storage_root_key"]) == (ek, srk), name
        assert result["endorsement_key_name"] == tpm.object_name(EK_HANDLE).hex(), name
        assert result["storage_root_key_name"] == tpm.object_name(SRK_HANDLE).hex(), name
        assert result["created"] == (both if name.endswith("1") else []), name
    assert handles(tpm, "transient") == ""


def test_check_mode_persists_nothing(software_tpm):
    tpm = without_keys(software_tpm("tpm-keys-check"))
    run = run_module(tpm_keys, {"tcti": tpm.tcti, "_ansible_check_mode": True})
    assert run.result["changed"] and run.result["created"] == ["endorsement_key", "storage_root_key"], run.output()
    assert tpm.read_public(EK_HANDLE) is None and tpm.read_public(SRK_HANDLE) is None
    assert handles(tpm, "transient") == ""


def test_existing_keys_are_returned_unchanged(software_tpm):
    tpm = software_tpm("tpm-keys-existing")  # EK and SRK made by the fixture, as a DPS client would have
    run = run_module(tpm_keys, {"tcti": tpm.tcti})
    assert run.returncode == 0 and not run.result["changed"], run.output()
    assert base64.b64decode(run.result["endorsement_key"]) == tpm.endorsement_key
    assert base64.b64decode(run.result["storage_root_key"]) == tpm.storage_root_key


def test_a_tcti_that_cannot_be_opened_is_one_line(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tcti = f"swtpm:host=127.0.0.1,port={port}"
    run = run_module(tpm_keys, {"tcti": tcti})
    assert run.failed, run.output()
    message = run.result["msg"]
    assert "\n" not in message and "Traceback" not in run.text
    assert f"tcti '{tcti}'" in message and "/dev/tpmrm0" in message and "tss" in message, message


@pytest.fixture(scope="module")
def owned_tpm(software_tpm) -> SoftwareTpm:
    """A TPM without keys whose owner hierarchy has a password."""
    tpm = without_keys(software_tpm("tpm-keys-owned"))
    tpm.run("tpm2_changeauth", "-c", "o", OWNER_PASSWORD)
    return tpm


@pytest.mark.parametrize("owner_auth", [None, "not-the-password"])
def test_an_owner_password_is_one_line_naming_owner_auth(owned_tpm, owner_auth):
    args = {"tcti": owned_tpm.tcti, **({"owner_auth": owner_auth} if owner_auth else {})}
    for check_mode in (True, False):
        run = run_module(tpm_keys, {**args, "_ansible_check_mode": check_mode})
        assert run.failed, run.output()
        message = run.result["msg"]
        assert "\n" not in message and "Traceback" not in run.text
        assert "owner_auth" in message and "0x9a2" in message.lower() and "nothing was created" in message, message
        assert owner_auth is None or owner_auth not in run.text
    # nothing half-made: no key persisted, no transient object left in the TPM
    assert handles(owned_tpm, "persistent") == ""
    assert handles(owned_tpm, "transient") == ""


def test_the_owner_password_as_owner_auth(owned_tpm, tmp_path):
    run = run_playbook(tmp_path, four_runs(MODULE, {"tcti": owned_tpm.tcti, "owner_auth": OWNER_PASSWORD}, "owned"))
    assert run.returncode == 0, run.output()
    assert_four(run.results, "owned")
    assert OWNER_PASSWORD not in run.stdout + run.stderr
    assert base64.b64decode(run.results["owned_real1"]["endorsement_key"]) == owned_tpm.read_public(EK_HANDLE)
    assert base64.b64decode(run.results["owned_real1"]["storage_root_key"]) == owned_tpm.read_public(SRK_HANDLE)
