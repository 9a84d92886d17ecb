# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Facts of an X.509 certificate read from its DER bytes with the standard library only.

Kept because dps_register runs on devices with only python3 (Debian's python3 does not pull in python3-cryptography)
and checks the certificate's CN and validity there before asking DPS; the DPS service modules use it too.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import re
import time

_PEM_CERT_RE = re.compile(r"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.DOTALL)
_OID_COMMON_NAME = b"\x55\x04\x03"  # 2.5.4.3
# Short names of the usual subject attributes, as .NET (and so DPS's subjectName) prints them.
_DN_NAMES = {
    b"\x55\x04\x03": "CN",
    b"\x55\x04\x05": "SERIALNUMBER",
    b"\x55\x04\x06": "C",
    b"\x55\x04\x07": "L",
    b"\x55\x04\x08": "S",
    b"\x55\x04\x0a": "O",
    b"\x55\x04\x0b": "OU",
    b"\x09\x92\x26\x89\x93\xf2\x2c\x64\x01\x19": "DC",
    b"\x2a\x86\x48\x86\xf7\x0d\x01\x09\x01": "E",
}


def pem_certificates(pem_text: str) -> list[bytes]:
    """The DER bytes of every certificate in a PEM text, in file order."""
    certificates = []
    for match in _PEM_CERT_RE.finditer(pem_text):
        try:
            certificates.append(base64.b64decode("".join(match.group(1).split()), validate=True))
        except (binascii.Error, ValueError):
            raise ValueError("a certificate block is not valid base64") from None
    return certificates


def thumbprints(der: bytes) -> dict[str, str]:
    """SHA-1 and SHA-256 thumbprints (upper-case hex, as DPS reports them) of a DER certificate."""
    return {
        "sha1": hashlib.sha1(der).hexdigest().upper(),  # noqa: S324 - DPS identifies certificates by SHA-1 too
        "sha256": hashlib.sha256(der).hexdigest().upper(),
    }


def _der_read(data: bytes, offset: int) -> tuple[int, int, int]:
    """Read one DER TLV at offset: return (tag, content start, content end)."""
    tag = data[offset]
    length = data[offset + 1]
    start = offset + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    end = start + length
    if end > len(data):
        raise ValueError("truncated DER")
    return tag, start, end


def _der_children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    children = []
    offset = start
    while offset < end:
        child = _der_read(data, offset)
        children.append(child)
        offset = child[2]
    return children


def _tbs_fields(der: bytes) -> list:
    """The fields of a DER certificate's tbsCertificate after the optional [0] version:
    serialNumber, signature, issuer, validity, subject, ... (raises IndexError/ValueError when malformed)."""
    _tag, start, end = _der_read(der, 0)  # Certificate
    _tag, start, end = _der_children(der, start, end)[0]  # tbsCertificate
    fields = _der_children(der, start, end)
    return fields[1:] if fields[0][0] == 0xA0 else fields


def certificate_common_name(der: bytes) -> str | None:
    """The subject CN of a DER certificate, or None when it has none or cannot be parsed."""
    try:
        # serialNumber, signature, issuer, validity, subject
        _tag, start, end = _tbs_fields(der)[4]
        for _set_tag, set_start, set_end in _der_children(der, start, end):
            for _seq_tag, seq_start, seq_end in _der_children(der, set_start, set_end):
                oid, value = _der_children(der, seq_start, seq_end)[:2]
                if der[oid[1] : oid[2]] == _OID_COMMON_NAME:
                    encoding = "utf-16-be" if value[0] == 0x1E else "utf-8"
                    return der[value[1] : value[2]].decode(encoding)
    except (IndexError, ValueError, UnicodeDecodeError):
        return None
    return None


def _oid_text(encoded: bytes) -> str:
    """Dotted text of a DER-encoded OBJECT IDENTIFIER body."""
    first = encoded[0]
    parts = [str(min(first // 40, 2)), str(first - 40 * min(first // 40, 2))]
    value = 0
    for byte in encoded[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(str(value))
            value = 0
    return "OID." + ".".join(parts)


def certificate_subject(der: bytes) -> str | None:
    """The subject DN of a DER certificate as 'CN=..., O=...' (last RDN first, like DPS), or None when unparseable."""
    try:
        _tag, start, end = _tbs_fields(der)[4]
        names = []
        for _set_tag, set_start, set_end in _der_children(der, start, end):
            for _seq_tag, seq_start, seq_end in _der_children(der, set_start, set_end):
                oid, value = _der_children(der, seq_start, seq_end)[:2]
                encoded_oid = der[oid[1] : oid[2]]
                encoding = "utf-16-be" if value[0] == 0x1E else "utf-8"
                text = der[value[1] : value[2]].decode(encoding)
                names.append(f"{_DN_NAMES.get(encoded_oid) or _oid_text(encoded_oid)}={text}")
    except (IndexError, ValueError, UnicodeDecodeError):
        return None
    return ", ".join(reversed(names))


def _der_time(der: bytes, tag: int, start: int, end: int) -> float:
    text = der[start:end].decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ (RFC 5280: 50-99 -> 19xx)
        year = int(text[:2])
        text = ("19" if year >= 50 else "20") + text
    elif tag != 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise ValueError("not a time")
    if len(text) != 15 or not text.endswith("Z"):
        raise ValueError("unsupported time format")
    return float(calendar.timegm(time.strptime(text[:14], "%Y%m%d%H%M%S")))


def certificate_validity(der: bytes) -> tuple[float, float] | None:
    """(notBefore, notAfter) of a DER certificate as Unix times, or None when it cannot be parsed."""
    try:
        _tag, start, end = _tbs_fields(der)[3]  # serialNumber, signature, issuer, validity
        times = _der_children(der, start, end)
        return _der_time(der, *times[0]), _der_time(der, *times[1])
    except (IndexError, ValueError, UnicodeDecodeError, OverflowError):
        return None
