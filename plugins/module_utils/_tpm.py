# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""TPM 2.0 facts the device modules share: the persistent handles DPS clients use, the SRK template, the options,
and pure helpers for what tpm2-tools print (standard library only: this runs on the device).

The handles and the SRK template are the ones Azure's DPS clients hardcode (azure-iot-sdk-node security/tpm,
azure-utpm-c, aziot-tpmd): whoever creates the keys first defines them, so a client and the enrollment agree only
when both use these.
"""

from __future__ import annotations

import hashlib
import re
import struct

EK_HANDLE = 0x81010001
SRK_HANDLE = 0x81000001
# RSA-2048, AES-128-CFB, no scheme; tpm2_createprimary's default attributes lack noda, so they are given.
SRK_ALGORITHM = "rsa2048:null:aes128cfb"
SRK_ATTRIBUTES = "restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda"
TPM2_TOOLS = (
    "tpm2_getcap",
    "tpm2_readpublic",
    "tpm2_createek",
    "tpm2_createprimary",
    "tpm2_evictcontrol",
    "tpm2_flushcontext",
)
DEFAULT_TCTI = "device:/dev/tpmrm0"
# TPMI_ALG_HASH of a Name -> hashlib name (TPM 2.0 Part 2, TPM_ALG_ID)
NAME_HASHES = {0x0004: "sha1", 0x000B: "sha256", 0x000C: "sha384", 0x000D: "sha512"}
_HANDLE = re.compile(r"\b0x([0-9a-fA-F]{8})\b")
# TPM_RC_BAD_AUTH (0x0a2) and TPM_RC_AUTH_FAIL (0x08e) on the first authorization session (+0x900)
_BAD_AUTH = re.compile(r"\b0x0*(9a2|98e)\b", re.IGNORECASE)
_ESYS_ERROR = re.compile(r"^ERROR: (Esys_\w+\(0x[0-9a-fA-F]+\) - .+)$", re.MULTILINE)
# "ERROR:tcti:src/tss2-tcti/tcti-device.c:442:Tss2_Tcti_Device_Init() " in front of the message
_SOURCE_PREFIX = re.compile(r"^(ERROR|WARNING):\w+:\S+:\d+:\w+\(\)\s*")


def tpm_argument_spec() -> dict:
    """The options of every module that talks to the device's TPM through tpm2-tools."""
    return {
        "tcti": {"type": "str", "default": DEFAULT_TCTI},
        "owner_auth": {"type": "str", "no_log": True},
    }


def persistent_handles(getcap_output: str) -> set[int]:
    """The handles `tpm2_getcap handles-persistent` lists (`- 0x81000001` per line)."""
    return {int(match, 16) for match in _HANDLE.findall(getcap_output)}


def object_name(tpm2b_public: bytes) -> bytes:
    """The Name of an object from its marshalled TPM2B_PUBLIC: nameAlg (u16) || H_nameAlg(TPMT_PUBLIC).
    ValueError when the bytes are not a TPM2B_PUBLIC."""
    if len(tpm2b_public) < 6:
        raise ValueError(f"a TPM2B_PUBLIC is longer than {len(tpm2b_public)} bytes")
    (size,) = struct.unpack(">H", tpm2b_public[:2])
    if size != len(tpm2b_public) - 2:
        raise ValueError(f"not a TPM2B_PUBLIC: its size field says {size} bytes but {len(tpm2b_public) - 2} follow")
    (name_alg,) = struct.unpack(">H", tpm2b_public[4:6])  # TPMT_PUBLIC: type (u16), nameAlg (u16), ...
    if name_alg not in NAME_HASHES:
        raise ValueError(f"TPMT_PUBLIC has nameAlg 0x{name_alg:04x}, not a hash algorithm")
    return tpm2b_public[4:6] + hashlib.new(NAME_HASHES[name_alg], tpm2b_public[2:]).digest()


def is_bad_auth(stderr: str) -> bool:
    """Whether a tpm2-tools command failed because the TPM refused the authorization (a hierarchy password)."""
    return _BAD_AUTH.search(stderr) is not None


def error_summary(stderr: str) -> str:
    """One line of what a tpm2-tools command printed: the TPM's answer (`Esys_X(0x9A2) - ...`) when there is one,
    else the first error line (or TCTI warning, which has the socket's errno) without its source-file prefix, else
    the last line."""
    esys = _ESYS_ERROR.search(stderr)
    if esys:
        return esys.group(1).strip()
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("ERROR", "WARNING:tcti:"))]
    if errors:
        return " ".join(_SOURCE_PREFIX.sub("", errors[0]).split())
    return " ".join(lines[-1].split()) if lines else "no output"
