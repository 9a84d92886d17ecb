# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the module iotfleet.aziot.dps_register and its action plugin share: the argument spec, the result shape, and
the decision that a device needs no request at all.

The action plugin reads the device's provisioning marker, certificate chain and trusted CA file with one plain command
(no Python on the device, no module) and, when `no_request_result` says the device is registered as it should be,
answers without running the module: on a re-run of a fleet whose registrations are right, one cheap round trip per
device instead of a module. In every other case the module runs and decides the same way (`registration_reasons`).
"""

from __future__ import annotations

import time
import typing as t

from ansible_collections.iotfleet.aziot.plugins.module_utils._dps import (
    API_VERSIONS,
    DEFAULT_API_VERSION,
    DEFAULT_PROVISIONING_HOST,
    dps_connection_argument_spec,
    parse_marker,
    registration_reasons,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._registration_id import (
    registration_id_argument_spec,
    registration_id_problem,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._x509_der import (
    certificate_common_name,
    certificate_validity,
    pem_certificates,
    thumbprints,
)

MUTUALLY_EXCLUSIVE = [("symmetric_key", "group_key")]
# attestation=symmetric_key needs symmetric_key or group_key: the module says so in one line naming the device
# (dps_register.device_key), which Ansible's required_if message does not.
REQUIRED_IF = [("attestation", "x509", ("client_cert", "client_key"))]
REQUIRED_BY = {"ca_content": ("ca_path",)}


def argument_spec() -> dict:
    return {
        **dps_connection_argument_spec(),
        **registration_id_argument_spec(),
        "id_scope": {"type": "str", "required": True},
        "provisioning_host": {"type": "str", "default": DEFAULT_PROVISIONING_HOST},
        "api_version": {"type": "str", "default": DEFAULT_API_VERSION, "choices": list(API_VERSIONS)},
        "attestation": {"type": "str", "default": "x509", "choices": ["x509", "symmetric_key"]},
        "client_cert": {"type": "path"},
        "client_key": {"type": "path", "no_log": False},
        "symmetric_key": {"type": "str", "no_log": True},
        "group_key": {"type": "str", "no_log": True},
        "sas_ttl": {"type": "int", "default": 3600},
        "payload": {"type": "dict"},
        "force": {"type": "bool", "default": False},
        "registration_state": {
            "type": "dict",
            "options": {
                "status": {"type": "str"},
                "assigned_hub": {"type": "str"},
                "device_id": {"type": "str"},
                "enrollment_iot_hubs": {"type": "list", "elements": "str"},
            },
        },
        "provisioning_marker": {"type": "path"},
        "ca_content": {"type": "str"},
    }


def summary(operation_or_state: dict | None) -> dict:
    """The module's result fields from a DPS operation or registration state."""
    state = operation_or_state or {}
    if "registrationState" in state or "operationId" in state:
        registration_state = state.get("registrationState") or {}
        status = state.get("status") or registration_state.get("status")
    else:
        registration_state = state
        status = state.get("status")
    result = dict(status=status or "unassigned", registration_state=registration_state)
    for key, name in (("substatus", "substatus"), ("assignedHub", "assigned_hub"), ("deviceId", "device_id")):
        if registration_state.get(key) is not None:
            result[name] = registration_state[key]
    return result


def assigned_result(known: dict, marker: dict) -> dict:
    """The result when DPS shows the device assigned where its marker says it registered: no request was sent."""
    answered = marker.get("registration_state")
    result = summary(answered if isinstance(answered, dict) else {})
    result.update(status="assigned", assigned_hub=known.get("assigned_hub"), device_id=known.get("device_id"))
    return dict(result, changed=False, registration_reasons=[], ca_changed=False, requests=0, retried_requests=0)


def certificate_problem(registration_id: str, client_cert: str, chain: list[bytes], now: float | None = None) -> str:
    """Why the leaf of `chain` cannot be presented to DPS ('' when it can): none, another CN, outside its validity."""
    if not chain:
        return f"{registration_id}: client_cert {client_cert} holds no PEM certificate"
    common_name = certificate_common_name(chain[0])
    if common_name is not None and common_name != registration_id:
        return (
            f"registration id '{registration_id}' does not match certificate CN '{common_name}' (the first "
            f"certificate in {client_cert}); DPS requires them to be equal"
        )
    validity = certificate_validity(chain[0])
    if validity is None:
        return ""
    # DPS refuses a certificate outside its validity window; say so before asking it (a Raspberry Pi without a
    # real-time clock that has not synchronised its time yet starts in the past).
    now = time.time() if now is None else now
    renew = "renew the device certificate (iotfleet.aziot.x509_device_cert re-issues it)"
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(validity[0] if now < validity[0] else validity[1]))
    if now < validity[0]:
        return (
            f"{registration_id}: the device certificate in {client_cert} is not valid before {when}; check the device "
            f"clock, or {renew}"
        )
    if now > validity[1]:
        return f"{registration_id}: the device certificate in {client_cert} expired at {when}; {renew}"
    return ""


def no_request_candidate(params: dict) -> bool:
    """Whether the options allow answering without the module: X.509, what DPS knows given, a marker, no force, and
    nothing the module would warn about or refuse."""
    return bool(
        params.get("attestation", "x509") == "x509"
        and isinstance(params.get("registration_state"), dict)
        and params.get("provisioning_marker")
        and params.get("client_cert")
        and params.get("client_key")
        and not params.get("force")
        and params.get("validate_certs", True) is True
        and str(params.get("id_scope") or "").strip()
        and not registration_id_problem(str(params.get("registration_id") or ""), certificate_cn=True)
    )


def no_request_result(
    params: dict,
    marker_text: str | None,
    chain_text: str | None,
    key_present: bool,
    ca_text: str | None,
) -> dict[str, t.Any] | None:
    """The module's result for a device that needs no request - DPS shows it assigned where its marker says it
    registered, with the certificate it holds, its key is there and the trusted CA file is the one given - or None
    (the module must run: it registers, or says what is wrong)."""
    if not no_request_candidate(params) or not key_present or not chain_text:
        return None
    if params.get("ca_content") is not None and ca_text != params["ca_content"]:
        return None
    try:
        chain = pem_certificates(chain_text)
    except ValueError:
        return None
    if certificate_problem(params["registration_id"], params["client_cert"], chain):
        return None
    marker = parse_marker(marker_text, params["registration_id"])
    known = {key: value for key, value in params["registration_state"].items() if value is not None}
    if marker is None or registration_reasons(known, marker, "x509", thumbprints(chain[0])["sha256"]):
        return None
    return assigned_result(known, marker)
