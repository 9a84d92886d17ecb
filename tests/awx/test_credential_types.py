"""The AWX credential types shipped in extensions/awx/credential_types: AWX would accept them, and what they inject
is what the roles take, unchanged (docs/awx.md).

Each definition is checked for the shape AWX's API accepts (inputs.fields ids / types / secret flags, injectors that
reference only declared fields and written files); then its injectors are rendered as AWX renders them for a job
(tests/awx/awx_credentials.py) and every extra var is validated against the argument spec of the role that declares
it (roles/*/meta/argument_specs.yml): the variable exists there, the value is of its type, and a secret is `no_log`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from tests.awx.awx_credentials import CONTAINER_ROOT, inject, load_credential_types, shape_problems
from tests.support.paths import REPO_ROOT
from tests.support.pki import Pki

CREDENTIAL_TYPES = load_credential_types()
# What each credential type must bring, in the roles' variable names (issue 16, docs/awx.md).
EXPECTED_EXTRA_VARS = {
    "iotfleet_device_ca.yml": {
        "pki_passphrase",
        "device_identity_root_cert_path",
        "device_identity_ca_cert_path",
        "device_identity_ca_key_path",
        "device_identity_ca_key_passphrase",
    },
    "iotfleet_dps_service.yml": {"dps_enrollment_connection_string"},
    "iotfleet_dps_group_key.yml": {"dps_registration_group_key"},
    "iotfleet_iothub_service.yml": {"iothub_deployment_connection_string"},
}


def role_options() -> dict[str, dict[str, dict]]:
    """role name -> the options of its main entry point."""
    roles = {}
    for path in sorted((REPO_ROOT / "roles").glob("*/meta/argument_specs.yml")):
        specs = yaml.safe_load(path.read_text(encoding="utf-8"))["argument_specs"]
        roles[path.parents[1].name] = specs["main"]["options"]
    return roles


@pytest.fixture(scope="module")
def sample_inputs(tmp_path_factory) -> dict[str, dict]:
    """Inputs a user would paste into each credential: a real CA (PEM), a connection string, a group key."""
    pki = Pki(tmp_path_factory.mktemp("credential-pki"))
    return {
        "iotfleet_device_ca.yml": {
            "root_cert": pki.root.pem_text,
            "ca_cert": pki.intermediate.pem_text,
            "ca_key": pki.intermediate.key_pem.decode(),
            "ca_key_passphrase": "correct horse battery staple",
        },
        "iotfleet_dps_service.yml": {
            "connection_string": "HostName=dps-test.azure-devices-provisioning.net;"
            "SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=c2VydmljZS1rZXktMDEyMzQ1Njc4OQ=="
        },
        "iotfleet_dps_group_key.yml": {"group_key": "Z3JvdXAta2V5LWZvci10aGUtdGVzdHMtMDEyMzQ1Njc4OQ=="},
        "iotfleet_iothub_service.yml": {
            "connection_string": "HostName=hub-test.azure-devices.net;"
            "SharedAccessKeyName=registryReadWrite;SharedAccessKey=aHViLXNlcnZpY2Uta2V5LTAxMjM0NTY3ODk="
        },
    }


def test_every_expected_credential_type_ships() -> None:
    assert set(CREDENTIAL_TYPES) == set(EXPECTED_EXTRA_VARS), sorted(CREDENTIAL_TYPES)


@pytest.mark.parametrize("name", sorted(CREDENTIAL_TYPES))
def test_shape_is_what_awx_accepts(name: str) -> None:
    assert shape_problems(CREDENTIAL_TYPES[name]) == []


@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        ({"injectors": {"extra_vars": {"pki_ca_key_path": "{{ tower.filename.ca_kye }}"}}}, "tower.filename.ca_kye"),
        ({"injectors": {"extra_vars": {"dps_registration_group_key": "{{ group_kye }}"}}}, "undeclared field"),
        ({"injectors": {"env": {"ANSIBLE_DPS_KEY": "{{ group_key }}"}}}, "reserved"),
        ({"kind": "ssh"}, "kind 'ssh'"),
        ({"inputs": {"fields": [{"id": "group_key", "label": "Key", "type": "string"}]}}, "not secret: true"),
        ({"inputs": {"fields": [{"id": "group-key", "label": "Key", "type": "string", "secret": True}]}}, "identifier"),
        ({"injectors": {"file": {"templates.ca": "x"}}}, "must be 'template'"),
    ],
)
def test_shape_check_catches_mistakes(broken: dict, problem: str) -> None:
    """The checker above is not a rubber stamp: a definition with one mistake is refused, naming it."""
    definition = {**CREDENTIAL_TYPES["iotfleet_dps_group_key.yml"], **broken}
    assert any(problem in text for text in shape_problems(definition)), shape_problems(definition)


@pytest.mark.parametrize("name", sorted(EXPECTED_EXTRA_VARS))
def test_injected_extra_vars_are_role_variables(name: str, sample_inputs: dict, tmp_path: Path) -> None:
    definition = CREDENTIAL_TYPES[name]
    injected = inject(definition, sample_inputs[name], tmp_path)
    assert set(injected.extra_vars) == EXPECTED_EXTRA_VARS[name]
    roles = role_options()
    secret_fields = {item["id"] for item in definition["inputs"]["fields"] if item.get("secret")}
    for variable, value in injected.extra_vars.items():
        owners = {role: options[variable] for role, options in roles.items() if variable in options}
        assert owners, f"{name}: {variable} is not an option of any role's meta/argument_specs.yml"
        template = definition["injectors"]["extra_vars"][variable]
        for role, spec in owners.items():
            result = ArgumentSpecValidator({variable: spec}).validate({variable: value})
            assert not result.error_messages, (role, variable, result.error_messages)
            if any(f"{{{{ {field} }}}}" in template for field in secret_fields):
                assert spec.get("no_log") is True, f"{role}: {variable} carries a secret but is not no_log"


def test_ca_files_are_written_and_named_for_device_identity(sample_inputs: dict, tmp_path: Path) -> None:
    """The CA credential writes each PEM to its own file in the job's private data directory; the device_identity
    role (which signs with them, and whose paths the pki check reads) gets their paths inside the EE."""
    inputs = sample_inputs["iotfleet_device_ca.yml"]
    injected = inject(CREDENTIAL_TYPES["iotfleet_device_ca.yml"], inputs, tmp_path)
    on_host = {f"{CONTAINER_ROOT}/{path.relative_to(tmp_path)}": content for path, content in injected.files.items()}
    extra = injected.extra_vars
    assert on_host[extra["device_identity_root_cert_path"]] == inputs["root_cert"]
    assert on_host[extra["device_identity_ca_cert_path"]] == inputs["ca_cert"]
    assert on_host[extra["device_identity_ca_key_path"]] == inputs["ca_key"]
    assert extra["pki_passphrase"] == extra["device_identity_ca_key_passphrase"] == inputs["ca_key_passphrase"]
    for path in injected.files:
        assert path.parent == tmp_path / "env" and (path.stat().st_mode & 0o007) == 0, path


def test_ca_passphrase_left_empty_renders_empty(sample_inputs: dict, tmp_path: Path) -> None:
    """AWX leaves an empty input undefined, which renders as "": the modules take an empty passphrase as none."""
    inputs = {**sample_inputs["iotfleet_device_ca.yml"], "ca_key_passphrase": ""}
    injected = inject(CREDENTIAL_TYPES["iotfleet_device_ca.yml"], inputs, tmp_path)
    assert injected.extra_vars["pki_passphrase"] == injected.extra_vars["device_identity_ca_key_passphrase"] == ""
