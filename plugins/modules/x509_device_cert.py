#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: x509_device_cert
short_description: Ensure a device key and a CA-signed X.509 device certificate for DPS
version_added: 0.1.0
author: iotfleet developers (@iotfleet)
description:
  - Ensures a private key on the device and a certificate for it whose subject CN is the DPS registration id,
    signed by the given (intermediate) CA. One task does it all.
  - This is an action plugin paired with a module. The module runs on the device, creates or reuses the
    device private key and returns a certificate signing request; the action plugin signs the CSR on the
    controller with the CA key; the certificate and full chain are then written on the device.
    The device private key never leaves the device and the CA private key never leaves the controller.
  - A device as it should be costs one plain shell command and no module (RV(device_check)); a new certificate or
    chain is written by one plain shell command too - atomically, with its owner, group and mode - when that read
    showed no SELinux, O(cert_mode) is octal and O(backup) is off (RV(device_install)). The device then needs
    C(openssl), C(base64), C(stat), C(mktemp) and C(sync) (Debian's coreutils and openssl); without them the module
    does it all, as before.
  - The certificate is (re-)issued when it is missing or unparseable, was issued for another key, by another
    CA, with a CN other than O(registration_id), has a key of another type, is not yet valid or expired, or
    expires within O(renew_before) days. The reasons are returned in RV(reissue_reasons).
  - The existing key is kept. What happens when it cannot be kept (unreadable, or of another type than
    O(key_type)) is governed by O(regenerate_key).
  - A device Ansible cannot use (SSH refused or unanswered, a changed host key, sudo asking for a password ...) fails
    the task in one line naming the host, the problem and the fix (P(iotfleet.aziot.connection_problem#filter)),
    as C(playbooks/tasks/check_connection.yml) does, so that a playbook whose first round trip to the device is
    this task needs no connection check before it.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
  - iotfleet.aziot.atomic_write
  - iotfleet.aziot.backup
  - iotfleet.aziot.cryptography
  - iotfleet.aziot.key_type
  - iotfleet.aziot.registration_id
attributes:
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: none
  check_mode:
    support: full
    details: Nothing is generated or signed; the result says what would change and why.
  diff_mode:
    support: full
    details: Shows certificate facts (subject, issuer, serial, validity, thumbprints), never key material.
  platform:
    platforms: posix
options:
  key_path:
    description:
      - Path of the device private key on the device (PEM, PKCS#8, unencrypted as IoT Edge requires).
      - Created with O(key_mode) if missing. Its directory must exist, unless O(key_dir_mode) is set.
    type: path
    required: true
  cert_path:
    description:
      - Path of the device certificate on the device (PEM, the leaf only; see M(iotfleet.aziot.full_chain) for
        the full chain DPS group enrollments need).
    type: path
    required: true
  key_type:
    description:
      - Type of the device key.
      - V(ec-p256) is the default because it is accepted by Azure IoT Hub and DPS and is generated in well under
        a millisecond, while an RSA 4096 key (what the manual guides use) takes about 0.7 s of CPU per device,
        which dominates provisioning time on a fleet and on a Raspberry Pi.
      - Changing it for an existing key is refused unless O(regenerate_key) allows replacing the key.
    default: ec-p256
  regenerate_key:
    description:
      - When the existing device key may be replaced by a new one.
      - V(never) keeps an existing key and fails with an explanation when it is unreadable or not of O(key_type).
        A missing key is always created.
      - V(on_mismatch) replaces an unreadable key or a key of another type than O(key_type).
      - V(always) makes a new key (and certificate) on every run; use it for one-off key rotation only, it is
        never idempotent.
    type: str
    default: never
    choices: [never, on_mismatch, always]
  ca_cert_path:
    description:
      - Path B(on the controller) of the issuing CA certificate (usually the intermediate). Relative paths are
        resolved like other controller files (relative to the playbook).
    type: path
    required: true
  ca_key_path:
    description:
      - Path B(on the controller) of the issuing CA private key. It is read on the controller only and never
        sent to the device.
    type: path
    required: true
  ca_key_passphrase:
    description:
      - Passphrase of the CA private key, if it is encrypted.
    type: str
  valid_days:
    description:
      - Validity of a newly issued certificate, in days. Never extends past the CA certificate's own expiry.
    type: int
    default: 365
  renew_before:
    description:
      - Re-issue the certificate (with the same key) when it expires within this many days.
    type: int
    default: 30
  key_owner:
    description: Owner of the key file (for IoT Edge, V(aziotks)).
    type: str
  key_group:
    description: Group of the key file.
    type: str
  key_mode:
    description:
      - Mode of the key file. The file is created with this mode before it gets its name, so the key is never
        readable by others, not even for a moment.
    type: raw
    default: "0600"
  cert_owner:
    description: Owner of the certificate file (for IoT Edge, V(aziotcs)).
    type: str
  cert_group:
    description: Group of the certificate file.
    type: str
  cert_mode:
    description: Mode of the certificate file.
    type: raw
    default: "0644"
  key_dir_mode:
    description:
      - When set, the directory of O(key_path) is ensured with this mode and O(key_owner)/O(key_group), and
        created if missing (a new directory is made V(0700) first, so it is never more open than asked).
        Missing parents above it are created with the default mode, owned by the connecting user.
      - V(0700) is what aziot expects for C(/var/aziot/secrets). Not set, the directory must exist and is left
        as it is.
      - Saves an M(ansible.builtin.file) task (one device round trip) per device and run.
    type: raw
  cert_dir_mode:
    description:
      - When set, the directories of O(cert_path) and O(full_chain_path) are ensured with this mode and
        O(cert_owner)/O(cert_group), created if missing, like O(key_dir_mode).
      - If the key and the certificate share a directory, set only one of O(key_dir_mode) and
        O(cert_dir_mode), or the same mode and owners in both.
    type: raw
  full_chain_path:
    description:
      - Also maintain the full-chain file DPS needs at this path on the device (device certificate, then the
        issuing CA, then the certificates of O(ca_chain_paths)), in the same task. Same owner, group and mode as
        the certificate. It is rewritten whenever its content would differ, for example after a re-issue.
      - Doing it here saves a module run per device compared with M(iotfleet.aziot.full_chain).
    type: path
  ca_chain_paths:
    description:
      - Paths B(on the controller) of PEM files with the CA certificates above the issuing CA, up to and including
        the root, in any order. Needed with O(full_chain_path) unless the issuing CA is itself the root.
      - Every signature link and validity window is checked, and the chain must end at a self-signed root.
    type: list
    elements: path
    default: []
  full_chain_include_root:
    description:
      - Put the root CA certificate at the end of the O(full_chain_path) file, as Azure's guides do.
    type: bool
    default: true
  issued_cert_dir:
    description:
      - A directory B(on the controller) where the controller keeps a copy of the certificate the device holds, as
        C(<registration_id>.cert.pem) (the leaf only, PEM, mode C(0644); the directory is created if missing).
      - The copy is written whenever the certificate on the device differs from it - after a (re-)issue, or on the
        first run with this option - by a temporary file in the same directory renamed over the copy, so a reader
        never sees half a certificate. Never in check mode; there RV(issued_cert_changed) says whether it would be.
        Writing it makes the task report a change.
      - With it, a device can be blocked (C(playbooks/revoke.yml)) or replaced (C(playbooks/replace.yml)) without
        reaching it, and C(playbooks/fleet_status.yml) reports every device's expiry without device contact.
      - Not set (the default), no copy is kept. Relative paths are resolved like other controller files.
    type: path
notes:
  - The action plugin needs C(cryptography) on the controller too.
  - Only the options the device needs are sent to it; O(ca_cert_path), O(ca_key_path), O(ca_key_passphrase),
    O(ca_chain_paths), O(valid_days), O(renew_before), O(full_chain_include_root) and O(issued_cert_dir) stay on
    the controller.
seealso:
  - module: iotfleet.aziot.x509_ca
  - module: iotfleet.aziot.full_chain
"""

EXAMPLES = r"""
---
- name: Ensure the device key and certificate (CN = registration id)
  iotfleet.aziot.x509_device_cert:
    registration_id: "{{ inventory_hostname }}"
    key_path: /var/aziot/secrets/device-id.key.pem
    cert_path: /var/aziot/certs/device-id.cert.pem
    key_owner: aziotks
    cert_owner: aziotcs
    ca_cert_path: "{{ playbook_dir }}/../pki/intermediate-ca.cert.pem"
    ca_key_path: "{{ playbook_dir }}/../pki/intermediate-ca.key.pem"
  register: device_cert

- name: Re-issue every certificate that expires within 90 days, keeping the keys
  iotfleet.aziot.x509_device_cert:
    registration_id: "{{ inventory_hostname }}"
    key_path: /var/aziot/secrets/device-id.key.pem
    cert_path: /var/aziot/certs/device-id.cert.pem
    ca_cert_path: pki/intermediate-ca.cert.pem
    ca_key_path: pki/intermediate-ca.key.pem
    renew_before: 90

- name: Key, certificate and the full chain for DPS group enrollment, in one task
  iotfleet.aziot.x509_device_cert:
    registration_id: "{{ inventory_hostname }}"
    key_path: /var/aziot/secrets/device-id.key.pem
    cert_path: /var/aziot/certs/device-id.cert.pem
    full_chain_path: /var/aziot/certs/device-id.full-chain.cert.pem
    ca_cert_path: pki/intermediate-ca.cert.pem
    ca_key_path: pki/intermediate-ca.key.pem
    ca_chain_paths: [pki/root-ca.cert.pem]

- name: Keep a copy of every device certificate on the controller (revoke and replace need no device contact)
  iotfleet.aziot.x509_device_cert:
    registration_id: "{{ inventory_hostname }}"
    key_path: /var/aziot/secrets/device-id.key.pem
    cert_path: /var/aziot/certs/device-id.cert.pem
    ca_cert_path: pki/intermediate-ca.cert.pem
    ca_key_path: pki/intermediate-ca.key.pem
    issued_cert_dir: pki/issued

- name: Move a device from RSA to EC P-256 (replaces the key, keeps a backup)
  iotfleet.aziot.x509_device_cert:
    registration_id: 182-con
    key_path: /var/aziot/secrets/device-id.key.pem
    cert_path: /var/aziot/certs/device-id.cert.pem
    ca_cert_path: pki/intermediate-ca.cert.pem
    ca_key_path: pki/intermediate-ca.key.pem
    key_type: ec-p256
    regenerate_key: on_mismatch
    backup: true
"""

RETURN = r"""
device_install:
  description:
    - How the new certificate and/or full chain were written. V(plain) - one plain shell command (temporary file
      in the same directory, owner, group and mode, C(sync), rename). V(module) - by the module (with O(backup),
      on SELinux, with a symbolic O(cert_mode), or when the plain command failed).
  returned: when a certificate or full chain was written
  type: str
  choices: [plain, module]
  sample: plain
device_check:
  description:
    - How the device was checked. V(read) - one plain shell command printed the certificate, the full chain, the
      owner, group and mode of the files and directories and the public half of the key (C(openssl pkey -pubout)
      on the device; the key itself is never read off it), and they showed nothing to change, so the module did
      not run. V(module) - the module ran on the device (a key, certificate, chain, owner or mode to write, or
      anything the read could not settle - no C(openssl) on the device, SELinux enabled, a symbolic mode,
      O(backup=true), O(regenerate_key=always)).
    - On a no-op re-run of a fleet whose devices are as they should be, every device says V(read).
  returned: always
  type: str
  choices: [read, module]
  sample: read
created_directories:
  description: Directories created because O(key_dir_mode) or O(cert_dir_mode) was set and they were missing.
  returned: when a directory was created (or would be, in check mode)
  type: list
  elements: str
  sample: [/var/aziot/secrets]
registration_id:
  description: The registration id (certificate CN).
  returned: always
  type: str
  sample: 182-con
key_path:
  description: Path of the device key on the device.
  returned: always
  type: str
cert_path:
  description: Path of the device certificate on the device.
  returned: always
  type: str
key_type:
  description: Type of the device key.
  returned: always
  type: str
  sample: ec-p256
key_generated:
  description: Whether a new device key was (or, in check mode, would be) generated.
  returned: always
  type: bool
reissued:
  description: Whether the certificate was (or, in check mode, would be) issued.
  returned: always
  type: bool
reissue_reasons:
  description:
    - "Why the certificate was issued, each as C(code: detail). Codes are V(missing), V(unparseable),
      V(key_mismatch), V(key_type_changed), V(issuer_mismatch), V(cn_mismatch), V(not_yet_valid), V(expired),
      V(renewal_window) and V(new_key)."
  returned: always
  type: list
  elements: str
  sample: ["renewal_window: expires 2027-01-01T00:00:00Z, within renew_before=30 days"]
subject:
  description: Subject of the device certificate.
  returned: when a certificate exists (not in check mode before the first issue)
  type: str
  sample: CN=182-con
issuer:
  description: Issuer of the device certificate.
  returned: when a certificate exists
  type: str
  sample: CN=iotfleet Intermediate CA
serial_number:
  description: Serial number, hexadecimal.
  returned: when a certificate exists
  type: str
not_before:
  description: Start of validity (UTC, ISO 8601).
  returned: when a certificate exists
  type: str
not_after:
  description: End of validity (UTC, ISO 8601).
  returned: when a certificate exists
  type: str
  sample: "2027-11-23T10:00:00Z"
sha1_thumbprint:
  description: SHA-1 thumbprint, upper-case hex, as DPS and IoT Hub show it.
  returned: when a certificate exists
  type: str
sha256_thumbprint:
  description: SHA-256 thumbprint, upper-case hex.
  returned: when a certificate exists
  type: str
backup_key:
  description: Name of the backup of the previous key.
  returned: when O(backup=true) and the key was replaced
  type: str
backup_cert:
  description: Name of the backup of the previous certificate.
  returned: when O(backup=true) and the certificate was replaced
  type: str
full_chain_path:
  description: Path of the full-chain file on the device.
  returned: when O(full_chain_path) is set
  type: str
full_chain:
  description: Subjects of the certificates in the full-chain file, device certificate first.
  returned: when O(full_chain_path) is set
  type: list
  elements: str
  sample: [CN=182-con, CN=iotfleet Intermediate CA, CN=iotfleet Root CA]
full_chain_changed:
  description: Whether the full-chain file was (or, in check mode, would be) written.
  returned: when O(full_chain_path) is set
  type: bool
backup_full_chain:
  description: Name of the backup of the previous full-chain file.
  returned: when O(backup=true) and the full-chain file was replaced
  type: str
issued_cert_path:
  description: Path, on the controller, of the copy of the device certificate.
  returned: when O(issued_cert_dir) is set
  type: str
  sample: /srv/pki/issued/182-con.cert.pem
issued_cert_changed:
  description: Whether the controller's copy was (or, in check mode, would be) written.
  returned: when O(issued_cert_dir) is set
  type: bool
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.iotfleet.aziot.plugins.module_utils._device_cert import (
    PHASE_INSPECT,
    PHASE_INSTALL,
    module_argument_spec,
    wanted_directories,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._files import (
    file_args_for,
    read_file,
    write_file_atomic,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._pki import (
    PkiError,
    build_csr,
    csr_to_pem,
    generate_private_key,
    key_type_of,
    load_certificate,
    load_private_key,
    private_key_to_pem,
    public_key_bytes,
    public_key_pem,
    require_cryptography,
)


def ensure_key(module, result: dict):
    """Load the device key, or make one when missing or when the policy allows replacing it."""
    params = module.params
    registration_id = params["registration_id"]
    key_path = params["key_path"]
    policy = params["regenerate_key"]
    wanted_type = params["key_type"]
    key_args = file_args_for(module, key_path, params["key_owner"], params["key_group"], params["key_mode"])

    existing = read_file(key_path)
    key = None
    reason = None
    if existing is None:
        reason = "new_key: no device key yet"
    else:
        try:
            key = load_private_key(existing, f"{registration_id}: device key {key_path}")
        except PkiError as exc:
            if policy == "never":
                module.fail_json(
                    msg=f"{exc}; fix or remove it, or set regenerate_key=on_mismatch to replace it "
                    "(with backup=true the old file is kept)"
                )
            reason = "new_key: the existing key was unreadable"
        if key is not None and key_type_of(key) != wanted_type:
            found = key_type_of(key)
            if policy == "never":
                module.fail_json(
                    msg=f"{registration_id}: device key {key_path} is {found} but key_type is {wanted_type}; "
                    f"set key_type={found} to keep it, or regenerate_key=on_mismatch to replace it"
                )
            key = None
            reason = f"new_key: the existing key was {found}, key_type is {wanted_type}"
        if key is not None and policy == "always":
            key = None
            reason = "new_key: regenerate_key=always"

    if key is None:
        result["key_generated"] = True
        result["key_reason"] = reason
        result["changed"] = True
        if module.check_mode:
            return None
        key = generate_private_key(wanted_type)
        backup = write_file_atomic(module, key_path, private_key_to_pem(key), key_args, params["backup"])
        if backup:
            result["backup_key"] = backup
    if module.set_fs_attributes_if_different(key_args, False):
        result["changed"] = True
    return key


def _wanted_directories(module) -> dict:
    """{directory: (owner, group, mode)} asked for by key_dir_mode / cert_dir_mode; fails on a conflict."""
    wanted, conflict = wanted_directories(module.params)
    if conflict is not None:
        module.fail_json(
            msg=f"{module.params['registration_id']}: the key and the certificate are both in {conflict}, and "
            "key_dir_mode/key_owner/key_group differ from cert_dir_mode/cert_owner/cert_group; set only one "
            "of key_dir_mode and cert_dir_mode, or put the key in its own directory"
        )
    return wanted


def ensure_directories(module, result: dict) -> None:
    """Create or fix the key/certificate directories when key_dir_mode/cert_dir_mode ask for it."""
    registration_id = module.params["registration_id"]
    created = []
    for directory, (owner, group, mode) in _wanted_directories(module).items():
        if not os.path.isdir(directory):
            if os.path.lexists(directory):
                module.fail_json(
                    msg=f"{registration_id}: {directory} exists but is not a directory; move it away so the "
                    "key and certificate directory can be created"
                )
            created.append(directory)
            result["changed"] = True
            if module.check_mode:
                continue
            try:
                os.makedirs(os.path.dirname(directory), exist_ok=True)
                os.mkdir(directory, 0o700)  # never more open than asked, before owner and mode are set
            except OSError as exc:
                module.fail_json(
                    msg=f"{registration_id}: cannot create directory {directory}: {exc.strerror}; nothing was "
                    "written (make its parent writable, then run again)"
                )
        if module.set_fs_attributes_if_different(file_args_for(module, directory, owner, group, mode), False):
            result["changed"] = True
    if created:
        result["created_directories"] = created


def inspect(module) -> dict:
    params = module.params
    result = {"changed": False, "key_generated": False}
    ensure_directories(module, result)
    key = ensure_key(module, result)
    cert_bytes = read_file(params["cert_path"])
    result["certificate"] = cert_bytes.decode("utf-8", "replace") if cert_bytes is not None else None
    if key is not None:
        result["key_type"] = key_type_of(key)
        result["public_key"] = public_key_pem(key)
        result["csr"] = csr_to_pem(build_csr(key, params["registration_id"]))
    paths = [params["cert_path"]]
    if params["full_chain_path"]:
        chain_bytes = read_file(params["full_chain_path"])
        result["full_chain"] = chain_bytes.decode("utf-8", "replace") if chain_bytes is not None else None
        paths.append(params["full_chain_path"])
    for path in paths:
        if read_file(path) is not None:
            args = file_args_for(module, path, params["cert_owner"], params["cert_group"], params["cert_mode"])
            if module.set_fs_attributes_if_different(args, False):
                result["changed"] = True
    return result


def _write_if_different(module, path: str, content: bytes) -> tuple[bool, str | None]:
    """Write `content` to `path` (cert owner/group/mode) unless it is already there."""
    params = module.params
    args = file_args_for(module, path, params["cert_owner"], params["cert_group"], params["cert_mode"])
    changed, backup = False, None
    if read_file(path) != content:
        changed = True
        if not module.check_mode:
            backup = write_file_atomic(module, path, content, args, params["backup"])
    changed = module.set_fs_attributes_if_different(args, changed)
    return changed, backup


def install(module) -> dict:
    """Write the signed certificate and/or the full chain the controller sent."""
    params = module.params
    registration_id = params["registration_id"]
    result = {"changed": False}
    if params["_certificate"]:
        try:
            cert = load_certificate(params["_certificate"].encode("ascii"), f"{registration_id}: signed certificate")
            key = load_private_key(read_file(params["key_path"]) or b"", f"{registration_id}: device key")
        except PkiError as exc:
            module.fail_json(msg=str(exc))
        if public_key_bytes(cert.public_key()) != public_key_bytes(key):
            module.fail_json(
                msg=f"{registration_id}: the signed certificate does not match the key at {params['key_path']} "
                "(the key changed during the run?); run again"
            )
        changed, backup = _write_if_different(module, params["cert_path"], params["_certificate"].encode("ascii"))
        result["changed"] |= changed
        if backup:
            result["backup_cert"] = backup
    if params["_full_chain"]:
        chain = params["_full_chain"].encode("ascii")
        try:
            first = load_certificate(chain, f"{registration_id}: full chain")
            current = load_certificate(read_file(params["cert_path"]) or b"", f"{registration_id}: certificate")
        except PkiError as exc:
            module.fail_json(msg=str(exc))
        if first != current:
            module.fail_json(
                msg=f"{registration_id}: the full chain does not start with the certificate at {params['cert_path']} "
                "(it changed during the run?); run again"
            )
        changed, backup = _write_if_different(module, params["full_chain_path"], chain)
        result["changed"] |= changed
        if backup:
            result["backup_full_chain"] = backup
    return result


def argument_spec() -> dict:
    """The module's spec on the device (plugins/module_utils/_device_cert.py has why it differs from the docs)."""
    return module_argument_spec()


BACKENDS = {PHASE_INSPECT: inspect, PHASE_INSTALL: install}


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    require_cryptography(module)
    backend = BACKENDS.get(module.params["_phase"])
    if backend is None:
        module.fail_json(
            msg="iotfleet.aziot.x509_device_cert must run through its action plugin; call it by that name "
            "in a task (it signs on the controller)"
        )
    module.exit_json(**backend(module))


if __name__ == "__main__":
    main()
