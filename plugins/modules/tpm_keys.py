#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: tpm_keys
short_description: Ensure the device's TPM has its EK and SRK at the DPS handles; return their public parts
version_added: 0.3.0
author: iotfleet developers (@iotfleet)
description:
  - Runs on the device. Makes sure the TPM 2.0 holds the endorsement key (EK) at persistent handle C(0x81010001) and
    a storage root key (SRK) at C(0x81000001), the handles Azure's DPS clients (C SDK, Node SDK, C(aziot-tpmd)) use,
    and returns both public parts as DPS takes them for a TPM individual enrollment (C(endorsementKey),
    C(storageRootKey)).
  - A key is created only when its handle is empty. The EK comes from the TPM's endorsement seed with the default
    RSA-2048 EK template (C(tpm2_createek -G rsa)); the SRK is the RSA-2048 / AES-128-CFB storage key DPS clients
    create (C(tpm2_createprimary -C o -G rsa2048:null:aes128cfb) with C(noda)). A key already at a handle is
    returned as it is, never replaced.
  - Both keys are primary keys, derived from the TPM's seeds, so the same TPM gives the same keys again; check mode
    computes them in the TPM as transient objects (flushed again) and returns them without persisting anything.
  - Private parts never leave the TPM. tpm2-tools' files go to a private temporary directory (mode C(0700)) that is
    removed afterwards; transient objects are flushed, also when a step fails, and a failure after a key was
    persisted removes that key again, so a failed run leaves the TPM as it found it.
requirements:
  - tpm2-tools 5 on the device (Debian and Raspberry Pi OS package C(tpm2-tools))
  - a TPM 2.0 the TCTI reaches; on a Raspberry Pi with an SPI TPM module, the TPM device tree overlay (for example
    C(dtoverlay=tpm-slb9670) in C(/boot/firmware/config.txt)), which gives C(/dev/tpmrm0)
  - root (C(become)) or a user in group C(tss) to open C(/dev/tpmrm0)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Computes the keys that would be persisted (transient objects, flushed again) and returns them.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  tcti:
    description:
      - How tpm2-tools reach the TPM (C(TPM2TOOLS_TCTI)).
      - V(device:/dev/tpmrm0) is the kernel resource manager, what a Raspberry Pi with a TPM module has.
        A software TPM (C(swtpm socket --tpm2 --server type=tcp,port=P ...)) is V(swtpm:host=127.0.0.1,port=P).
    type: str
    default: device:/dev/tpmrm0
  owner_auth:
    description:
      - The password of the TPM's owner hierarchy, needed to create the SRK and to persist either key. Not needed
        when the owner hierarchy has none (a new or cleared TPM).
    type: str
notes:
  - DPS TPM attestation works with individual enrollments only; give RV(endorsement_key) (and
    RV(storage_root_key)) to M(iotfleet.aziot.dps_enrollment).
  - The TPM serves one client at a time without a resource manager (a software TPM over TCP); do not run other
    TPM commands against it at the same time.
seealso:
  - name: TPM attestation in this collection
    description: What a Raspberry Pi needs, and how to read the EK yourself with tpm2-tools (docs/tpm.md).
    link: https://learn.microsoft.com/azure/iot-dps/concepts-tpm-attestation
"""

EXAMPLES = r"""
---
- name: Make sure the TPM has its EK and SRK
  iotfleet.aziot.tpm_keys:
    tcti: device:/dev/tpmrm0
  become: true
  register: tpm

- name: Show the endorsement key a TPM individual enrollment needs
  ansible.builtin.debug:
    msg: "{{ tpm.endorsement_key }}"

- name: A TPM whose owner hierarchy has a password
  iotfleet.aziot.tpm_keys:
    owner_auth: "{{ vault_tpm_owner_password }}"
  become: true
"""

RETURN = r"""
endorsement_key:
  description: Base64 of the EK's marshalled TPM2B_PUBLIC (C(tpm2_readpublic -c 0x81010001 -o ek.pub)), DPS's
    C(attestation.tpm.endorsementKey). In check mode, the EK that would be persisted.
  returned: success
  type: str
  sample: AToAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEA37/21CNP0ydLbSwL...
storage_root_key:
  description: Base64 of the SRK's marshalled TPM2B_PUBLIC, DPS's C(attestation.tpm.storageRootKey).
    In check mode, the SRK that would be persisted.
  returned: success
  type: str
  sample: ARoAAQALAAMEcgAAAAYAgABDABAIAAAAAAABAMkx0TDtVpZ2...
endorsement_key_name:
  description: The EK's TPM Name in hex (nameAlg, then the hash of its TPMT_PUBLIC), as C(tpm2_readpublic) prints it;
    a short way to tell TPMs apart.
  returned: success
  type: str
  sample: 000b6baedbec272232f21d18649d7466aaf59b71a74591307a0df464114171982c58
storage_root_key_name:
  description: The SRK's TPM Name in hex; DPS binds the credential it sends to it.
  returned: success
  type: str
  sample: 000b1f5e7c90...
created:
  description: The keys created and persisted by this run (in check mode, that would be), of C(endorsement_key)
    and C(storage_root_key).
  returned: success
  type: list
  elements: str
  sample: [endorsement_key, storage_root_key]
"""

import base64
import os
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes

from ansible_collections.iotfleet.aziot.plugins.module_utils._tpm import (
    EK_HANDLE,
    SRK_ALGORITHM,
    SRK_ATTRIBUTES,
    SRK_HANDLE,
    TPM2_TOOLS,
    error_summary,
    is_bad_auth,
    object_name,
    persistent_handles,
    tpm_argument_spec,
)

KEYS = (("endorsement_key", EK_HANDLE), ("storage_root_key", SRK_HANDLE))


class TpmCommandError(Exception):
    """A tpm2-tools command failed."""

    def __init__(self, tool: str, returncode: int, stderr: str) -> None:
        super().__init__(f"{tool} failed ({returncode}): {error_summary(stderr)}")
        self.tool = tool
        self.stderr = stderr


class TctiError(Exception):
    """The TCTI cannot be opened (or the TPM does not answer through it)."""


class Tpm:
    """tpm2-tools against one TCTI, with files in a private directory; transients flushed after every command
    (a TPM without a resource manager keeps them and runs out of object slots)."""

    def __init__(self, module: AnsibleModule, tools: dict[str, str], workdir: str) -> None:
        self.module = module
        self.tools = tools
        self.workdir = workdir
        self.environ = {"TPM2TOOLS_TCTI": module.params["tcti"]}
        self.owner_args: list[str] = []
        if module.params["owner_auth"] is not None:
            auth_path = self.path("owner.auth")
            descriptor = os.open(auth_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(to_bytes(module.params["owner_auth"], errors="surrogate_or_strict"))
            # from a file: a password on the command line is visible to every user (ps)
            self.owner_args = ["-P", f"file:{auth_path}"]

    def path(self, name: str) -> str:
        return os.path.join(self.workdir, name)

    def run(self, tool: str, *args: str, check: bool = True) -> tuple[int, str, str]:
        returncode, stdout, stderr = self.module.run_command(
            [self.tools[tool], *args], environ_update=self.environ, cwd=self.workdir
        )
        if tool != "tpm2_flushcontext":
            self.flush_transients()
        if check and returncode != 0:
            raise TpmCommandError(tool, returncode, stderr)
        return returncode, stdout, stderr

    def flush_transients(self) -> None:
        self.module.run_command([self.tools["tpm2_flushcontext"], "-t"], environ_update=self.environ, cwd=self.workdir)

    def persistent_handles(self) -> set[int]:
        returncode, stdout, stderr = self.run("tpm2_getcap", "handles-persistent", check=False)
        if returncode != 0:
            raise TctiError(error_summary(stderr))
        return persistent_handles(stdout)

    def read_public(self, context: str, name: str) -> bytes:
        public_path = self.path(f"{name}.pub")
        self.run("tpm2_readpublic", "-c", context, "-o", public_path)
        with open(public_path, "rb") as handle:
            return handle.read()

    def create_transient(self, key: str) -> str:
        """Create the key as a transient primary object; the path of its saved context."""
        context = self.path(f"{key}.ctx")
        if key == "endorsement_key":
            self.run("tpm2_createek", "-c", context, "-G", "rsa")
        else:
            self.run(
                "tpm2_createprimary", "-C", "o", *self.owner_args, "-g", "sha256", "-G", SRK_ALGORITHM,
                "-a", SRK_ATTRIBUTES, "-c", context,
            )  # fmt: skip
        return context

    def persist(self, context: str, handle: int) -> None:
        self.run("tpm2_evictcontrol", "-C", "o", *self.owner_args, "-c", context, hex(handle))

    def evict(self, handle: int) -> None:
        self.run("tpm2_evictcontrol", "-C", "o", *self.owner_args, "-c", hex(handle), check=False)


def argument_spec() -> dict:
    return tpm_argument_spec()


def find_tools(module: AnsibleModule) -> dict[str, str]:
    tools = {}
    for tool in TPM2_TOOLS:
        path = module.get_bin_path(tool)
        if path is None:
            module.fail_json(
                msg=f"tpm2-tools is not installed on this device ({tool} is not on PATH): install the Debian package "
                "tpm2-tools (apt-get install tpm2-tools)"
            )
        tools[tool] = path
    return tools


def ensure_keys(tpm: Tpm, check_mode: bool) -> dict:
    """Read the EK and SRK at their handles, create (and, unless check_mode, persist) those that are absent."""
    present = tpm.persistent_handles()
    publics: dict[str, bytes] = {}
    contexts: dict[str, str] = {}
    # every absent key is created as a transient first, so an error (a wrong owner password) persists nothing
    for key, handle in KEYS:
        if handle in present:
            publics[key] = tpm.read_public(hex(handle), key)
        else:
            contexts[key] = tpm.create_transient(key)
            publics[key] = tpm.read_public(contexts[key], key)
    if not check_mode:
        persisted: list[int] = []
        try:
            for key, handle in KEYS:
                if key in contexts:
                    tpm.persist(contexts[key], handle)
                    persisted.append(handle)
        except TpmCommandError:
            for handle in persisted:
                tpm.evict(handle)
            raise
        for key, handle in KEYS:
            if key in contexts:  # what DPS clients will read: the persisted object
                publics[key] = tpm.read_public(hex(handle), key)
    result = {"changed": bool(contexts), "created": [key for key, _handle in KEYS if key in contexts]}
    for key, _handle in KEYS:
        result[key] = base64.b64encode(publics[key]).decode("ascii")
        result[f"{key}_name"] = object_name(publics[key]).hex()
    return result


def failure_message(exc: Exception, params: dict) -> str:
    tcti = params["tcti"]
    if isinstance(exc, TctiError):
        return (
            f"cannot use the TPM through tcti '{tcti}' ({exc}): on a Raspberry Pi enable the TPM overlay (for example "
            "dtoverlay=tpm-slb9670 in /boot/firmware/config.txt, then reboot) so that /dev/tpmrm0 exists, and run the "
            "task with become or as a user in group tss; or set tcti to where the TPM is"
        )
    if isinstance(exc, TpmCommandError) and is_bad_auth(exc.stderr):
        if exc.tool == "tpm2_createek":  # the endorsement hierarchy's password, not the owner's
            return (
                f"the TPM's endorsement hierarchy has a password ({exc}): remove it (tpm2_changeauth -c e -p OLD) "
                "or clear the TPM; nothing was created"
            )
        if params["owner_auth"] is None:
            return (
                f"the TPM's owner hierarchy has a password ({exc}): give it as owner_auth, or clear the TPM "
                "(tpm2_clear, which destroys every key in it); nothing was created"
            )
        return (
            f"the TPM refused owner_auth ({exc}): give the owner hierarchy's password "
            "as owner_auth, or clear the TPM (tpm2_clear, which destroys every key in it); nothing was created"
        )
    if isinstance(exc, TpmCommandError):
        return f"TPM at tcti '{tcti}': {exc}; nothing was created"
    return f"TPM at tcti '{tcti}': {exc}"


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    tools = find_tools(module)
    workdir = tempfile.mkdtemp(prefix="ansible-tpm-keys-")  # mode 0700
    failure = None
    result: dict = {}
    try:
        result = ensure_keys(Tpm(module, tools, workdir), module.check_mode)
    except (TctiError, TpmCommandError, ValueError, OSError) as exc:
        failure = failure_message(exc, module.params)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if failure:
        module.fail_json(msg=failure)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
