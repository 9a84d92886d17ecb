# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: ca_rollover_plan
short_description: Which steps of a CA rollover have work, from the enrollment group as DPS has it
version_added: 0.1.0
author: iotfleet developers (@iotfleet)
description:
  - For C(playbooks/ca_rollover.yml). Compares the signing certificates of an enrollment group, as
    M(iotfleet.aziot.dps_enrollment_info) read it, with the new CA and the old CA the inventory names (PEM files on
    the controller, compared by certificate - DER, else thumbprint - never by file name or PEM text), and says which
    steps of O(step) have work - C(secondary) (the new CA joins the group beside the old one), C(reissue) (the
    devices get certificates of the new CA), C(promote) (the new CA becomes primary, the old one secondary), C(drop)
    (the new CA alone) - and where the group stands once they ran.
  - RV(_value.problem) is one line when the rollover must not run - the group is missing, not attested by X.509
    signing certificates, signed by neither CA, holds a third CA that a step would remove (the devices that hold
    its certificates would be refused), devices would get certificates DPS does not accept yet, or the step asked
    for contradicts the inventory - and empty otherwise.
options:
  _input:
    description:
      - The C(enrollment_groups) M(iotfleet.aziot.dps_enrollment_info) returned for the group (one record, or none).
    type: list
    elements: dict
    required: true
  group:
    description: The enrollment group id.
    type: str
    required: true
  new_ca:
    description: The new CA's certificate (PEM file on the controller; C(device_identity_ca_cert_path)).
    type: path
    required: true
  old_ca:
    description:
      - The old CA's certificate (C(dps_enrollment_secondary_certificate)), kept accepted while the devices move;
        empty once the inventory no longer names it (the drop).
    type: path
    default: ""
  step:
    description: The step asked for (C(ca_rollover_step)).
    type: str
    choices: [all, secondary, reissue, promote, drop]
    default: all
"""

EXAMPLES = r"""
---
- name: What the rollover of plant-3 has to do
  ansible.builtin.debug:
    msg: "{{ dps_group.enrollment_groups | iotfleet.aziot.ca_rollover_plan('plant-3', new_ca, old_ca, 'all') }}"
"""

RETURN = r"""
---
_value:
  description: Which steps of the rollover have work (each V(true) or V(false)), and why in one line.
  type: dict
  contains:
    secondary:
      description: Add the new CA as the group's secondary signing certificate (the old one stays primary).
      type: bool
    reissue:
      description: Re-issue the devices' certificates under the new CA (and check which ones hold one).
      type: bool
    promote:
      description: Make the new CA primary and the old one secondary.
      type: bool
    drop:
      description: Leave the new CA alone in the group (once every device holds a certificate of it).
      type: bool
    summary:
      description: Where the group stands once the planned steps ran, one line.
      type: str
    problem:
      description: Why the rollover must not run (one line), or empty.
      type: str
"""

import os

from ansible.errors import AnsibleFilterError

from ansible_collections.iotfleet.aziot.plugins.module_utils._dps_enrollment import (
    SLOTS,
    EnrollmentInputError,
    certificate_matches,
    load_certificate,
    summarise,
)

STEPS = ("all", "secondary", "reissue", "promote", "drop")
# What a signing certificate of the group is: the new CA, the old CA, else a third CA's description.
NEW = "new"
OLD = "old"


def _signing_certificates(record: dict) -> dict | None:
    attestation = record.get("attestation") if isinstance(record.get("attestation"), dict) else {}
    x509 = attestation.get("x509") if isinstance(attestation.get("x509"), dict) else {}
    if attestation.get("type") != "x509" or not isinstance(x509.get("signingCertificates"), dict):
        return None
    return x509["signingCertificates"]


def _describe(summary) -> str:
    """A third CA as the messages name it: its subject and the start of its SHA-256 thumbprint."""
    summary = summary if isinstance(summary, dict) else {}
    thumbprint = summary.get("sha256Thumbprint") or summary.get("sha1Thumbprint") or "?"
    return f"{summary.get('subject') or 'a CA'} (thumbprint {thumbprint[:16]}...)"


def _state(record: dict, new, old) -> dict[str, str | None]:
    """Slot -> NEW, OLD, a third CA's description, or None (empty)."""
    entries = _signing_certificates(record)
    view = _signing_certificates(summarise(record)) or {}
    state: dict[str, str | None] = {}
    for slot in SLOTS:
        entry = entries.get(slot)
        if not isinstance(entry, dict) or not (entry.get("certificate") or entry.get("info")):
            state[slot] = None
        elif certificate_matches(new, entry):
            state[slot] = NEW
        elif old is not None and certificate_matches(old, entry):
            state[slot] = OLD
        else:
            state[slot] = _describe(view.get(slot))
    return state


def _summary(group: str, state: dict, names: dict) -> str:
    def name(slot: str) -> str:
        return names.get(state[slot], state[slot])

    line = f"enrollment group {group}: signed by {name('primary')}"
    if state["secondary"] is None:
        return line + " alone"
    line += f" (and {name('secondary')}, still accepted)"
    if state["primary"] == NEW and state["secondary"] == OLD:
        return (
            f"{line}; when every device holds a certificate of the new CA, remove dps_enrollment_secondary_certificate"
            f" from its group_vars and run ca_rollover.yml again to drop {names[OLD]}"
        )
    return f"{line}; run ca_rollover.yml (ca_rollover_step=all) to finish the rollover"


def ca_rollover_plan(enrollment_groups: list, group: str, new_ca: str, old_ca: str = "", step: str = "all") -> dict:
    if step not in STEPS:
        raise AnsibleFilterError(f"ca_rollover_plan: step must be one of {', '.join(STEPS)}, got {step!r}")
    plan = {"secondary": False, "reissue": False, "promote": False, "drop": False, "summary": "", "problem": ""}

    def stop(problem: str) -> dict:
        plan["problem"] = problem
        return plan

    if not enrollment_groups:
        return stop(
            f"enrollment group {group} does not exist in DPS: provision the devices first (playbooks/provision.yml "
            "makes it)"
        )
    record = enrollment_groups[0]
    if _signing_certificates(record) is None:
        return stop(
            f"enrollment group {group} is not attested by X.509 signing certificates in DPS (attestation "
            f"{(record.get('attestation') or {}).get('type', 'unset')}, or CA references): ca_rollover.yml moves a "
            "group whose CA certificates are its signing certificates"
        )
    subject = f"enrollment group {group}"
    try:
        new = load_certificate(subject, "device_identity_ca_cert_path", new_ca)
        old = load_certificate(subject, "dps_enrollment_secondary_certificate", old_ca) if old_ca else None
    except EnrollmentInputError as error:
        return stop(str(error))
    if old is not None and old.der == new.der:
        return stop(
            f"{subject}: device_identity_ca_cert_path and dps_enrollment_secondary_certificate are the same CA "
            f"({new_ca}, {old_ca}); point device_identity_ca_cert_path at the new CA"
        )
    state = _state(record, new, old)
    names = {NEW: os.path.basename(new_ca), OLD: os.path.basename(old_ca)}
    third = [(slot, state[slot]) for slot in SLOTS if state[slot] not in (NEW, OLD, None)]
    new_in_group = NEW in state.values()

    if old is not None and third:
        slot, described = third[0]
        return stop(
            f"{subject}: its {slot} signing certificate in DPS is {described}, neither the new CA ({new_ca}) nor the "
            f"old one ({old_ca}); the rollover would remove it and DPS would refuse the devices that hold its "
            "certificates - finish the earlier rollover first (its drop step), or set "
            "dps_enrollment_secondary_certificate to that CA"
        )
    if not new_in_group and old is None:
        return stop(
            f"{subject}: its signing certificates in DPS are neither the new CA ({new_ca}) nor an old one; for a "
            "rollover set dps_enrollment_secondary_certificate in its group_vars to the CA its devices hold now "
            "(DPS's primary), so that it stays accepted while they move"
        )
    if step == "drop" and old is not None:
        return stop(
            f"{subject}: ca_rollover_step=drop, but its group_vars still keep the old CA accepted "
            f"(dps_enrollment_secondary_certificate: {old_ca}); remove it first"
        )
    if step == "reissue" and not new_in_group:
        return stop(
            f"{subject} does not accept the new CA yet: devices re-issued now would be refused; run ca_rollover.yml "
            "with ca_rollover_step=all (or secondary) first"
        )

    plan["secondary"] = step in ("all", "secondary") and not new_in_group
    if plan["secondary"]:
        state = {"primary": OLD, "secondary": NEW}
    plan["reissue"] = step in ("all", "reissue", "drop")
    plan["promote"] = step in ("all", "promote") and old is not None and state != {"primary": NEW, "secondary": OLD}
    if plan["promote"]:
        state = {"primary": NEW, "secondary": OLD}
    plan["drop"] = step in ("all", "drop") and old is None and state != {"primary": NEW, "secondary": None}
    if plan["drop"]:
        state = {"primary": NEW, "secondary": None}
    plan["summary"] = _summary(group, state, names)
    return plan


class FilterModule:
    def filters(self) -> dict:
        return {"ca_rollover_plan": ca_rollover_plan}
