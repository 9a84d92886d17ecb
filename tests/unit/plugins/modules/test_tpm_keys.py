"""tpm_keys without a TPM: what tpm2-tools print, read back (handles, Names, errors); a failure half-way through
persisting undoes what it persisted; tpm2-tools missing and an unreachable TCTI are one line with the fix. The runs
against a software TPM are in tests/integration/test_tpm_keys.py."""

from __future__ import annotations

import base64

import pytest

from ansible_collections.iotfleet.aziot.plugins.module_utils._tpm import (
    EK_HANDLE,
    SRK_HANDLE,
    error_summary,
    is_bad_auth,
    object_name,
    persistent_handles,
)
from ansible_collections.iotfleet.aziot.plugins.modules import tpm_keys
from tests.support.modules import run_module

# An EK from `tpm2_createek -G rsa` on a swtpm (tpm2_readpublic -o, base64), and the Name tpm2_readpublic printed.
RECORDED_EK = (
    "AToAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEA37/21CNP0ydLbSwLNKd3"
    "IM62B1PZ5m+audy12EeUTmsL5x+JdJbEmUgM4rG8RVQbQF6lJLHbR/ja7bhGAH9NXwsBJndEZEWBjbItHNxmQkEhOZXXzmmabAZ6"
    "1bnyo9fqJ7VYYVZGqauC5FIC+eKAOP8OFoBuG+brgp4PPbPZrXEaJtPPVz5qW1jPd7Yfugwi2V8X2JFMgWQbFwINN4krnSq9hSSW"
    "+wFzx6At0xEi2lTGC6zx5SNJSXqEl2t8PfYn2dqEcUo942i2p8KlIKL/2Ruwqqj1OfWzbgu33FfS7MaxufgpaipIogZaJgW9bwcF"
    "OdNF1EaqBzpd75cqeLbXZw=="
)
RECORDED_EK_NAME = "000b6baedbec272232f21d18649d7466aaf59b71a74591307a0df464114171982c58"

# What tpm2-tools 5.4 print to stderr (recorded against swtpm).
BAD_AUTH_STDERR = """\
WARNING:esys:src/tss2-esys/api/Esys_CreatePrimary.c:400:Esys_CreatePrimary_Finish() Received TPM Error
ERROR:esys:src/tss2-esys/api/Esys_CreatePrimary.c:135:Esys_CreatePrimary() Esys Finish ErrorCode (0x000009a2)
ERROR: Esys_CreatePrimary(0x9A2) - tpm:session(1):authorization failure without DA implications
ERROR: Unable to run tpm2_createprimary
"""
TCTI_STDERR = """\
WARNING:tcti:src/util/io.c:262:socket_connect() Failed to connect to host 127.0.0.1, port 1: errno 111: \
Connection refused
ERROR:tcti:src/tss2-tcti/tcti-swtpm.c:614:Tss2_Tcti_Swtpm_Init() Cannot connect to swtpm TPM socket
ERROR:tcti:src/tss2-tcti/tctildr-dl.c:154:tcti_from_file() Could not initialize TCTI file: swtpm
ERROR:tcti:src/tss2-tcti/tctildr.c:428:Tss2_TctiLdr_Initialize_Ex() Failed to instantiate TCTI
ERROR: Could not load tcti, got: "swtpm:host=127.0.0.1,port=1"
"""
DEVICE_STDERR = """\
ERROR:tcti:src/tss2-tcti/tcti-device.c:452:Tss2_Tcti_Device_Init() Failed to open specified TCTI device file \
/dev/tpmrm0: No such file or directory
ERROR:tcti:src/tss2-tcti/tctildr-dl.c:154:tcti_from_file() Could not initialize TCTI file: device
ERROR:tcti:src/tss2-tcti/tctildr.c:428:Tss2_TctiLdr_Initialize_Ex() Failed to instantiate TCTI
ERROR: Could not load tcti, got: "device:/dev/tpmrm0"
"""
ABSENT_HANDLE_STDERR = """\
WARNING:esys:src/tss2-esys/api/Esys_ReadPublic.c:320:Esys_ReadPublic_Finish() Received TPM Error
ERROR:esys:src/tss2-esys/esys_tr.c:278:Esys_TR_FromTPMPublic_Finish() Error ReadPublic ErrorCode (0x0000018b)
ERROR: Esys_TR_FromTPMPublic(0x18B) - tpm:handle(1):the handle is not correct for the use
ERROR: Unable to run tpm2_readpublic
"""


def test_persistent_handles_from_getcap():
    assert persistent_handles("- 0x81000001\n- 0x81010001\n") == {SRK_HANDLE, EK_HANDLE}
    assert persistent_handles("") == set()


def test_object_name_is_what_tpm2_readpublic_prints():
    assert object_name(base64.b64decode(RECORDED_EK)).hex() == RECORDED_EK_NAME


def test_object_name_refuses_what_is_not_a_tpm2b_public():
    public = base64.b64decode(RECORDED_EK)
    with pytest.raises(ValueError, match="size field says"):
        object_name(public[:-1])
    with pytest.raises(ValueError, match="nameAlg 0x0010"):
        object_name(public[:4] + b"\x00\x10" + public[6:])


def test_bad_auth_is_told_from_other_errors():
    assert is_bad_auth(BAD_AUTH_STDERR)
    assert not is_bad_auth(ABSENT_HANDLE_STDERR)
    assert not is_bad_auth(TCTI_STDERR)


def test_error_summary_is_one_line():
    assert error_summary(BAD_AUTH_STDERR).startswith("Esys_CreatePrimary(0x9A2) - ")
    assert error_summary(TCTI_STDERR) == ("Failed to connect to host 127.0.0.1, port 1: errno 111: Connection refused")
    assert error_summary(DEVICE_STDERR) == (
        "Failed to open specified TCTI device file /dev/tpmrm0: No such file or directory"
    )
    assert error_summary("") == "no output"


class FakeTpm:
    """ensure_keys' view of a TPM: `present` handles; persisting `fail_at` fails with TPM_RC_BAD_AUTH."""

    def __init__(self, present: set[int], fail_at: int | None = None) -> None:
        self.present = set(present)
        self.fail_at = fail_at
        self.public = base64.b64decode(RECORDED_EK)

    def persistent_handles(self) -> set[int]:
        return set(self.present)

    def read_public(self, context: str, name: str) -> bytes:
        return self.public

    def create_transient(self, key: str) -> str:
        return f"{key}.ctx"

    def persist(self, context: str, handle: int) -> None:
        if handle == self.fail_at:
            raise tpm_keys.TpmCommandError("tpm2_evictcontrol", 1, BAD_AUTH_STDERR)
        self.present.add(handle)

    def evict(self, handle: int) -> None:
        self.present.discard(handle)


@pytest.mark.parametrize(
    ("present", "created"),
    [
        (set(), ["endorsement_key", "storage_root_key"]),
        ({EK_HANDLE}, ["storage_root_key"]),
        ({EK_HANDLE, SRK_HANDLE}, []),
    ],
)
def test_only_absent_keys_are_created(present, created):
    for check_mode in (True, False):
        tpm = FakeTpm(present)
        result = tpm_keys.ensure_keys(tpm, check_mode)
        assert result["created"] == created and result["changed"] == bool(created)
        assert result["endorsement_key"] == RECORDED_EK and result["endorsement_key_name"] == RECORDED_EK_NAME
        assert tpm.present == (set(present) if check_mode else {EK_HANDLE, SRK_HANDLE})


def test_a_failure_while_persisting_undoes_what_was_persisted():
    tpm = FakeTpm(set(), fail_at=SRK_HANDLE)
    with pytest.raises(tpm_keys.TpmCommandError):
        tpm_keys.ensure_keys(tpm, False)
    assert tpm.present == set()  # the EK persisted just before was evicted again


def test_missing_tpm2_tools_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    run = run_module(tpm_keys, {})
    assert run.failed, run.output()
    assert run.result["msg"].startswith("tpm2-tools is not installed on this device (tpm2_getcap is not on PATH)")
    assert "apt-get install tpm2-tools" in run.result["msg"]


def test_failure_messages_name_the_option_and_the_fix():
    params = {"tcti": "device:/dev/tpmrm0", "owner_auth": None}
    tcti = tpm_keys.failure_message(tpm_keys.TctiError(error_summary(TCTI_STDERR)), params)
    assert "tcti 'device:/dev/tpmrm0'" in tcti and "group tss" in tcti and "\n" not in tcti
    refused = tpm_keys.TpmCommandError("tpm2_createprimary", 1, BAD_AUTH_STDERR)
    assert "give it as owner_auth" in tpm_keys.failure_message(refused, params)
    wrong = tpm_keys.failure_message(refused, {**params, "owner_auth": "guess"})
    assert "refused owner_auth" in wrong and "guess" not in wrong
