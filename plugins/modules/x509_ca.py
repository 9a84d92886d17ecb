#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: x509_ca
short_description: Create or reuse a root and intermediate CA for DPS, and DPS verification certificates
version_added: 0.1.0
author: iotfleet developers (@iotfleet)
description:
  - Creates, in one directory, a self-signed root CA and one or more intermediate CAs signed by it (key and
    certificate each), like Azure's C(certGen.sh create_root_and_intermediate), for a lab or a pilot PKI.
    Existing files are reused, and a CA key is never overwritten.
  - Several intermediates (O(intermediates)) under the one root serve several DPS enrollment groups - DPS tells the
    devices of enrollment groups apart by the CA that signed them - and a CA rollover (a new intermediate beside the
    old one); only the root needs DPS's proof of possession.
  - With O(verification_code), also writes a proof-of-possession certificate for DPS (subject CN = the
    verification code DPS shows, signed by the CA key chosen with O(verification_ca)). It is re-made when the
    code changes.
  - Run it on the controller (C(delegate_to=localhost) or a play on localhost), where CA keys belong.
  - Files written in O(path) are C(root-ca.key.pem), C(root-ca.cert.pem), C(NAME-ca.key.pem) and
    C(NAME-ca.cert.pem) for each NAME of O(intermediates) (by default C(intermediate-ca.key.pem) and
    C(intermediate-ca.cert.pem)), and C(verification.cert.pem).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - iotfleet.aziot.atomic_write
  - iotfleet.aziot.cryptography
  - iotfleet.aziot.key_type
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  path:
    description:
      - Directory that holds the CA files. Created with mode C(0700) if missing.
    type: path
    required: true
  root_common_name:
    description: Subject CN of the root CA (used only when the root is created).
    type: str
    default: iotfleet Root CA
  intermediate_common_name:
    description:
      - Subject CN of the intermediate CA V(intermediate) (used only when it is created); another intermediate NAME
        gets C(<intermediate_common_name> NAME), so that no two intermediates share a subject.
    type: str
    default: iotfleet Intermediate CA
  intermediates:
    description:
      - Names of the intermediate CAs to keep under the root, each in C(NAME-ca.key.pem) / C(NAME-ca.cert.pem).
        Missing ones are created; intermediates not named here are left alone.
      - Letters, digits, C(.), C(_) and C(-); not V(root) or V(verification).
    type: list
    elements: str
    default: [intermediate]
  key_type:
    description:
      - Type of the CA keys (used only when they are created). CA keys are made once, so speed does not matter;
        RSA 4096 is what Azure's guides and tools use and is accepted everywhere.
    default: rsa-4096
  root_valid_days:
    description: Validity of a newly created root CA certificate, in days.
    type: int
    default: 3650
  intermediate_valid_days:
    description: Validity of a newly created intermediate CA certificate, in days (never past the root's).
    type: int
    default: 1825
  passphrase:
    description:
      - Encrypt newly created CA keys with this passphrase, and use it to read existing ones.
        Give the same value to M(iotfleet.aziot.x509_device_cert) as
        O(iotfleet.aziot.x509_device_cert#module:ca_key_passphrase).
    type: str
  verification_code:
    description:
      - A DPS proof-of-possession verification code. When set, C(verification.cert.pem) is written with this code
        as subject CN, signed by the CA named in O(verification_ca). Upload it to DPS to verify the CA.
    type: str
  verification_ca:
    description:
      - Which CA signs the verification certificate (the one you uploaded to DPS) - V(root), or the name of one of
        O(intermediates).
    type: str
    default: root
  verification_valid_days:
    description: Validity of the verification certificate, in days.
    type: int
    default: 30
notes:
  - Existing CA files are checked (key matches certificate, intermediate signed by root, not expired); a problem
    fails the task with the file named and nothing is overwritten.
  - Keys are written C(0600), certificates C(0644).
seealso:
  - module: iotfleet.aziot.x509_device_cert
"""

EXAMPLES = r"""
---
- name: Make the lab CA (root + intermediate)
  iotfleet.aziot.x509_ca:
    path: "{{ playbook_dir }}/../pki"
  delegate_to: localhost
  run_once: true
  register: ca

- name: Answer the DPS proof-of-possession challenge for the root CA
  iotfleet.aziot.x509_ca:
    path: "{{ playbook_dir }}/../pki"
    verification_code: 1B3C9E6A0F2D4E5B8C7A6D5E4F3A2B1C0D9E8F7A6B5C4D3E
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
root_key_path:
  description: Path of the root CA key.
  returned: always
  type: str
root_cert_path:
  description: Path of the root CA certificate (upload this to DPS).
  returned: always
  type: str
intermediate_key_path:
  description: Path of the key of the first intermediate of O(intermediates) (signs device certificates).
  returned: always
  type: str
intermediate_cert_path:
  description: Path of the certificate of the first intermediate of O(intermediates).
  returned: always
  type: str
intermediates:
  description: Each intermediate of O(intermediates) - its key and certificate paths, and its facts once it exists.
  returned: always
  type: dict
  sample:
    plant-3:
      key_path: /srv/pki/plant-3-ca.key.pem
      cert_path: /srv/pki/plant-3-ca.cert.pem
      info: {subject: "CN=iotfleet Intermediate CA plant-3"}
created:
  description: Which files were (or in check mode would be) created.
  returned: always
  type: list
  elements: str
  sample: [root-ca.key.pem, root-ca.cert.pem]
root:
  description: Facts of the root certificate (subject, issuer, serial, validity, thumbprints).
  returned: when the root exists (not in check mode before it is created)
  type: dict
intermediate:
  description: Facts of the first intermediate certificate.
  returned: when the intermediate exists
  type: dict
verification_cert_path:
  description: Path of the verification certificate.
  returned: when O(verification_code) is set
  type: str
"""

import os
import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.iotfleet.aziot.plugins.module_utils._files import (
    file_args_for,
    read_file,
    write_file_atomic,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._pki import (
    DEFAULT_CA_KEY_TYPE,
    PkiError,
    cert_info,
    certificate_to_pem,
    check_ca_pair,
    common_name,
    create_ca_certificate,
    create_verification_certificate,
    generate_private_key,
    issued_by,
    key_type_argument_spec,
    load_certificate,
    load_private_key,
    private_key_to_pem,
    require_cryptography,
    validity_problem,
)

FILES = {
    "root_key": "root-ca.key.pem",
    "root_cert": "root-ca.cert.pem",
    "verification_cert": "verification.cert.pem",
}
DEFAULT_INTERMEDIATE = "intermediate"
_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")


def file_name(name: str) -> str:
    """The file of a CA: root_key, root_cert, verification_cert, or '<intermediate>_key' / '<intermediate>_cert'."""
    if name in FILES:
        return FILES[name]
    label, _sep, kind = name.rpartition("_")
    return f"{label}-ca.{kind}.pem"


class CaDirectory:
    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.path = module.params["path"]
        self.created: list[str] = []
        self.changed = False

    def file(self, name: str) -> str:
        return os.path.join(self.path, file_name(name))

    def _write(self, name: str, content: bytes, mode: str) -> None:
        self.created.append(file_name(name))
        self.changed = True
        if not self.module.check_mode:
            write_file_atomic(
                self.module, self.file(name), content, file_args_for(self.module, self.file(name), None, None, mode)
            )

    def _load_pair(self, label: str):
        """Existing (cert, key) of one CA, or (None, None); fail if only one of them exists."""
        key_data, cert_data = read_file(self.file(f"{label}_key")), read_file(self.file(f"{label}_cert"))
        if key_data is None and cert_data is None:
            return None, None
        if key_data is None or cert_data is None:
            missing = self.file(f"{label}_key") if key_data is None else self.file(f"{label}_cert")
            raise PkiError(
                f"{missing} is missing but its {label} CA partner exists; restore it, "
                f"or remove both to make a new {label} CA"
            )
        cert = load_certificate(cert_data, self.file(f"{label}_cert"))
        key = load_private_key(key_data, self.file(f"{label}_key"), self.params["passphrase"])
        check_ca_pair(cert, key, self.file(f"{label}_cert"))
        return cert, key

    def _new_pair(self, label: str, common: str, days: int, issuer_cert=None, issuer_key=None):
        key = generate_private_key(self.params["key_type"])
        cert = create_ca_certificate(
            key, common, days, issuer_cert, issuer_key, path_length=None if issuer_cert is None else 0
        )
        self._write(f"{label}_key", private_key_to_pem(key, self.params["passphrase"]), "0600")
        self._write(f"{label}_cert", certificate_to_pem(cert).encode(), "0644")
        return cert, key

    def ensure(self) -> dict:
        params = self.params
        root_cert, root_key = self._load_pair("root")
        if root_cert is None:
            root_cert, root_key = self._new_pair("root", params["root_common_name"], params["root_valid_days"])
        result = {"root": cert_info(root_cert), "intermediates": {}}
        signers = {"root": (root_cert, root_key)}
        for name in params["intermediates"]:
            inter_cert, inter_key = self._load_pair(name)
            if inter_cert is not None and not issued_by(inter_cert, root_cert):
                raise PkiError(
                    f"{self.file(name + '_cert')} was not signed by {self.file('root_cert')}; "
                    f"restore the matching root, or remove the {name} files to make a new intermediate"
                )
            if inter_cert is None:
                common = params["intermediate_common_name"]
                inter_cert, inter_key = self._new_pair(
                    name,
                    common if name == DEFAULT_INTERMEDIATE else f"{common} {name}",
                    params["intermediate_valid_days"],
                    root_cert,
                    root_key,
                )
            signers[name] = (inter_cert, inter_key)
            result["intermediates"][name] = cert_info(inter_cert)
        result["intermediate"] = result["intermediates"][params["intermediates"][0]]
        if params["verification_code"]:
            self._ensure_verification(*signers[_verification_signer(params)])
            result["verification_cert_path"] = self.file("verification_cert")
        return result

    def _ensure_verification(self, ca_cert, ca_key) -> None:
        code = self.params["verification_code"]
        existing = read_file(self.file("verification_cert"))
        if existing is not None:
            try:
                cert = load_certificate(existing, self.file("verification_cert"))
            except PkiError:
                cert = None
            if (
                cert is not None
                and common_name(cert.subject) == code
                and issued_by(cert, ca_cert)
                and validity_problem(cert, "verification certificate") is None
            ):
                return
        cert = create_verification_certificate(code, ca_cert, ca_key, self.params["verification_valid_days"])
        self._write("verification_cert", certificate_to_pem(cert).encode(), "0644")


def argument_spec() -> dict:
    return {
        "path": {"type": "path", "required": True},
        "root_common_name": {"type": "str", "default": "iotfleet Root CA"},
        "intermediate_common_name": {"type": "str", "default": "iotfleet Intermediate CA"},
        "intermediates": {"type": "list", "elements": "str", "default": [DEFAULT_INTERMEDIATE]},
        **key_type_argument_spec(DEFAULT_CA_KEY_TYPE),
        "root_valid_days": {"type": "int", "default": 3650},
        "intermediate_valid_days": {"type": "int", "default": 1825},
        "passphrase": {"type": "str", "no_log": True},
        "verification_code": {"type": "str"},
        "verification_ca": {"type": "str", "default": "root"},
        "verification_valid_days": {"type": "int", "default": 30},
    }


def _verification_signer(params: dict) -> str:
    """The CA that signs the verification certificate: root, an intermediate's name ('intermediate': the first)."""
    name = params["verification_ca"]
    if name == DEFAULT_INTERMEDIATE and DEFAULT_INTERMEDIATE not in params["intermediates"]:
        return params["intermediates"][0]
    return name


def _check_params(params: dict) -> None:
    for option in ("root_valid_days", "intermediate_valid_days", "verification_valid_days"):
        if params[option] < 1:
            raise PkiError(f"{option} must be at least 1, got {params[option]}")
    names = params["intermediates"]
    if not names:
        raise PkiError("intermediates must name at least one intermediate CA")
    for name in names:
        if not _NAME_RE.match(name) or name in ("root", "verification"):
            raise PkiError(
                f"intermediates: {name!r} is not a usable CA name; use letters, digits, '.', '_' and '-', "
                "not 'root' or 'verification'"
            )
    if len(set(names)) != len(names):
        raise PkiError(f"intermediates names a CA twice: {', '.join(names)}")
    if _verification_signer(params) not in ("root", *names):
        raise PkiError(
            f"verification_ca {params['verification_ca']!r} is neither root nor one of intermediates "
            f"({', '.join(names)})"
        )


def ensure_ca(module) -> dict:
    """Create what is missing in the CA directory (nothing in check mode); return the module result."""
    _check_params(module.params)
    names = module.params["intermediates"]
    path = module.params["path"]
    ca = CaDirectory(module)
    if not os.path.isdir(path):
        ca.changed = True
        if not module.check_mode:
            try:
                os.makedirs(path, mode=0o700)
            except OSError as exc:
                raise PkiError(f"cannot create CA directory {path}: {exc.strerror}") from None
    facts = ca.ensure() if os.path.isdir(path) else {}
    if module.check_mode and not os.path.isdir(path):
        ca.created = [FILES["root_key"], FILES["root_cert"]]
        ca.created += [file_name(f"{name}_{kind}") for name in names for kind in ("key", "cert")]
        if module.params["verification_code"]:
            ca.created.append(FILES["verification_cert"])
    infos = facts.pop("intermediates", {})
    intermediates = {
        name: dict(
            {"key_path": ca.file(f"{name}_key"), "cert_path": ca.file(f"{name}_cert")},
            **({"info": infos[name]} if name in infos else {}),
        )
        for name in names
    }
    return dict(
        changed=ca.changed,
        created=ca.created,
        root_key_path=ca.file("root_key"),
        root_cert_path=ca.file("root_cert"),
        intermediate_key_path=intermediates[names[0]]["key_path"],
        intermediate_cert_path=intermediates[names[0]]["cert_path"],
        intermediates=intermediates,
        **facts,
    )


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    require_cryptography(module)
    try:
        result = ensure_ca(module)
    except PkiError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
