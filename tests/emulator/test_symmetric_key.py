"""Symmetric-key attestation (SAS tokens)."""

from __future__ import annotations

import time

import pytest

from .helpers import DISABLED_GROUP_KEY, GROUP_KEY, INDIVIDUAL_KEY, Client, derived_key, sas_token


@pytest.mark.parametrize(("variant", "skn"), [("encoded", True), ("raw", True), ("lower", True), ("encoded", False)])
def test_group_symmetric_key_both_signing_variants(emulator, variant, skn):
    registration_id = f"sym-dev-{variant}-{skn}".lower()
    token = sas_token(registration_id, derived_key(GROUP_KEY, registration_id), variant=variant, skn=skn)
    result = Client(emulator, sas=token).provision(registration_id)
    assert result["status"] == "assigned"
    state = result["registrationState"]
    assert state["symmetricKey"] == {"enrollmentGroupId": "fleet-sym"}
    assert state["deviceId"] == registration_id
    assert state["assignedHub"] in ("hub-a.azure-devices.net", "hub-b.azure-devices.net")


def test_individual_symmetric_key(emulator):
    token = sas_token("sym-individual-1", INDIVIDUAL_KEY)
    result = Client(emulator, sas=token).provision("sym-individual-1")
    assert result["status"] == "assigned"
    assert result["registrationState"]["symmetricKey"] == {"enrollmentGroupId": None}


def test_expired_sas_refused(emulator):
    token = sas_token("sym-late", derived_key(GROUP_KEY, "sym-late"), expiry=int(time.time()) - 10)
    response = Client(emulator, sas=token).register("sym-late")
    assert response.status_code == 401
    assert "expired" in response.json()["message"]


def test_wrong_key_refused(emulator):
    wrong = derived_key(GROUP_KEY, "someone-else")
    response = Client(emulator, sas=sas_token("sym-wrong", wrong)).register("sym-wrong")
    assert response.status_code == 401
    assert response.json()["errorCode"] == 401002
    # the group key itself is not the device key either
    response = Client(emulator, sas=sas_token("sym-wrong", GROUP_KEY)).register("sym-wrong")
    assert response.status_code == 401
    # an individual enrollment's registration id with a group-derived key is refused
    token = sas_token("sym-individual-1", derived_key(GROUP_KEY, "sym-individual-1"))
    assert Client(emulator, sas=token).register("sym-individual-1").status_code == 401


def test_token_for_another_registration_refused(emulator):
    token = sas_token("sym-a", derived_key(GROUP_KEY, "sym-a"))
    response = Client(emulator, sas=token).register("sym-b")
    assert response.status_code == 401
    assert "does not match" in response.json()["message"]


def test_disabled_group(emulator):
    token = sas_token("sym-disabled-1", derived_key(DISABLED_GROUP_KEY, "sym-disabled-1"))
    result = Client(emulator, sas=token).provision("sym-disabled-1")
    assert result["status"] == "disabled"
    assert result["registrationState"]["symmetricKey"] == {"enrollmentGroupId": "fleet-sym-disabled"}
