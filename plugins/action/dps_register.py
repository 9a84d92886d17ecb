# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller half of iotfleet.aziot.dps_register.

On a re-run the controller usually knows the answer already: DPS shows the device assigned (option
registration_state, read in bulk once per run) and the device's provisioning marker says it registered there with the
certificate it holds. Running the module on the device to confirm that costs a Python start and the module's imports
per device; this plugin instead reads the marker, the certificate chain and the trusted CA file with one plain
command (base64 of each, no Python, the key only tested for presence, never read) and answers from them
(_dps_register.no_request_result). Whenever that does not settle it - any doubt, a difference, a missing file, check
mode on a device without its certificate yet - the module runs as it always did and decides.
"""

from __future__ import annotations

import base64
import re
import secrets
import shlex

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

from ansible_collections.iotfleet.aziot.plugins.module_utils._dps_register import (
    MUTUALLY_EXCLUSIVE,
    REQUIRED_BY,
    REQUIRED_IF,
    argument_spec,
    no_request_candidate,
    no_request_result,
)

MODULE = "iotfleet.aziot.dps_register"
FILES = ("marker", "chain", "ca")


def read_command(paths: dict[str, str | None], key_path: str, separator: str) -> str:
    """One shell command printing, after a separator line each, the files of `paths` in base64 (nothing for an absent
    one), then `present` when `key_path` is a non-empty file - the key's content is never read. Base64, because a
    become method that needs a terminal (sudo over SSH) turns every newline of the output into CR LF."""
    parts = []
    for name in FILES:
        parts.append(f"printf '\\n%s\\n' {shlex.quote(separator + name)}")
        if paths.get(name):
            parts.append(f"base64 -w 0 -- {shlex.quote(paths[name])} 2>/dev/null")
    parts.append(f"printf '\\n%s\\n' {shlex.quote(separator + 'key')}")
    parts.append(f"if test -s {shlex.quote(key_path)}; then echo present; fi")
    return "; ".join(parts)


def parse_read(output: str, separator: str) -> dict[str, str] | None:
    """The files' contents from `read_command`'s output, exactly as on the device, or None when the output is not
    what it prints."""
    output = output.replace("\r\n", "\n")
    pieces = re.split("\n" + re.escape(separator) + "(" + "|".join((*FILES, "key")) + ")\n", output)
    # What comes before the first separator (a login banner, a become plugin's success line) is not the read's.
    if len(pieces) != 2 * (len(FILES) + 1) + 1 or tuple(pieces[1::2]) != (*FILES, "key"):
        return None
    found = dict(zip(pieces[1::2], pieces[2::2], strict=True))
    try:
        files = {name: base64.b64decode(found[name].strip(), validate=True).decode("utf-8") for name in FILES}
    except (ValueError, UnicodeDecodeError):
        return None
    return dict(files, key=found["key"])


class ActionModule(ActionBase):
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        validation, _new_args = self.validate_argument_spec(
            argument_spec=argument_spec(),
            mutually_exclusive=MUTUALLY_EXCLUSIVE,
            required_if=REQUIRED_IF,
            required_by=REQUIRED_BY,
        )
        params = validation.validated_parameters
        x509_check = self._task.check_mode and params["attestation"] == "x509"
        if no_request_candidate(params) or x509_check:
            answer = self._no_request(params)
            if answer is not None:
                result.update(answer)
                return result
        result.update(self._execute_module(module_name=MODULE, module_args=self._task.args, task_vars=task_vars))
        return result

    def _no_request(self, params: dict) -> dict | None:
        """The module's answer without running it, or None when the device's files do not settle it. In check mode,
        a device without its certificate chain yet (device_identity makes it in a real run) would register."""
        separator = f"iotfleet-{secrets.token_hex(8)}-"
        paths = {
            "marker": params["provisioning_marker"],
            "chain": params["client_cert"],
            "ca": params["ca_path"] if params["ca_content"] is not None else None,
        }
        try:
            answer = self._low_level_execute_command(read_command(paths, params["client_key"], separator))
        except AnsibleError:
            return None  # the module's run says what is wrong with the connection
        if answer.get("rc") != 0:
            return None
        files = parse_read(to_text(answer.get("stdout", ""), errors="surrogate_or_strict"), separator)
        if files is None:
            return None
        if self._task.check_mode and params["attestation"] == "x509" and not files["chain"]:
            return {
                "changed": True,
                "status": "unassigned",
                "registration_reasons": [
                    f"check mode - {params['client_cert']} does not exist yet; the device would register"
                ],
                "ca_changed": params["ca_content"] is not None and files["ca"] != params["ca_content"],
                "requests": 0,
                "retried_requests": 0,
            }
        return no_request_result(
            params,
            marker_text=files["marker"] or None,
            chain_text=files["chain"] or None,
            key_present=files["key"].strip() == "present",
            ca_text=files["ca"] if paths["ca"] else None,
        )
