# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller half of iotfleet.aziot.x509_device_cert.

1. The module runs on the device (PHASE_INSPECT): ensures the device key, returns its public key,
   a CSR (CN = registration id) and the current certificate.
2. Here, on the controller: decide whether the certificate must be (re-)issued; if so sign the CSR
   with the CA key, which is read here and never sent anywhere.
3. Only when there is a certificate or chain to write: one plain shell command writes them (_plain_install: atomic,
   owner, group, mode) when the read below showed a device it can trust with that, else the module (PHASE_INSTALL).

On a re-run the device is usually as it should be. Step 1 then starts with one plain shell command instead of the
module (`_read_inspect`): it prints the certificate, the full chain, the owner/group/mode of the files and
directories, and the public half of the key (`openssl pkey -pubout` on the device: the key never leaves it). When
that shows nothing to change - the key of the right type and matching the certificate, the certificate good for
longer than renew_before, the chain as the controller would write it, every owner and mode as asked - the task
answers from it (RV device_check=read). Anything else, or any doubt, runs the module as above (device_check=module).

The module gets only the options the device needs (_device_cert.device_argument_spec()): the CA paths and
passphrase, the validity and the chain options stay here.

With `issued_cert_dir`, the controller also keeps a copy of the certificate the device holds
(`<issued_cert_dir>/<registration_id>.cert.pem`), written here, atomically, whenever it differs - so a device can be
revoked or replaced without reaching it (playbooks/revoke.yml, playbooks/replace.yml).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import tempfile

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

from ansible_collections.iotfleet.aziot.plugins.filter.connection_problem import connection_problem
from ansible_collections.iotfleet.aziot.plugins.module_utils._device_cert import (
    PHASE_INSPECT,
    PHASE_INSTALL,
    argument_spec,
    device_argument_spec,
    wanted_directories,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._pki import (
    CRYPTOGRAPHY_IMPORT_ERROR,
    HAS_CRYPTOGRAPHY,
    PkiError,
    cert_info,
    certificate_to_pem,
    check_ca_pair,
    device_cert_reissue_reasons,
    key_type_of,
    load_certificate,
    load_certificates,
    load_csr,
    load_private_key,
    load_public_key_pem,
    order_chain,
    public_key_pem,
    sign_device_certificate,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._registration_id import registration_id_problem
from ansible_collections.iotfleet.aziot.plugins.plugin_utils._device_read import (
    INSTALLED,
    attributes_match,
    file_section,
    install_command,
    octal_mode,
    parse_stat,
    read_device,
    selinux_section,
    stat_section,
)

MODULE = "iotfleet.aziot.x509_device_cert"
_INFO_KEYS = ("subject", "issuer", "serial_number", "not_before", "not_after", "sha1_thumbprint", "sha256_thumbprint")
ISSUED_CERT_SUFFIX = ".cert.pem"


def _chain_text(leaf, ca_chain: list) -> str:
    """The full chain file the device must hold: its certificate, then the CA chain (PEM)."""
    return "".join(certificate_to_pem(c) for c in [leaf, *ca_chain])


def _describe(info: dict | None) -> str:
    if not info:
        return ""
    return "".join(f"{key}: {info[key]}\n" for key in ("key_type", *_INFO_KEYS) if key in info)


class ActionModule(ActionBase):
    _supports_check_mode = True
    _supports_async = False

    def _controller_file(self, path: str, what: str) -> bytes:
        path = os.path.expanduser(path)
        if not os.path.isabs(path):
            path = self._loader.path_dwim(path)
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except OSError as exc:
            raise PkiError(f"cannot read {what} {path} on the controller: {exc.strerror}") from None

    def _issued_cert_path(self, params: dict) -> str | None:
        """Where the controller keeps its copy of the device certificate (None: no copy wanted)."""
        directory = params["issued_cert_dir"]
        if not directory:
            return None
        directory = os.path.expanduser(directory)
        if not os.path.isabs(directory):
            directory = self._loader.path_dwim(directory)
        # The registration id rule (letters, digits, - . _ :) keeps this a plain file name.
        return os.path.join(directory, params["registration_id"] + ISSUED_CERT_SUFFIX)

    @staticmethod
    def _read_issued_cert(path: str) -> str | None:
        try:
            with open(path, encoding="ascii", errors="replace") as handle:
                return handle.read()
        except (FileNotFoundError, NotADirectoryError):
            return None  # no copy yet (a directory that cannot be made is said when writing)
        except OSError as exc:
            raise PkiError(f"cannot read issued_cert_dir copy {path} on the controller: {exc.strerror}") from None

    @staticmethod
    def _write_issued_cert(path: str, pem: str) -> None:
        """Temporary file in the same directory, then rename: a reader never sees half a certificate."""
        directory = os.path.dirname(path)
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
        except OSError as exc:
            raise PkiError(f"cannot write issued_cert_dir copy {path} on the controller: {exc.strerror}") from None
        try:
            with os.fdopen(descriptor, "w", encoding="ascii") as handle:
                handle.write(pem)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o644)  # a certificate is public; the directory decides who may list it
            os.replace(temporary, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise PkiError(f"cannot write issued_cert_dir copy {path} on the controller: {exc.strerror}") from None

    def _load_ca(self, params: dict):
        ca_cert = load_certificate(self._controller_file(params["ca_cert_path"], "ca_cert_path"), "ca_cert_path")
        ca_key = load_private_key(
            self._controller_file(params["ca_key_path"], "ca_key_path"),
            f"ca_key_path {params['ca_key_path']}",
            params["ca_key_passphrase"],
        )
        check_ca_pair(ca_cert, ca_key, f"CA {params['ca_cert_path']}")
        return ca_cert, ca_key

    def _ca_chain(self, params: dict, ca_cert) -> list:
        """The issuing CA and the certificates above it, up to the root, verified link by link."""
        given = []
        for path in params["ca_chain_paths"]:
            given.extend(load_certificates(self._controller_file(path, "ca_chain_paths"), f"ca_chain_paths {path}"))
        roots = [c for c in [ca_cert, *given] if c.issuer == c.subject]
        if ca_cert in roots:
            return [ca_cert]
        if not roots:
            raise PkiError(
                "full_chain_path needs ca_chain_paths: PEM files (on the controller) with the root CA certificate "
                "and any intermediates above the issuing CA"
            )
        chain, _unused = order_chain(ca_cert, given, roots[0])
        return chain

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        try:
            return self._ensure(result, task_vars)
        except AnsibleActionFail as exc:
            # Returned, not raised, so that failed_when / rescue see an ordinary task failure.
            result.update(exc.result)
            return result

    def _ensure(self, result: dict, task_vars):
        self._plain_device = False
        validation, _new_args = self.validate_argument_spec(argument_spec=argument_spec())
        params = validation.validated_parameters
        if not HAS_CRYPTOGRAPHY:
            raise AnsibleActionFail(
                f"{MODULE} needs the Python library cryptography on the controller: {CRYPTOGRAPHY_IMPORT_ERROR}"
            )
        registration_id = params["registration_id"]
        problem = registration_id_problem(registration_id, certificate_cn=True)
        if problem:
            raise AnsibleActionFail(f"registration_id: {problem}; fix the host's registration id")
        for option in ("valid_days", "renew_before"):
            if params[option] < (1 if option == "valid_days" else 0):
                raise AnsibleActionFail(f"{registration_id}: {option} must be positive, got {params[option]}")
        if params["renew_before"] >= params["valid_days"]:
            self._display.warning(
                f"{registration_id}: renew_before ({params['renew_before']}) >= valid_days ({params['valid_days']}): "
                "every run will re-issue the certificate"
            )

        try:
            ca_cert, ca_key = self._load_ca(params)
            ca_chain = self._ca_chain(params, ca_cert) if params["full_chain_path"] else None
        except PkiError as exc:
            raise AnsibleActionFail(f"{registration_id}: {exc}") from None
        if ca_chain is not None and not params["full_chain_include_root"] and len(ca_chain) > 1:
            ca_chain = ca_chain[:-1]

        device_args = {name: params[name] for name in device_argument_spec()}
        try:
            # The task's first round trip to the device: a device Ansible cannot use (SSH, sudo) fails here in one
            # line with the fix, as playbooks/tasks/check_connection.yml says it - provision.yml needs no ping first.
            inspected = self._read_inspect(params, ca_cert, ca_chain)
            result["device_check"] = "read" if inspected is not None else "module"
            if inspected is None:
                inspected = self._execute_module(
                    module_name=MODULE, module_args=dict(device_args, _phase=PHASE_INSPECT), task_vars=task_vars
                )
        except AnsibleError as exc:
            raise AnsibleActionFail(self._connection_problem(exc, task_vars)) from None
        if inspected.get("failed"):
            return self._strip(inspected)

        result.update(
            changed=bool(inspected.get("changed")),
            registration_id=registration_id,
            key_path=params["key_path"],
            cert_path=params["cert_path"],
            key_type=inspected.get("key_type", params["key_type"]),
            key_generated=bool(inspected.get("key_generated")),
            reissued=False,
            reissue_reasons=[],
        )
        if inspected.get("backup_key"):
            result["backup_key"] = inspected["backup_key"]
        if inspected.get("created_directories"):
            result["created_directories"] = inspected["created_directories"]

        before_info = self._info_of(inspected.get("certificate"))
        if inspected.get("public_key") is None:
            # Check mode with a key still to be made: the certificate would follow it.
            reasons = [inspected.get("key_reason") or "new_key: a new device key"]
        else:
            reasons = device_cert_reissue_reasons(
                inspected.get("certificate"),
                load_public_key_pem(inspected["public_key"]),
                ca_cert,
                registration_id,
                params["renew_before"],
            )
            if inspected.get("key_generated"):
                reasons.insert(0, inspected.get("key_reason") or "new_key: a new device key")

        after_info = before_info
        leaf = None  # the certificate the device will hold, when known
        install_args: dict = {}
        if reasons:
            result.update(changed=True, reissued=True, reissue_reasons=reasons)
            if self._task.check_mode or inspected.get("csr") is None:
                after_info = {"subject": f"CN={registration_id}", "issuer": ca_cert.subject.rfc4514_string()}
            else:
                try:
                    csr = load_csr(inspected["csr"], registration_id)
                    leaf = sign_device_certificate(
                        csr.public_key(), registration_id, ca_cert, ca_key, params["valid_days"]
                    )
                except PkiError as exc:
                    raise AnsibleActionFail(f"{registration_id}: {exc}") from None
                install_args["_certificate"] = certificate_to_pem(leaf)
                after_info = cert_info(leaf)
        elif inspected.get("certificate"):
            leaf = load_certificate(inspected["certificate"].encode("utf-8"), "certificate")

        if ca_chain is not None:
            result["full_chain_path"] = params["full_chain_path"]
            chain_changed = reasons != []  # a new certificate means a new chain
            if leaf is not None:
                result["full_chain"] = [c.subject.rfc4514_string() for c in [leaf, *ca_chain]]
                chain_text = _chain_text(leaf, ca_chain)
                if chain_text != inspected.get("full_chain"):
                    chain_changed = True
                    install_args["_full_chain"] = chain_text
            result["full_chain_changed"] = chain_changed
            if chain_changed:
                result["changed"] = True

        if install_args and not self._task.check_mode and self._plain_install(params, install_args):
            result["changed"] = True
            result["device_install"] = "plain"
        elif install_args and not self._task.check_mode:
            result["device_install"] = "module"
            installed = self._execute_module(
                module_name=MODULE,
                module_args=dict(device_args, _phase=PHASE_INSTALL, **install_args),
                task_vars=task_vars,
            )
            if installed.get("failed"):
                return self._strip(installed)
            for key in ("backup_cert", "backup_full_chain"):
                if installed.get(key):
                    result[key] = installed[key]
            if installed.get("changed"):
                result["changed"] = True

        issued_path = self._issued_cert_path(params)
        if issued_path is not None:
            self._keep_issued_cert(result, issued_path, leaf, bool(reasons), registration_id)

        if after_info:
            result.update({key: after_info[key] for key in _INFO_KEYS if key in after_info})
        if self._task.diff and result["changed"]:
            result["diff"] = {
                "before_header": params["cert_path"],
                "after_header": params["cert_path"],
                "before": _describe(before_info),
                "after": _describe(after_info),
            }
        return result

    def _plain_install(self, params: dict, install_args: dict) -> bool:
        """Write the new certificate and/or full chain with one plain command instead of the module (atomic, with
        their owner, group and mode), when this task's read showed a device it can trust with that: no SELinux,
        an octal cert_mode, no backup wanted. False - nothing was written, or something failed: the module writes
        them and says why if it cannot."""
        mode = octal_mode(params["cert_mode"])
        if not self._plain_device or params["backup"] or mode is None:
            return False
        files = []
        if install_args.get("_certificate"):
            files.append((params["cert_path"], install_args["_certificate"].encode("ascii")))
        if install_args.get("_full_chain"):
            files.append((params["full_chain_path"], install_args["_full_chain"].encode("ascii")))
        command = install_command(files, params["cert_owner"], params["cert_group"], mode)
        try:
            answer = self._low_level_execute_command(command)
        except AnsibleError:
            return False
        output = to_text(answer.get("stdout", ""), errors="surrogate_or_strict")
        return answer.get("rc") == 0 and INSTALLED in output.split()

    def _read_inspect(self, params: dict, ca_cert, ca_chain: list | None) -> dict | None:
        """What PHASE_INSPECT would return, from one plain read of the device, when it shows nothing to change on the
        device (no key, certificate, chain, owner or mode to write); None when the module must run and decide."""
        if params["regenerate_key"] == "always" or params["backup"]:
            return None
        files = {"key": params["key_path"], "cert": params["cert_path"]}
        if params["full_chain_path"]:
            files["chain"] = params["full_chain_path"]
        # The key's public half only, never the key: a passphrase (which the module would refuse) fails the command.
        pubout = f"openssl pkey -pubout -passin pass: -in {shlex.quote(params['key_path'])}"
        sections = [selinux_section(), ("public_key", pubout), file_section("cert", params["cert_path"])]
        if "chain" in files:
            sections.append(file_section("chain", files["chain"]))
        sections += [stat_section(f"stat_{name}", path) for name, path in files.items()]
        directories, conflict = wanted_directories(params)
        if conflict is not None:
            return None
        sections += [stat_section(f"stat_dir{index}", path) for index, path in enumerate(directories)]
        read = read_device(self, sections)
        if read is None or read["selinux"].strip():
            return None
        self._plain_device = True  # the install too may be a plain command (_plain_install)
        for index, (owner, group, mode) in enumerate(directories.values()):
            if not attributes_match(parse_stat(read[f"stat_dir{index}"]), "directory", owner, group, mode):
                return None
        wanted = {
            "key": (params["key_owner"], params["key_group"], params["key_mode"]),
            "cert": (params["cert_owner"], params["cert_group"], params["cert_mode"]),
            "chain": (params["cert_owner"], params["cert_group"], params["cert_mode"]),
        }
        for name in files:
            if not attributes_match(parse_stat(read[f"stat_{name}"]), "regular file", *wanted[name]):
                return None
        try:
            public_key = load_public_key_pem(read["public_key"].decode("ascii"))
            certificate = read["cert"].decode("ascii")
            chain = read["chain"].decode("ascii") if "chain" in files else None
        except (ValueError, UnicodeDecodeError):
            return None
        if key_type_of(public_key) != params["key_type"]:
            return None
        registration_id = params["registration_id"]
        if device_cert_reissue_reasons(certificate, public_key, ca_cert, registration_id, params["renew_before"]):
            return None
        if ca_chain is not None:
            leaf = load_certificate(read["cert"], "certificate")
            if _chain_text(leaf, ca_chain) != chain:
                return None
        inspected = {
            "changed": False,
            "key_generated": False,
            "key_type": params["key_type"],
            "public_key": public_key_pem(public_key),
            "certificate": certificate,
        }
        if chain is not None:
            inspected["full_chain"] = chain
        return inspected

    def _connection_problem(self, exc: AnsibleError, task_vars) -> str:
        """One line naming the device, what is wrong with reaching it and the fix (filter connection_problem)."""
        host = task_vars.get("inventory_hostname", "?")

        def var(name: str, default):
            value = task_vars.get(name)
            return default if value is None else self._templar.template(value)

        return connection_problem(
            getattr(exc, "message", None) or str(exc),
            host,
            var("ansible_user", "pi"),
            var("ansible_host", host),
            var("ansible_port", 22),
        )

    def _keep_issued_cert(self, result: dict, path: str, leaf, reissued: bool, registration_id: str) -> None:
        """The controller's copy of the certificate the device now holds: written when it differs (never in check
        mode, where a re-issue means it would differ)."""
        result["issued_cert_path"] = path
        try:
            current = self._read_issued_cert(path)
            if leaf is None:
                # Check mode before signing (or no certificate at all): a re-issue would change the copy.
                result["issued_cert_changed"] = reissued
            else:
                pem = certificate_to_pem(leaf)
                result["issued_cert_changed"] = current != pem
                if result["issued_cert_changed"] and not self._task.check_mode:
                    self._write_issued_cert(path, pem)
        except PkiError as exc:
            raise AnsibleActionFail(
                f"{registration_id}: {exc}; the device holds its certificate already - make the directory writable "
                "(or set issued_cert_dir to another one) and run again"
            ) from None
        if result["issued_cert_changed"]:
            result["changed"] = True

    @staticmethod
    def _info_of(pem: str | None) -> dict | None:
        if not pem:
            return None
        try:
            return cert_info(load_certificate(pem.encode("utf-8"), "certificate"))
        except PkiError:
            return {"subject": "(unparseable certificate)"}

    @staticmethod
    def _strip(module_result: dict) -> dict:
        """Never pass CSR/public key blobs up: they are noise in the output."""
        for key in ("csr", "public_key", "certificate"):
            module_result.pop(key, None)
        return module_result
