#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: full_chain
short_description: Write the full certificate chain (device, intermediates, root) that DPS needs
version_added: 0.1.0
author: iotfleet developers (@iotfleet)
description:
  - Writes the full-chain PEM file a device presents to DPS - its own certificate first, then the
    intermediate CA certificates, then (optionally) the root.
  - Orders the certificates it is given, verifies every signature link and validity window, and refuses a
    chain that does not end at O(root_certificate) or whose leaf CN is not O(registration_id).
  - The leaf is read on the device (O(leaf_path)); the CA certificates are passed as PEM text, typically read
    on the controller with P(ansible.builtin.file#lookup).
  - Idempotent - the file is rewritten only when its content would change.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.files
  - iotfleet.aziot.atomic_write
  - iotfleet.aziot.backup
  - iotfleet.aziot.cryptography
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: Shows the subjects and expiry dates in the chain, not the PEM text.
  platform:
    platforms: posix
options:
  path:
    description: Path of the full-chain file to write on the device.
    type: path
    required: true
  leaf_path:
    description: Path of the device certificate on the device (PEM; only its first certificate is used).
    type: path
    required: true
  ca_certificates:
    description:
      - PEM text of the intermediate CA certificates, in any order. An item may hold several certificates.
        Certificates not on the path from the leaf to the root are ignored and returned in RV(unused).
    type: list
    elements: str
    default: []
  root_certificate:
    description: PEM text of the root CA certificate the chain must end at.
    type: str
    required: true
  include_root:
    description:
      - Append the root certificate to the file. DPS needs the device and intermediate certificates; the root is
        harmless and is what Azure's guides put in the full chain.
    type: bool
    default: true
  registration_id:
    description: When set, the leaf certificate's subject CN must equal it.
    type: str
  owner:
    description: Owner of the chain file (for IoT Edge, V(aziotcs)).
  mode:
    description: Mode of the chain file. Defaults to C(0644) for a new file.
seealso:
  - module: iotfleet.aziot.x509_device_cert
"""

EXAMPLES = r"""
---
- name: Build the full chain DPS group enrollment needs
  iotfleet.aziot.full_chain:
    path: /var/aziot/certs/device-id.full-chain.cert.pem
    leaf_path: /var/aziot/certs/device-id.cert.pem
    ca_certificates:
      - "{{ lookup('ansible.builtin.file', 'pki/intermediate-ca.cert.pem') }}"
    root_certificate: "{{ lookup('ansible.builtin.file', 'pki/root-ca.cert.pem') }}"
    registration_id: "{{ inventory_hostname }}"
    owner: aziotcs
    mode: "0644"
"""

RETURN = r"""
path:
  description: Path of the full-chain file.
  returned: always
  type: str
chain:
  description: Subjects of the certificates in the file, leaf first.
  returned: always
  type: list
  elements: str
  sample: [CN=182-con, CN=iotfleet Intermediate CA, CN=iotfleet Root CA]
not_after:
  description: Earliest expiry in the chain (UTC, ISO 8601) - when the chain stops working.
  returned: always
  type: str
unused:
  description: Subjects of given CA certificates that are not on the chain.
  returned: always
  type: list
  elements: str
backup_file:
  description: Name of the backup of the previous file.
  returned: when O(backup=true) and the file was replaced
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.iotfleet.aziot.plugins.module_utils._files import (
    backup_argument_spec,
    read_file,
    write_file_atomic,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._pki import (
    PkiError,
    certificate_to_pem,
    common_name,
    format_time,
    load_certificates,
    not_after,
    order_chain,
    require_cryptography,
)


def describe(certs) -> str:
    return "".join(f"{c.subject.rfc4514_string()} (until {format_time(not_after(c))})\n" for c in certs)


def describe_existing(data: bytes | None) -> str:
    if data is None:
        return ""
    try:
        return describe(load_certificates(data, "existing chain"))
    except PkiError:
        return "(unparseable file)\n"


def build_chain(module) -> tuple[list, list]:
    params = module.params
    registration_id = params["registration_id"]
    who = f"{registration_id}: " if registration_id else ""
    leaf_data = read_file(params["leaf_path"])
    if leaf_data is None:
        raise PkiError(f"{who}leaf_path {params['leaf_path']} does not exist; issue the device certificate first")
    leaf = load_certificates(leaf_data, f"{who}leaf_path {params['leaf_path']}")[0]
    if registration_id is not None and common_name(leaf.subject) != registration_id:
        raise PkiError(
            f"{who}the certificate at {params['leaf_path']} has CN '{common_name(leaf.subject)}', not the registration "
            f"id '{registration_id}'; re-issue it with x509_device_cert"
        )
    root = load_certificates(params["root_certificate"], f"{who}root_certificate")[0]
    cas = []
    for index, text in enumerate(params["ca_certificates"], start=1):
        cas.extend(load_certificates(text, f"{who}ca_certificates[{index}]"))
    try:
        return order_chain(leaf, cas, root)
    except PkiError as exc:
        raise PkiError(f"{who}{exc}") from None


def argument_spec() -> dict:
    return {
        "path": {"type": "path", "required": True},
        "leaf_path": {"type": "path", "required": True},
        "ca_certificates": {"type": "list", "elements": "str", "default": []},
        "root_certificate": {"type": "str", "required": True},
        "include_root": {"type": "bool", "default": True},
        "registration_id": {"type": "str"},
        **backup_argument_spec(),
    }


def ensure_full_chain(module) -> dict:
    """Write the chain file when its content or attributes differ (nothing in check mode); return the result.

    A chain that cannot be built fails the module, naming the certificate and the fix."""
    params = module.params
    try:
        chain, unused = build_chain(module)
    except PkiError as exc:
        module.fail_json(msg=str(exc))
    written = chain if params["include_root"] else chain[:-1]
    content = "".join(certificate_to_pem(c) for c in written).encode("ascii")

    file_args = module.load_file_common_arguments(params)
    if file_args.get("mode") is None:
        file_args["mode"] = "0644"
    existing = read_file(params["path"])
    result = {
        "changed": False,
        "path": params["path"],
        "chain": [c.subject.rfc4514_string() for c in written],
        "not_after": format_time(min(not_after(c) for c in written)),
        "unused": [c.subject.rfc4514_string() for c in unused],
    }
    if existing != content:
        result["changed"] = True
        if module._diff:
            result["diff"] = {"before": describe_existing(existing), "after": describe(written)}
        if not module.check_mode:
            backup = write_file_atomic(module, params["path"], content, file_args, params["backup"])
            if backup:
                result["backup_file"] = backup
    if not module.check_file_absent_if_check_mode(params["path"]):
        result["changed"] = module.set_fs_attributes_if_different(file_args, result["changed"])
    return result


def main():
    module = AnsibleModule(argument_spec=argument_spec(), add_file_common_args=True, supports_check_mode=True)
    require_cryptography(module)
    module.exit_json(**ensure_full_chain(module))


if __name__ == "__main__":
    main()
