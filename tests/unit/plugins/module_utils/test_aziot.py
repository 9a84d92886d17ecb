"""config.toml handling (_aziot_*): schema validation, typo detection, merge, masking, options mapping, CN check."""

from __future__ import annotations

from pathlib import Path

import pytest

from ansible_collections.iotfleet.aziot.plugins.module_utils import _aziot_options, _aziot_toml, _aziot_validation
from tests.support.pki import issue

FIXTURES = Path(__file__).resolve().parents[3] / "integration" / "files" / "aziot_config"
KEY_B64 = "YXppb3QtaWRlbnRpdHktc2VydmljZXxhemlvdC1pZGU="

DPS = """
[provisioning]
source = "dps"
global_endpoint = "https://global.azure-devices-provisioning.net"
id_scope = "0ab1234C5D6"
"""

VALID = {
    "dps_x509": DPS
    + """
[provisioning.attestation]
method = "x509"
registration_id = "my-device"
identity_cert = "file:///var/secrets/device-id.pem"
identity_pk = "file:///var/secrets/device-id.key.pem"
""",
    "dps_x509_pkcs11_key": DPS
    + """
[provisioning.attestation]
method = "x509"
registration_id = "my-device"
identity_cert = "file:///var/secrets/device-id.pem"
identity_pk = "pkcs11:slot-id=0;object=device%20id?pin-value=1234"
""",
    "dps_x509_est_issued": DPS
    + """
[provisioning.attestation]
method = "x509"
registration_id = "my-device"
identity_cert = { method = "est", common_name = "my-device" }
""",
    "dps_x509_with_payload": DPS
    + """
payload = { uri = "file:///var/secrets/payload.json" }
[provisioning.attestation]
method = "x509"
identity_cert = "file:///var/secrets/device-id.pem"
identity_pk = "file:///var/secrets/device-id.key.pem"
""",
    "dps_symmetric_key_value": DPS
    + f"""
[provisioning.attestation]
method = "symmetric_key"
registration_id = "my-device"
symmetric_key = {{ value = "{KEY_B64}" }}
""",
    "dps_symmetric_key_uri": DPS
    + """
[provisioning.attestation]
method = "symmetric_key"
registration_id = "my-device"
symmetric_key = { uri = "file:///var/secrets/device-id.key" }
""",
    "dps_tpm": DPS
    + """
[provisioning.attestation]
method = "tpm"
registration_id = "my-device"
""",
    "manual_connection_string": f"""
[provisioning]
source = "manual"
connection_string = "HostName=example.azure-devices.net;DeviceId=my-device;SharedAccessKey={KEY_B64}"
""",
    "manual_sas": f"""
[provisioning]
source = "manual"
iothub_hostname = "example.azure-devices.net"
device_id = "my-device"

[provisioning.authentication]
method = "sas"
device_id_pk = {{ value = "{KEY_B64}" }}
""",
    "manual_sas_uri": """
[provisioning]
source = "manual"
iothub_hostname = "example.azure-devices.net"
device_id = "my-device"

[provisioning.authentication]
method = "sas"
device_id_pk = { uri = "pkcs11:slot-id=0;object=device%20id?pin-value=1234" }
""",
    "manual_x509": """
[provisioning]
source = "manual"
iothub_hostname = "example.azure-devices.net"
device_id = "my-device"

[provisioning.authentication]
method = "x509"
identity_cert = "file:///var/secrets/device-id.pem"
identity_pk = "file:///var/secrets/device-id.key.pem"
""",
    "none": '[provisioning]\nsource = "none"\n',
    "edge_everything": """
hostname = "my-device"
trust_bundle_cert = "file:///var/secrets/trust-bundle.pem"
auto_reprovisioning_mode = "OnErrorOnly"
cloud_timeout_sec = 70
[provisioning]
source = "manual"
connection_string = "HostName=h.azure-devices.net;DeviceId=d;SharedAccessKey=a2V5"
[aziot_keys]
pkcs11_lib_path = "/usr/lib/libmypkcs11.so"
[agent]
name = "edgeAgent"
type = "docker"
imagePullPolicy = "on-create"
[agent.config]
image = "mcr.microsoft.com/azureiotedge-agent:1.5"
createOptions = { HostConfig = { Binds = ["/iotedge/storage:/iotedge/storage"] } }
[agent.env]
"RuntimeLogLevel" = "debug"
[connect]
workload_uri = "unix:///var/run/iotedge/workload.sock"
management_uri = "unix:///var/run/iotedge/mgmt.sock"
[listen]
workload_uri = "fd://aziot-edged.workload.socket"
management_uri = "fd://aziot-edged.mgmt.socket"
[watchdog]
max_retries = "infinite"
[edge_ca]
cert = "file:///var/secrets/edge-ca.pem"
pk = "file:///var/secrets/edge-ca.key.pem"
[moby_runtime]
uri = "unix:///var/run/docker.sock"
network = "azure-iot-edge"
""",
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_every_variant_is_valid(name: str) -> None:
    _aziot_validation.validate_config(_aziot_toml.parse_toml(VALID[name]), "edge")


def test_identity_service_variants_are_valid_without_edge_keys() -> None:
    for name, text in VALID.items():
        if name != "edge_everything":
            _aziot_validation.validate_config(_aziot_toml.parse_toml(text), "identity_service")


def test_integration_fixture_is_valid() -> None:
    _aziot_validation.validate_config(_aziot_toml.parse_toml((FIXTURES / "config.toml").read_text()), "edge")


def _error(text: str, product: str = "edge") -> str:
    with pytest.raises(_aziot_validation.ConfigError) as info:
        _aziot_validation.validate_config(_aziot_toml.parse_toml(text), product)
    return info.value.format("/etc/aziot/config.toml")


INVALID = {
    # required keys per variant
    "dps_without_id_scope": (
        '[provisioning]\nsource = "dps"\nglobal_endpoint = "https://g.net"\n'
        '[provisioning.attestation]\nmethod = "tpm"\nregistration_id = "x"\n',
        "provisioning: missing required key 'id_scope' for source = 'dps'",
    ),
    "dps_without_attestation": (DPS, "missing required key 'attestation'"),
    "x509_without_cert": (
        DPS + '[provisioning.attestation]\nmethod = "x509"\nregistration_id = "x"\n',
        "provisioning.attestation: missing required key 'identity_cert' for method = 'x509'",
    ),
    "x509_without_pk": (
        DPS + '[provisioning.attestation]\nmethod = "x509"\nidentity_cert = "file:///c.pem"\n',
        "provisioning.attestation: missing required key 'identity_pk' for method = 'x509'",
    ),
    "symmetric_key_without_key": (
        DPS + '[provisioning.attestation]\nmethod = "symmetric_key"\nregistration_id = "x"\n',
        "missing required key 'symmetric_key'",
    ),
    "tpm_without_registration_id": (
        DPS + '[provisioning.attestation]\nmethod = "tpm"\n',
        "missing required key 'registration_id' for method = 'tpm'",
    ),
    "manual_without_anything": ('[provisioning]\nsource = "manual"\n', "missing required key 'iothub_hostname'"),
    "sas_without_key": (
        '[provisioning]\nsource = "manual"\niothub_hostname = "h"\ndevice_id = "d"\n'
        '[provisioning.authentication]\nmethod = "sas"\n',
        "provisioning.authentication: missing required key 'device_id_pk' for method = 'sas'",
    ),
    "no_provisioning": ('hostname = "x"\n', "missing required table [provisioning]"),
    "no_source": ("[provisioning]\n", "missing required key 'source'"),
    # enums / values
    "bad_source": ('[provisioning]\nsource = "DPS"\n', "invalid value 'DPS'"),
    "bad_method": (DPS + '[provisioning.attestation]\nmethod = "x.509"\n', "did you mean 'x509'?"),
    "auto_reprovisioning_mode_is_case_sensitive": (
        'auto_reprovisioning_mode = "dynamic"\n' + VALID["none"],
        "auto_reprovisioning_mode: invalid value 'dynamic'",
    ),
    "cloud_timeout_below_70": ("cloud_timeout_sec = 69\n" + VALID["none"], "below the minimum of 70"),
    "cloud_timeout_string": ('cloud_timeout_sec = "90"\n' + VALID["none"], "must be an integer, got a string"),
    "dps_with_parent_hostname": (
        'parent_hostname = "gw"\n' + VALID["dps_tpm"],
        "parent_hostname: DPS provisioning cannot be combined with a parent/local gateway hostname",
    ),
    "dps_with_local_gateway_hostname": ('local_gateway_hostname = "gw"\n' + VALID["dps_tpm"], "local_gateway_hostname"),
    # URIs
    "cert_as_pkcs11": (
        DPS
        + '[provisioning.attestation]\nmethod = "x509"\nidentity_cert = "pkcs11:object=c"\nidentity_pk = "file:///k"\n',
        "provisioning.attestation.identity_cert: 'pkcs11:object=c' is not a file:// URI",
    ),
    "key_as_plain_path": (
        DPS + '[provisioning.attestation]\nmethod = "x509"\nidentity_cert = "file:///c"\nidentity_pk = "/k.pem"\n',
        "provisioning.attestation.identity_pk: '/k.pem' is not a file: or pkcs11: URI",
    ),
    "key_as_https": (
        DPS + '[provisioning.attestation]\nmethod = "symmetric_key"\nregistration_id = "r"\n'
        'symmetric_key = { uri = "https://vault/k" }\n',
        "provisioning.attestation.symmetric_key.uri",
    ),
    "trust_bundle_relative": ('trust_bundle_cert = "certs/ca.pem"\n' + VALID["none"], "trust_bundle_cert"),
    "global_endpoint_not_url": (
        '[provisioning]\nsource = "dps"\nglobal_endpoint = "global.azure-devices-provisioning.net"\nid_scope = "x"\n'
        '[provisioning.attestation]\nmethod = "tpm"\nregistration_id = "x"\n',
        "provisioning.global_endpoint",
    ),
    "symmetric_key_not_base64": (
        DPS + '[provisioning.attestation]\nmethod = "symmetric_key"\nregistration_id = "r"\n'
        'symmetric_key = { value = "not base64!" }\n',
        "provisioning.attestation.symmetric_key.value: is not valid base64",
    ),
    "connection_string_without_key": (
        '[provisioning]\nsource = "manual"\nconnection_string = "HostName=h;DeviceId=d"\n',
        "connection string lacks SharedAccessKey",
    ),
    "manual_both_shapes": (
        '[provisioning]\nsource = "manual"\nconnection_string = "HostName=h;DeviceId=d;SharedAccessKey=a2V5"\n'
        'iothub_hostname = "h"\n',
        "has both connection_string and iothub_hostname",
    ),
    # keys of another variant
    "dps_with_connection_string": (
        VALID["dps_tpm"].replace('id_scope = "0ab1234C5D6"', 'id_scope = "0ab1234C5D6"\nconnection_string = "x"'),
        "provisioning.connection_string: key not allowed with source = 'dps'",
    ),
    "tpm_with_identity_cert": (
        VALID["dps_tpm"] + 'identity_cert = "file:///c.pem"\n',
        "provisioning.attestation.identity_cert: key not allowed with method = 'tpm'",
    ),
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_documents_are_refused(name: str) -> None:
    text, expected = INVALID[name]
    assert expected in _error(text)


def test_edge_keys_are_refused_for_identity_service() -> None:
    message = _error(VALID["edge_everything"], "identity_service")
    assert "is an IoT Edge setting: remove it or use product=edge" in message


def test_typo_in_existing_file_gets_a_suggestion() -> None:
    text = VALID["dps_x509"].replace("registration_id", "registation_id")
    assert _error(text) == (
        "provisioning.attestation: unknown key 'registation_id' in /etc/aziot/config.toml; "
        "did you mean 'registration_id'?"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('hostnme = "x"\n' + VALID["none"], "(top level): unknown key 'hostnme'"),
        ("cloud_timeout_secs = 90\n" + VALID["none"], "did you mean 'cloud_timeout_sec'?"),
        (VALID["none"] + '[moby_runtime]\nuri = "unix:///d.sock"\nnetwrok = "n"\n', "did you mean 'network'?"),
        (VALID["none"] + '[agent]\nname = "a"\ntype = "docker"\n[agent.config]\nimgae = "x"\n', "'image'"),
        (VALID["dps_x509"].replace("global_endpoint", "global_endpiont"), "did you mean 'global_endpoint'?"),
        (VALID["none"] + "[edge_ca]\ncerts = 'file:///c'\npk = 'file:///k'\n", "did you mean 'cert'?"),
    ],
)
def test_typos_anywhere_are_flagged(text: str, expected: str) -> None:
    assert expected in _error(text)


def test_unknown_key_without_close_match_lists_known_keys() -> None:
    assert "remove it; known keys here are" in _error(VALID["none"] + "[watchdog]\nzzz = 1\n")


def test_typo_in_settings_fails_before_writing() -> None:
    before = VALID["dps_x509"]
    desired = _aziot_options.desired_from_options(
        {"settings": {"provisioning": {"attestation": {"registation_id": "x"}}}}
    )
    with pytest.raises(_aziot_validation.ConfigError) as info:
        _aziot_toml.merge_config(before, desired)
    assert "did you mean 'registration_id'?" in str(info.value)


def test_syntax_error_carries_line_and_column() -> None:
    with pytest.raises(_aziot_toml.TomlSyntaxError) as info:
        _aziot_toml.merge_config((FIXTURES / "broken.toml").read_text(), {})
    assert info.value.line == 3
    assert info.value.col > 0


# ------------------------------------------------------------------------------------------ merge
X509_OPTIONS = {
    "provisioning": {
        "source": "dps",
        "id_scope": "0ne00ABCDEF",
        "attestation": {
            "method": "x509",
            "registration_id": "182-con",
            "identity_cert": "/var/aziot/certs/182-con.pem",
            "identity_pk": "/var/aziot/secrets/182-con.key.pem",
        },
    }
}


def test_merge_keeps_comments_and_hand_added_sections_and_is_idempotent() -> None:
    before = (FIXTURES / "config.toml").read_text()
    result = _aziot_toml.merge_config(before, _aziot_options.desired_from_options(X509_OPTIONS))
    assert result.changed
    assert "# Site note: provisioned by the fleet team, ask ops before editing." in result.after
    assert "# Hand-added by ops: pin the agent image.\n[agent]" in result.after
    assert 'image = "mcr.microsoft.com/azureiotedge-agent:1.5"' in result.after
    assert 'identity_cert = "file:///var/aziot/certs/182-con.pem"' in result.after
    assert 'global_endpoint = "https://global.azure-devices-provisioning.net"' in result.after
    # manual -> dps: the connection string of the old variant is gone, and said so
    assert "connection_string" not in result.after
    assert result.removed == ["provisioning.connection_string"]
    # new keys go into [provisioning], above the comments that introduce the next section
    assert result.after.index("id_scope") < result.after.index("# Default Edge Agent")
    again = _aziot_toml.merge_config(result.after, _aziot_options.desired_from_options(X509_OPTIONS))
    assert not again.changed
    assert again.after == result.after


def test_unmanaged_value_formatting_is_untouched() -> None:
    before = "# top\nhostname = 'pi'   # inline comment\n" + VALID["none"]
    result = _aziot_toml.merge_config(before, _aziot_options.desired_from_options({"hostname": "pi"}))
    assert not result.changed


def test_variant_switch_dps_to_manual_sas_removes_attestation() -> None:
    options = {
        "provisioning": {
            "source": "manual",
            "iothub_hostname": "hub.azure-devices.net",
            "device_id": "d1",
            "authentication": {"method": "sas", "device_id_pk_uri": "/var/aziot/secrets/d1.key"},
        }
    }
    result = _aziot_toml.merge_config(VALID["dps_x509"], _aziot_options.desired_from_options(options))
    document = _aziot_validation.unwrap(result.document)
    assert document["provisioning"] == {
        "source": "manual",
        "iothub_hostname": "hub.azure-devices.net",
        "device_id": "d1",
        "authentication": {"method": "sas", "device_id_pk": {"uri": "file:///var/aziot/secrets/d1.key"}},
    }
    assert set(result.removed) == {"provisioning.attestation", "provisioning.global_endpoint", "provisioning.id_scope"}
    assert "device_id_pk = {uri" in result.after  # inline table as in the template


def test_attestation_method_switch_removes_old_method_keys() -> None:
    options = {
        "provisioning": {
            "source": "dps",
            "id_scope": "0ab1234C5D6",
            "attestation": {"method": "tpm", "registration_id": "my-device"},
        }
    }
    result = _aziot_toml.merge_config(VALID["dps_x509"], _aziot_options.desired_from_options(options))
    attestation = _aziot_validation.unwrap(result.document)["provisioning"]["attestation"]
    assert attestation == {"method": "tpm", "registration_id": "my-device"}
    assert result.removed == ["provisioning.attestation.identity_cert", "provisioning.attestation.identity_pk"]


def test_manual_explicit_to_connection_string() -> None:
    options = {"provisioning": {"source": "manual", "connection_string": "HostName=h;DeviceId=d;SharedAccessKey=a2V5"}}
    result = _aziot_toml.merge_config(VALID["manual_sas"], _aziot_options.desired_from_options(options))
    assert _aziot_validation.unwrap(result.document)["provisioning"] == {
        "source": "manual",
        "connection_string": "HostName=h;DeviceId=d;SharedAccessKey=a2V5",
    }


def test_unknown_key_inside_provisioning_is_not_silently_pruned_on_switch() -> None:
    before = VALID["manual_connection_string"].replace("source", 'soruce = "x"\nsource')
    with pytest.raises(_aziot_validation.ConfigError, match="did you mean 'source'"):
        _aziot_toml.merge_config(before, _aziot_options.desired_from_options(X509_OPTIONS))


def test_global_endpoint_of_existing_dps_file_is_kept() -> None:
    before = VALID["dps_x509"].replace("https://global.azure-devices-provisioning.net", "https://dps.example.net")
    options = {"provisioning": {"source": "dps", "id_scope": "0ab1234C5D6"}}
    result = _aziot_toml.merge_config(
        before, _aziot_options.desired_from_options(options, _aziot_validation.unwrap(_aziot_toml.parse_toml(before)))
    )
    assert not result.changed


def test_settings_deep_merge_and_explicit_options_win() -> None:
    desired = _aziot_options.desired_from_options(
        {
            "settings": {"hostname": "from-settings", "aziot_keys": {"pkcs11_lib_path": "/usr/lib/p11.so"}},
            "hostname": "explicit",
            "agent": {"name": "edgeAgent", "type": "docker", "config": {"image": "img:1"}},
        }
    )
    result = _aziot_toml.merge_config(VALID["none"], desired)
    document = _aziot_validation.unwrap(result.document)
    assert document["hostname"] == "explicit"
    assert document["aziot_keys"] == {"pkcs11_lib_path": "/usr/lib/p11.so"}
    assert document["agent"] == {"name": "edgeAgent", "type": "docker", "config": {"image": "img:1"}}


def test_dps_plus_parent_hostname_through_options() -> None:
    desired = _aziot_options.desired_from_options({**X509_OPTIONS, "settings": {"parent_hostname": "gw"}})
    with pytest.raises(_aziot_validation.ConfigError, match="parent_hostname: DPS provisioning cannot be combined"):
        _aziot_toml.merge_config("", desired)


def test_cloud_timeout_below_70_through_options() -> None:
    with pytest.raises(_aziot_validation.ConfigError, match="set cloud_timeout_sec to 70 or more"):
        _aziot_toml.merge_config(VALID["none"], _aziot_options.desired_from_options({"cloud_timeout_sec": 30}))


# ------------------------------------------------------------------------------------------ URIs
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/var/aziot/certs/a b.pem", "file:///var/aziot/certs/a%20b.pem"),
        ("file:///var/aziot/certs/a.pem", "file:///var/aziot/certs/a.pem"),
    ],
)
def test_cert_paths_become_file_uris(value: str, expected: str) -> None:
    assert _aziot_options.to_cert_uri(value, "x") == expected


def test_key_uris() -> None:
    assert _aziot_options.to_key_uri("/k.pem", "x") == "file:///k.pem"
    assert _aziot_options.to_key_uri("pkcs11:object=k?pin-value=1", "x") == "pkcs11:object=k?pin-value=1"
    with pytest.raises(_aziot_validation.ConfigError, match="relative path"):
        _aziot_options.to_key_uri("k.pem", "provisioning.attestation.identity_pk")
    with pytest.raises(_aziot_validation.ConfigError, match="not a file path or file:// URI"):
        _aziot_options.to_cert_uri("pkcs11:object=c", "provisioning.attestation.identity_cert")
    with pytest.raises(_aziot_validation.ConfigError, match="use file:// or pkcs11:"):
        _aziot_options.to_key_uri("https://vault/k", "x")


# ------------------------------------------------------------------------------------------ masking
def test_masked_text_hides_every_secret_and_keeps_the_rest() -> None:
    for name in ("dps_symmetric_key_value", "manual_sas", "manual_connection_string"):
        masked = _aziot_toml.masked_text(VALID[name])
        assert KEY_B64 not in masked
        assert "********" in masked
        assert "my-device" in masked
    assert _aziot_toml.masked_text(VALID["dps_symmetric_key_uri"]) == VALID["dps_symmetric_key_uri"]


def test_masked_text_of_unparseable_text_still_hides_the_connection_string_key() -> None:
    text = 'connection_string = "HostName=h;SharedAccessKey=c2VjcmV0\n'
    assert "c2VjcmV0" not in _aziot_toml.masked_text(text)


def test_mask_secrets_on_plain_dict() -> None:
    document = _aziot_validation.unwrap(_aziot_toml.parse_toml(VALID["edge_everything"]))
    document["agent"]["config"]["auth"] = {"username": "u", "password": "p4ss"}
    masked = _aziot_toml.mask_secrets(document)
    assert masked["provisioning"]["connection_string"].endswith("SharedAccessKey=********")
    assert masked["agent"]["config"]["auth"]["password"] == "********"


# ------------------------------------------------------------------------------------------ CN check
def _write_cert(path: Path, common_name: str) -> None:
    path.write_bytes(issue(common_name).pem)


def _x509_document(cert_path: Path, registration_id: str) -> dict:
    return {
        "provisioning": {
            "source": "dps",
            "attestation": {
                "method": "x509",
                "registration_id": registration_id,
                "identity_cert": cert_path.as_uri(),
                "identity_pk": "file:///k",
            },
        }
    }


def test_cn_check(tmp_path: Path) -> None:
    cert = tmp_path / "182-con.pem"
    _write_cert(cert, "182-con")
    assert _aziot_validation.check_registration_id_matches_cert(_x509_document(cert, "182-con")) == []
    with pytest.raises(_aziot_validation.ConfigError) as info:
        _aziot_validation.check_registration_id_matches_cert(_x509_document(cert, "183-con"))
    assert info.value.option_path == "provisioning.attestation.registration_id"
    assert "does not match the CN '182-con'" in str(info.value)


def test_cn_check_warns_when_cert_is_not_readable(tmp_path: Path) -> None:
    warnings = _aziot_validation.check_registration_id_matches_cert(_x509_document(tmp_path / "missing.pem", "x"))
    assert len(warnings) == 1
    assert "not readable" in warnings[0]


def test_cn_check_refuses_a_file_that_is_not_a_certificate(tmp_path: Path) -> None:
    cert = tmp_path / "garbage.pem"
    cert.write_text("not a certificate")
    with pytest.raises(_aziot_validation.ConfigError, match="is not a PEM certificate"):
        _aziot_validation.check_registration_id_matches_cert(_x509_document(cert, "x"))


def test_cn_check_skipped_with_warning_without_cryptography(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_aziot_validation, "HAS_CRYPTOGRAPHY", False)
    warnings = _aziot_validation.check_registration_id_matches_cert(_x509_document(tmp_path / "c.pem", "x"))
    assert "cryptography is not installed" in warnings[0]
