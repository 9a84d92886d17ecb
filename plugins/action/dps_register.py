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

import shlex

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase

from ansible_collections.iotfleet.aziot.plugins.module_utils._dps_register import (
    MUTUALLY_EXCLUSIVE,
    REQUIRED_BY,
    REQUIRED_IF,
    argument_spec,
    no_request_candidate,
    no_request_result,
)
from ansible_collections.iotfleet.aziot.plugins.plugin_utils._device_read import file_section, read_device

MODULE = "iotfleet.aziot.dps_register"


def read_sections(params: dict) -> list[tuple[str, str]]:
    """What the answer needs from the device: the marker, the certificate chain, the trusted CA file (when the task
    gives its content) - and only whether the key is there (`present`): its content is never read."""
    sections = [
        file_section(name, path)
        for name, path in (
            ("marker", params["provisioning_marker"]),
            ("chain", params["client_cert"]),
            ("ca", params["ca_path"] if params["ca_content"] is not None else None),
        )
        if path
    ]
    if params["client_key"]:
        sections.append(("key", f"if test -s {shlex.quote(params['client_key'])}; then echo present; fi"))
    return sections


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
        # An empty id_scope is the module's one-line refusal, in check mode too.
        x509_check = self._task.check_mode and params["attestation"] == "x509" and params["id_scope"].strip()
        if no_request_candidate(params) or x509_check:
            answer = self._no_request(params)
            if answer is not None:
                result.update(answer, device_check="read")
                return result
        result.update(self._execute_module(module_name=MODULE, module_args=self._task.args, task_vars=task_vars))
        result["device_check"] = "module"
        return result

    def _no_request(self, params: dict) -> dict | None:
        """The module's answer without running it, or None when the device's files do not settle it. In check mode,
        a device without its certificate chain yet (device_identity makes it in a real run) would register."""
        try:
            read = read_device(self, read_sections(params))
        except AnsibleError:
            return None  # the module's run says what is wrong with the connection
        if read is None:
            return None
        try:
            files = {name: read.get(name, b"").decode("utf-8") for name in ("marker", "chain", "ca", "key")}
        except UnicodeDecodeError:
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
            ca_text=files["ca"] if params["ca_content"] is not None else None,
        )
