#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: dps_register
short_description: Register a device with the Azure IoT Hub Device Provisioning Service
version_added: 0.1.0
description:
  - Registers a device with Azure IoT Hub Device Provisioning Service (DPS) over the DPS device REST API, with
    X.509 (TLS client certificate) or symmetric key (SAS token) attestation, and returns the IoT Hub and device id
    DPS assigned.
  - Looks the registration up first; when DPS already shows the device assigned with the same attestation (the same
    device certificate, or a symmetric key), nothing is sent and the module reports no change.
  - With O(registration_state) (what DPS knows of the device, learned by the controller in bulk for the whole
    fleet - role C(iotfleet.aziot.dps_registration) does it) and O(provisioning_marker), no lookup is sent - a device
    DPS has no record of registers at once (one DPS operation), and a device DPS shows assigned, on a hub its
    enrollment lists, where the marker says it registered, with the certificate it holds now, gets no request at
    all.
  - This is an action plugin paired with the module. When O(registration_state) and O(provisioning_marker) may make
    every request needless, the action plugin first reads the marker, the certificate chain and the O(ca_path) file
    on the device with one plain shell command (C(base64) of each file, from coreutils; the key is only tested for
    presence, never read) and, when they show the device registered as it should be, returns the module's answer
    without running the module - a fleet whose registrations are right costs one cheap round trip per device. In
    every other case the module runs.
  - Otherwise sends a register request and polls the operation until DPS reports C(assigned), C(failed) or
    C(disabled), retrying HTTP 429, 5xx and connection errors with bounded backoff within O(timeout).
  - Needs only Python's standard library on the target, so it runs on the device itself (the device key never
    leaves it). It can also be delegated to the controller.
author: iotfleet developers (@iotfleet)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
  - iotfleet.aziot.dps
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
    details: >-
      Check mode does the status lookup (a read; none with O(registration_state) and a marker that answer without
      it) and reports whether a registration would be sent, and why (RV(registration_reasons)). It writes no marker
      and no O(ca_content). With O(attestation=x509), a device whose O(client_cert) does not exist yet (its
      certificate is made by a real run) is reported as one that would register.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  id_scope:
    description: The DPS ID scope, for example V(0ne00000000).
    type: str
    required: true
  provisioning_host:
    description: The DPS device endpoint, as V(host) or V(host:port).
    type: str
    default: global.azure-devices-provisioning.net
  api_version:
    description: The DPS REST API version to send.
    type: str
    default: '2021-06-01'
    choices: ['2019-03-31', '2021-06-01', '2021-10-01']
  attestation:
    description: How the device proves its identity.
    type: str
    default: x509
    choices: [x509, symmetric_key]
  client_cert:
    description:
      - Path of the device certificate chain (PEM) for O(attestation=x509), on the host that runs the module.
      - The device certificate first, then the intermediate CA certificate(s); DPS refuses a group enrollment when
        only the device certificate is sent.
      - Required when O(attestation=x509).
    type: path
  client_key:
    description:
      - Path of the device private key (PEM) for O(attestation=x509).
      - Required when O(attestation=x509).
    type: path
  symmetric_key:
    description:
      - The device's symmetric key (base64) for O(attestation=symmetric_key) with an individual enrollment, or a key
        already derived from a group key.
      - Mutually exclusive with O(group_key).
    type: str
  group_key:
    description:
      - The symmetric-key enrollment group key (base64). The device key is derived from it and O(registration_id)
        as base64(HMAC-SHA256(group key, registration id)).
      - Mutually exclusive with O(symmetric_key).
    type: str
  sas_ttl:
    description: Lifetime in seconds of the SAS tokens sent with O(attestation=symmetric_key).
    type: int
    default: 3600
  payload:
    description: Custom data sent with the registration (returned by DPS to custom allocation policies).
    type: dict
  force:
    description: Register again even when DPS already shows the device assigned with the same attestation.
    type: bool
    default: false
  registration_state:
    description:
      - What DPS knows of this device's registration, as the controller learned it in bulk (the DPS service API's
        registration-state query per enrollment group; filter C(iotfleet.aziot.registration_state) makes this dict
        from the result of M(iotfleet.aziot.dps_registration_state_info)). Saves the status lookup, one DPS operation
        per device and run.
      - V({}) (no O(registration_state.status)) - DPS has no registration record for the device (never registered,
        or deleted) - registers at once, without a lookup.
      - A record that is not C(assigned), or assigned to a hub its enrollment no longer lists
        (O(registration_state.enrollment_iot_hubs)), registers at once too.
      - An C(assigned) record is compared with the O(provisioning_marker) - a certificate other than the marker's
        (renewed, replaced), another attestation, or another hub or device id than the marker's (reassigned)
        registers at once; an equal one sends nothing. Without a usable marker (none yet, unreadable, another
        registration id's) the module looks the registration up as without this option, and writes the marker.
      - Omit it (the default) when the controller does not know; the module then looks the registration up first.
        The service API does not tell the certificate a device registered with, hence the marker.
    type: dict
    suboptions:
      status:
        description: The record's C(status) (V(assigned), V(assigning), V(failed), V(disabled) ...); unset when DPS
          has no record of the device.
        type: str
      assigned_hub:
        description: The record's C(assignedHub).
        type: str
      device_id:
        description: The record's C(deviceId).
        type: str
      enrollment_iot_hubs:
        description: The IoT hubs of the device's enrollment (C(iotHubs)); empty - any linked hub.
        type: list
        elements: str
  ca_content:
    description:
      - The certificate(s), PEM text, that sign the DPS server certificate, for an endpoint the device's system trust
        store does not know (a test stand-in such as the local DPS emulator). Real Azure DPS needs none.
      - Written to O(ca_path) on the host that runs the module (atomically, mode C(0644), its directory made C(0755)
        when missing) whenever the file differs, before anything is sent, and trusted for the connection
        (RV(ca_changed)). In check mode nothing is written; a temporary copy is used for the status lookup.
      - Requires O(ca_path).
    type: str
  provisioning_marker:
    description:
      - Path, on the host that runs the module, of the device's provisioning marker - a small JSON file (mode
        C(0644), no secret) that says what the device last registered with (registration id, attestation, SHA-256
        thumbprint of its certificate), where DPS assigned it (hub, device id) and DPS's answer
        (RV(registration_state)). One file per registration id.
      - Written atomically after each registration, and after a lookup that shows the device assigned with its own
        certificate; not written in check mode, nor when its directory does not exist.
      - Read with O(registration_state) to tell, without asking DPS, whether the device's certificate changed since
        it registered.
    type: path
notes:
  - The enrollment (individual or group) must exist in DPS; this module does not manage enrollments (see
    M(iotfleet.aziot.dps_enrollment)).
  - O(timeout) covers the status lookup, the registration, retries and polling together.
  - DPS bills the status lookup and the registration as one operation each (polling is free), within a quota of
    1,000 operations per minute per DPS instance; O(registration_state) brings an unchanged fleet's re-run to no
    operation per device.
seealso:
  - module: iotfleet.aziot.dps_enrollment
  - name: DPS device REST API
    description: Register a device with the Device Provisioning Service.
    link: https://learn.microsoft.com/rest/api/iot-dps/device/runtime-registration/register-device
"""

EXAMPLES = r"""
---
- name: Register the device with its certificate chain (group enrollment on the intermediate CA)
  iotfleet.aziot.dps_register:
    id_scope: 0ne00ABCDEF
    registration_id: "{{ inventory_hostname }}"
    client_cert: /etc/aziot/certs/device-full-chain.pem
    client_key: /etc/aziot/keys/device.key.pem
  register: dps

- name: Show where the device went
  ansible.builtin.debug:
    msg: "{{ dps.device_id }} is on {{ dps.assigned_hub }}"

- name: Register with a symmetric-key enrollment group
  iotfleet.aziot.dps_register:
    id_scope: 0ne00ABCDEF
    registration_id: "{{ inventory_hostname }}"
    attestation: symmetric_key
    group_key: "{{ vault_dps_group_key }}"
    payload:
      site: plant-3
"""

RETURN = r"""
device_check:
  description:
    - How the device was checked. V(read) - one plain shell command read the provisioning marker, the certificate
      chain and the trusted CA file, they showed the device registered as it should be, and the module did not run
      (no Python on the device, no request to DPS). V(module) - the module ran on the device and decided.
    - On a no-op re-run of a fleet whose registrations are right, every device says V(read).
  returned: always
  type: str
  choices: [read, module]
  sample: read
status:
  description: The registration status DPS reports (V(assigned), V(failed), V(disabled), V(unassigned) in check mode).
  returned: always
  type: str
  sample: assigned
substatus:
  description: The DPS substatus, for example V(initialAssignment).
  returned: when DPS reports it
  type: str
  sample: initialAssignment
assigned_hub:
  description: The IoT Hub host name the device is assigned to.
  returned: when assigned
  type: str
  sample: contoso-hub.azure-devices.net
device_id:
  description: The device id in the IoT Hub.
  returned: when assigned
  type: str
  sample: pi-0042
registration_reasons:
  description: Why the device registered (or, in check mode, would register); empty when nothing was sent.
  returned: always
  type: list
  elements: str
  sample: ["its certificate changed since it registered (renewed or replaced)"]
operation_id:
  description: The DPS operation id of the registration this run sent.
  returned: when a registration was sent
  type: str
  sample: 5.316aac5bdc130deb.b1e02da8-c3a0-4ff2-a121-7ea7a6b7f550
registration_state:
  description:
    - The DPS registration state (DeviceRegistrationResult) as returned by DPS.
    - When O(registration_state) and the marker made every request needless, DPS's answer when the device registered
      (or last looked itself up), as the marker keeps it.
  returned: when DPS returned one
  type: dict
  sample: {"registrationId": "pi-0042", "status": "assigned", "assignedHub": "contoso-hub.azure-devices.net"}
ca_changed:
  description:
    - Whether O(ca_content) was written to O(ca_path) (in check mode, would be); the task then reports a change.
  returned: always
  type: bool
  sample: false
requests:
  description:
    - Number of HTTP requests sent to DPS, retried ones included.
    - Not called C(attempts), the key Ansible sets on a task with C(until).
  returned: always
  type: int
  sample: 3
retried_requests:
  description: Number of requests retried after HTTP 429, 5xx or a connection error.
  returned: always
  type: int
  sample: 0
http_status:
  description: The HTTP status of the DPS answer that made the module fail.
  returned: on failure, when DPS answered with an error
  type: int
  sample: 401
error_code:
  description: The DPS C(errorCode) of the answer that made the module fail.
  returned: on failure, when DPS answered with an error
  type: int
  sample: 401002
tracking_id:
  description: The DPS C(trackingId) of the failed request, for Azure support.
  returned: on failure, when DPS sent one
  type: str
  sample: 5b7c2f4a-0c5e-4a8e-9c1e-7f0a1a2b3c4d
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.iotfleet.aziot.plugins.module_utils._dps import (
    USER_AGENT,
    DpsClient,
    DpsError,
    check_connection_options,
    decode_key,
    derive_device_key,
    explain_error,
    fail_with_counts,
    is_already_assigned,
    marker_content,
    parse_marker,
    registration_reasons,
    split_provisioning_host,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._dps_register import (
    MUTUALLY_EXCLUSIVE,
    REQUIRED_BY,
    REQUIRED_IF,
    argument_spec,
    assigned_result,
    certificate_problem,
    summary,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._files import file_args_for, read_file, write_file_atomic
from ansible_collections.iotfleet.aziot.plugins.module_utils._http import urls_transport
from ansible_collections.iotfleet.aziot.plugins.module_utils._registration_id import registration_id_problem
from ansible_collections.iotfleet.aziot.plugins.module_utils._x509_der import pem_certificates, thumbprints


def read_text(module: AnsibleModule, option: str) -> str:
    path = module.params[option]
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        module.fail_json(msg=f"{module.params['registration_id']}: {option} {path} does not exist")
    except (OSError, UnicodeDecodeError) as error:
        module.fail_json(msg=f"{module.params['registration_id']}: cannot read {option} {path}: {error}")
    return ""


def x509_material(module: AnsibleModule) -> tuple[dict[str, str], int]:
    """Check the certificate chain and key files; return the leaf thumbprints and the chain length."""
    registration_id = module.params["registration_id"]
    client_cert = module.params["client_cert"]
    client_key = module.params["client_key"]
    try:
        chain = pem_certificates(read_text(module, "client_cert"))
    except ValueError as error:
        module.fail_json(msg=f"{registration_id}: client_cert {client_cert}: {error}")
    problem = certificate_problem(registration_id, client_cert, chain)
    if problem:
        module.fail_json(msg=problem)
    if "PRIVATE KEY-----" not in read_text(module, "client_key"):
        module.fail_json(msg=f"{registration_id}: client_key {client_key} holds no PEM private key")
    return thumbprints(chain[0]), len(chain)


def trusted_ca(module: AnsibleModule) -> tuple[str | None, bool]:
    """The CA file to verify DPS with, and whether `ca_content` changed it: written to `ca_path` (atomically, 0644,
    its directory made 0755) when it differs; in check mode a temporary copy is used and nothing is written."""
    params = module.params
    path, content = params["ca_path"], params["ca_content"]
    if content is None:
        return path, False
    wanted = content.encode("utf-8")
    try:
        current = read_file(path)
    except OSError as error:  # a directory, a file root cannot read (NFS, FUSE) ...
        module.fail_json(
            msg=f"{params['registration_id']}: cannot read ca_path {path}: {error.strerror}; point ca_path at a "
            "file (the DPS server CA is written there)"
        )
    if current == wanted:
        return path, False
    if module.check_mode:
        temporary = os.path.join(module.tmpdir, "dps-server-ca.pem")
        with open(temporary, "wb") as handle:
            handle.write(wanted)
        return temporary, True
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        try:
            os.makedirs(directory, mode=0o755)
        except OSError as error:
            module.fail_json(
                msg=f"{params['registration_id']}: cannot create the directory of ca_path {path}: {error.strerror}"
            )
    write_file_atomic(module, path, wanted, file_args_for(module, path, None, None, "0644"))
    return path, True


def check_options(module: AnsibleModule) -> None:
    """Refuse, in one line and before anything is sent, options DPS would refuse or that cannot work."""
    params = module.params
    registration_id = params["registration_id"]
    problem = registration_id_problem(registration_id, certificate_cn=params["attestation"] == "x509")
    if problem:
        module.fail_json(msg=problem)
    if not params["id_scope"].strip():
        module.fail_json(
            msg=f"{registration_id}: id_scope is empty: set it to the DPS ID scope (Azure portal: DPS > Overview > "
            "ID Scope; in the roles, dps_registration_id_scope)"
        )
    try:
        split_provisioning_host(params["provisioning_host"])
    except ValueError as error:
        module.fail_json(msg=f"{registration_id}: {error}")
    check_connection_options(module, registration_id)
    if params["sas_ttl"] <= 0:
        module.fail_json(msg=f"{registration_id}: sas_ttl must be a positive number of seconds")


def device_key(module: AnsibleModule) -> str:
    """The symmetric key to sign with: the given one, or the one derived from the group key."""
    params = module.params
    if params["group_key"] is None and params["symmetric_key"] is None:
        # Ansible counts an option given as null (`group_key:` left empty in YAML) as given for required_if.
        module.fail_json(
            msg=f"{params['registration_id']}: attestation=symmetric_key needs symmetric_key or group_key, and both "
            "are empty: set group_key to the enrollment group's key, or symmetric_key to the device's own"
        )
    try:
        if params["group_key"] is not None:
            return derive_device_key(params["group_key"], params["registration_id"])
        decode_key(params["symmetric_key"], "symmetric_key")
    except ValueError as error:
        module.fail_json(msg=f"{params['registration_id']}: {error}")
    return params["symmetric_key"]


def read_marker(module: AnsibleModule) -> dict | None:
    """The device's provisioning marker, or None (no marker option, no file, unreadable, another device's)."""
    path = module.params["provisioning_marker"]
    if not path:
        return None
    try:
        content = read_file(path)
    except OSError:
        return None
    return parse_marker(content.decode("utf-8", "replace") if content else None, module.params["registration_id"])


def write_marker(module: AnsibleModule, leaf_sha256: str | None, state: dict) -> None:
    """Record what the device registered with and where DPS assigned it; nothing in check mode, when nothing
    differs, or when the marker's directory does not exist (the marker only saves DPS operations)."""
    path = module.params["provisioning_marker"]
    if not path or module.check_mode or not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        return
    marker = marker_content(module.params["registration_id"], module.params["attestation"], leaf_sha256, state)
    content = (json.dumps(marker, indent=2, sort_keys=True) + "\n").encode("utf-8")
    try:
        if read_file(path) == content:
            return
    except OSError:
        pass
    write_file_atomic(module, path, content, file_args_for(module, path, None, None, "0644"))


def lookup_reasons(state: dict | None) -> list[str]:
    """Why a device whose status lookup answered `state` registers."""
    if not state:
        return ["DPS has no registration record for it"]
    if state.get("status") != "assigned":
        return [f"DPS shows its registration {state.get('status') or 'unassigned'}"]
    return ["DPS assigned it with another certificate or attestation"]


def register(module: AnsibleModule) -> dict:
    """Decide from what the controller knows and the marker, else look the registration up; register unless DPS
    already has it (nothing in check mode); return the result."""
    check_options(module)
    params = module.params
    registration_id = params["registration_id"]
    attestation = params["attestation"]
    x509 = attestation == "x509"
    leaf_thumbprints, chain_length = x509_material(module) if x509 else (None, None)
    leaf_sha256 = leaf_thumbprints["sha256"] if leaf_thumbprints else None
    ca_path, ca_changed = trusted_ca(module)
    client = DpsClient(
        id_scope=params["id_scope"].strip(),
        registration_id=registration_id,
        transport=urls_transport(
            user_agent=USER_AGENT,
            client_cert=params["client_cert"] if x509 else None,
            client_key=params["client_key"] if x509 else None,
            ca_path=ca_path,
            validate_certs=params["validate_certs"],
        ),
        provisioning_host=params["provisioning_host"],
        api_version=params["api_version"],
        device_key=None if x509 else device_key(module),
        sas_ttl=params["sas_ttl"],
        timeout=params["timeout"],
        request_timeout=params["request_timeout"],
        log=module.log,
    )
    known = params["registration_state"]
    marker = read_marker(module)
    reasons: list[str] = []
    if known is not None and not params["force"]:
        reasons = registration_reasons(known, marker, attestation, leaf_sha256)
        if not reasons and marker is not None:
            # DPS shows it assigned where the marker says it registered, with the certificate it holds: no request.
            return dict(assigned_result(known, marker), changed=ca_changed, ca_changed=ca_changed)
    try:
        if not reasons:
            state = client.status_lookup()
            if not params["force"] and is_already_assigned(state, attestation, leaf_thumbprints):
                write_marker(module, leaf_sha256, state)
                counts = dict(requests=client.attempts, retried_requests=client.retries)
                unchanged = dict(changed=ca_changed, registration_reasons=[], ca_changed=ca_changed)
                return dict(summary(state), **unchanged, **counts)
            reasons = ["force=true"] if params["force"] else lookup_reasons(state)
        else:
            state = None
        if module.check_mode:
            counts = dict(requests=client.attempts, retried_requests=client.retries)
            return dict(summary(state), changed=True, registration_reasons=reasons, ca_changed=ca_changed, **counts)
        operation = client.register(params["payload"])
    except DpsError as error:
        fail_with_counts(module, client, explain_error(error, registration_id, attestation, chain_length), error)

    result = summary(operation)
    result["operation_id"] = operation.get("operationId")
    registration_state = result["registration_state"]
    if result["status"] == "disabled":
        reason = registration_state.get("errorMessage")
        because = f" ({reason})" if reason else ""
        fail_with_counts(
            module,
            client,
            f"{registration_id}: enrollment is disabled in DPS{because}; enable the enrollment (or this device's "
            "registration) in DPS and run again",
            **result,
        )
    if result["status"] != "assigned":
        fail_with_counts(
            module,
            client,
            f"{registration_id}: DPS registration {result['status']} "
            f"(errorCode {registration_state.get('errorCode', 'none')}): "
            f"{registration_state.get('errorMessage') or 'no error message'}",
            **result,
        )
    write_marker(module, leaf_sha256, registration_state)
    return dict(
        result,
        changed=True,
        registration_reasons=reasons,
        ca_changed=ca_changed,
        requests=client.attempts,
        retried_requests=client.retries,
    )


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        mutually_exclusive=MUTUALLY_EXCLUSIVE,
        required_if=REQUIRED_IF,
        required_by=REQUIRED_BY,
    )
    module.exit_json(**register(module))


if __name__ == "__main__":
    main()
