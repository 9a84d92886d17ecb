#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: aziot_config
short_description: Manage the IoT Edge / identity service C(/etc/aziot/config.toml)
version_added: 0.1.0
description:
  - Sets provisioning (DPS with X.509, symmetric key or TPM attestation; manual with a connection string, SAS key
    or X.509; or none) and common settings in the Azure IoT Edge / identity service super-config
    C(/etc/aziot/config.toml).
  - Edits the file in place with tomlkit, so comments, ordering and sections the module does not manage (for
    example a hand-added C([agent])) survive.
  - When the provisioning variant changes (for example C(manual) to C(dps), or attestation C(x509) to
    C(symmetric_key)), keys of the old variant inside C([provisioning]) that the new variant does not allow are
    removed. They are listed in RV(removed_keys) and are visible in the diff.
  - The resulting document is validated against the schema of C(iotedge config apply) / C(aziotctl config apply)
    before anything is written. IoT Edge silently ignores unknown keys, so this module refuses them (also keys that
    were already in the file), with a C(did you mean ...?) suggestion. It also checks required keys per variant,
    C(file:)/C(pkcs11:) URIs, C(cloud_timeout_sec >= 70), enum values and DPS together with a parent hostname.
  - A file with a TOML syntax error is refused with its line and column and left untouched.
  - Run C(iotedge config apply) (or C(aziotctl config apply)) only when RV(content_changed) is true; it restarts
    every service.
  - The file is written atomically (temporary file in the same directory, then rename), owned by root and mode
    C(0600) by default because it may hold a symmetric key. Prefer keys in files (I(symmetric_key_uri),
    I(device_id_pk_uri)) over inline keys.
author: iotfleet developers (@iotfleet)
requirements:
  - tomlkit on the host that runs the module (Debian and Raspberry Pi OS package C(python3-tomlkit))
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.files
  - iotfleet.aziot.atomic_write
  - iotfleet.aziot.backup
  - iotfleet.aziot.cryptography
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: Shows the TOML text before and after, with symmetric key values and connection string
      C(SharedAccessKey) masked as C(********).
  platform:
    platforms: posix
options:
  path:
    description: Path of the super-config file. It is created when missing (its directory must exist).
    type: path
    default: /etc/aziot/config.toml
  product:
    description:
      - Which schema applies. C(edge) is IoT Edge (C(config.toml.edge.template)), C(identity_service) is the
        identity service alone (C(config.toml.template)), which does not accept Edge-only keys such as
        C(agent), C(edge_ca), C(moby_runtime), C(auto_reprovisioning_mode) or C(trust_bundle_cert).
    type: str
    choices: [edge, identity_service]
    default: edge
  provisioning:
    description:
      - The C([provisioning]) table. Keys not given here are kept from the file as long as the resulting variant
        allows them.
    type: dict
    suboptions:
      source:
        description: Provisioning source.
        type: str
        required: true
        choices: [dps, manual, none]
      global_endpoint:
        description:
          - DPS global endpoint. Defaults to C(https://global.azure-devices-provisioning.net) when the file does
            not already use DPS.
        type: str
      id_scope:
        description: DPS ID scope (C(0ne...)).
        type: str
      payload_uri:
        description: Path or C(file://) URI of a JSON file sent to DPS as the registration payload.
        type: str
      attestation:
        description: DPS attestation (C([provisioning.attestation])), for I(source=dps).
        type: dict
        suboptions:
          method:
            description: Attestation method.
            type: str
            required: true
            choices: [x509, symmetric_key, tpm]
          registration_id:
            description:
              - DPS registration id. For C(x509) it must equal the certificate CN (checked when I(validate_cert_cn)
                and the certificate is readable).
            type: str
          identity_cert:
            description: Device certificate (full chain) for C(x509); absolute path or C(file://) URI.
            type: str
          identity_pk:
            description: Device private key for C(x509); absolute path, C(file://) or C(pkcs11:) URI.
            type: str
          symmetric_key:
            description:
              - Inline base64 symmetric key for C(symmetric_key). Written in clear into the file; prefer
                I(symmetric_key_uri).
              - Mutually exclusive with I(symmetric_key_uri).
            type: str
          symmetric_key_uri:
            description: Symmetric key file (absolute path or C(file://) URI) or C(pkcs11:) URI.
            type: str
      connection_string:
        description: Device connection string for I(source=manual) (C(HostName=...;DeviceId=...;SharedAccessKey=...)).
        type: str
      iothub_hostname:
        description: IoT Hub host name for manual provisioning without a connection string.
        type: str
      device_id:
        description: Device id for manual provisioning without a connection string.
        type: str
      authentication:
        description: C([provisioning.authentication]) for manual provisioning with I(iothub_hostname) and I(device_id).
        type: dict
        suboptions:
          method:
            description: Authentication method.
            type: str
            required: true
            choices: [sas, x509]
          device_id_pk:
            description:
              - Inline base64 device key for C(sas). Prefer I(device_id_pk_uri).
              - Mutually exclusive with I(device_id_pk_uri).
            type: str
          device_id_pk_uri:
            description: Device key file (absolute path or C(file://) URI) or C(pkcs11:) URI for C(sas).
            type: str
          identity_cert:
            description: Device certificate for C(x509); absolute path or C(file://) URI.
            type: str
          identity_pk:
            description: Device private key for C(x509); absolute path, C(file://) or C(pkcs11:) URI.
            type: str
  hostname:
    description: Top-level C(hostname).
    type: str
  cloud_timeout_sec:
    description: Top-level C(cloud_timeout_sec); at least 70.
    type: int
  auto_reprovisioning_mode:
    description: Edge only. When the device reprovisions (case-sensitive).
    type: str
    choices: [Dynamic, AlwaysOnStartup, OnErrorOnly]
  agent:
    description: Edge only. The C([agent]) table (default Edge Agent).
    type: dict
    suboptions:
      name:
        description: Module name.
        type: str
        default: edgeAgent
      type:
        description: Module type.
        type: str
        default: docker
      image_pull_policy:
        description: C(imagePullPolicy).
        type: str
        choices: [on-create, never]
      config:
        description: C([agent.config]).
        type: dict
        required: true
        suboptions:
          image:
            description: Edge Agent image.
            type: str
            required: true
  edge_ca:
    description:
      - Edge only. The C([edge_ca]) table. Give I(cert) and I(pk), or I(auto_generated_edge_ca_expiry_days) for a
        quickstart CA.
    type: dict
    suboptions:
      cert:
        description: Edge CA certificate; absolute path or C(file://) URI.
        type: str
      pk:
        description: Edge CA private key; absolute path, C(file://) or C(pkcs11:) URI.
        type: str
      auto_generated_edge_ca_expiry_days:
        description: Lifetime of the auto-generated (quickstart) Edge CA.
        type: int
  moby_runtime:
    description: Edge only. The C([moby_runtime]) table.
    type: dict
    suboptions:
      uri:
        description: Moby (Docker) socket URI.
        type: str
        default: unix:///var/run/docker.sock
      network:
        description: Network name for Edge modules.
        type: str
        default: azure-iot-edge
  trust_bundle_cert:
    description: Edge only. Trust bundle; absolute path or C(file://) URI.
    type: str
  settings:
    description:
      - Any other keys, as a nested dict deep-merged into the document (see the examples). Explicit options
        above win over the same keys here. The result is validated against the schema like everything else,
        so a misspelt key fails.
    type: dict
    default: {}
  validate_cert_cn:
    description:
      - For DPS C(x509), fail when the readable I(identity_cert) has a CN different from I(registration_id).
      - Skipped with a warning when the certificate is not readable or python cryptography is missing (it is needed
        for this check only).
    type: bool
    default: true
  owner:
    description: Owner of the file.
    type: str
    default: root
  group:
    description: Group of the file.
    type: str
    default: root
  mode:
    description: Mode of the file.
    type: raw
    default: "0600"
seealso:
  - name: IoT Edge config template
    description: The commented template every key here comes from.
    link: https://github.com/Azure/iotedge/blob/main/edgelet/contrib/config/linux/template.toml
"""

EXAMPLES = r"""
---
- name: Provision a device through DPS with its X.509 certificate
  iotfleet.aziot.aziot_config:
    provisioning:
      source: dps
      id_scope: 0ne00ABCDEF
      attestation:
        method: x509
        registration_id: "{{ inventory_hostname }}"
        identity_cert: /var/aziot/certs/device-full-chain.pem
        identity_pk: /var/aziot/secrets/device.key.pem
    cloud_timeout_sec: 90
    auto_reprovisioning_mode: OnErrorOnly
  register: aziot_config_result

- name: Apply the configuration only when the file changed
  ansible.builtin.command: iotedge config apply -c /etc/aziot/config.toml
  when: aziot_config_result.content_changed
  changed_when: true

- name: DPS with a symmetric key kept in a file
  iotfleet.aziot.aziot_config:
    product: identity_service
    provisioning:
      source: dps
      id_scope: 0ne00ABCDEF
      attestation:
        method: symmetric_key
        registration_id: sensor-17
        symmetric_key_uri: /var/aziot/secrets/sensor-17.key

- name: Set a key the module does not model
  iotfleet.aziot.aziot_config:
    settings:
      aziot_keys:
        pkcs11_lib_path: /usr/lib/aarch64-linux-gnu/pkcs11/libtpm2_pkcs11.so
"""

RETURN = r"""
content_changed:
  description: Whether the bytes of the file changed (or would change in check mode). Owner/mode fixes alone do not
    set it; use it to decide whether to run C(iotedge config apply).
  returned: always
  type: bool
  sample: true
backup_file:
  description: Path of the backup, when I(backup=true) and the file changed.
  returned: changed and backup requested
  type: str
  sample: /etc/aziot/config.toml.12345.2026-01-01@12:00:00~
config:
  description: The resulting document as a dict, with symmetric key values, passwords and the connection string
    C(SharedAccessKey) masked.
  returned: success
  type: dict
  sample:
    provisioning:
      source: dps
      global_endpoint: https://global.azure-devices-provisioning.net
      id_scope: 0ne00ABCDEF
      attestation:
        method: x509
        registration_id: 182-con
        identity_cert: file:///var/aziot/certs/182-con.pem
        identity_pk: file:///var/aziot/secrets/182-con.key.pem
removed_keys:
  description: Dotted paths of keys of the previous provisioning variant that were removed.
  returned: success
  type: list
  elements: str
  sample: [provisioning.connection_string]
"""

import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text

from ansible_collections.iotfleet.aziot.plugins.module_utils._aziot_options import desired_from_options
from ansible_collections.iotfleet.aziot.plugins.module_utils._aziot_schema import (
    AUTO_REPROVISIONING_MODES,
    PRODUCTS,
    PROVISIONING_SOURCES,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._aziot_toml import (
    HAS_TOMLKIT,
    TOMLKIT_IMPORT_ERROR,
    TomlSyntaxError,
    mask_secrets,
    masked_text,
    merge_config,
    parse_toml,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._aziot_validation import (
    ConfigError,
    check_registration_id_matches_cert,
    unwrap,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._files import backup_argument_spec, write_file_atomic


def argument_spec() -> dict:
    identity = {
        "identity_cert": {"type": "str"},
        "identity_pk": {"type": "str", "no_log": False},
    }
    return {
        "path": {"type": "path", "default": "/etc/aziot/config.toml"},
        "product": {"type": "str", "choices": list(PRODUCTS), "default": "edge"},
        "provisioning": {
            "type": "dict",
            "options": {
                "source": {"type": "str", "required": True, "choices": list(PROVISIONING_SOURCES)},
                "global_endpoint": {"type": "str"},
                "id_scope": {"type": "str"},
                "payload_uri": {"type": "str"},
                "attestation": {
                    "type": "dict",
                    "options": {
                        "method": {"type": "str", "required": True, "choices": ["x509", "symmetric_key", "tpm"]},
                        "registration_id": {"type": "str"},
                        **identity,
                        "symmetric_key": {"type": "str", "no_log": True},
                        "symmetric_key_uri": {"type": "str", "no_log": False},
                    },
                    "mutually_exclusive": [("symmetric_key", "symmetric_key_uri")],
                },
                "connection_string": {"type": "str", "no_log": True},
                "iothub_hostname": {"type": "str"},
                "device_id": {"type": "str"},
                "authentication": {
                    "type": "dict",
                    "options": {
                        "method": {"type": "str", "required": True, "choices": ["sas", "x509"]},
                        "device_id_pk": {"type": "str", "no_log": True},
                        "device_id_pk_uri": {"type": "str", "no_log": False},
                        **identity,
                    },
                    "mutually_exclusive": [("device_id_pk", "device_id_pk_uri")],
                },
            },
        },
        "hostname": {"type": "str"},
        "cloud_timeout_sec": {"type": "int"},
        "auto_reprovisioning_mode": {"type": "str", "choices": list(AUTO_REPROVISIONING_MODES)},
        "agent": {
            "type": "dict",
            "options": {
                "name": {"type": "str", "default": "edgeAgent"},
                "type": {"type": "str", "default": "docker"},
                "image_pull_policy": {"type": "str", "choices": ["on-create", "never"]},
                "config": {
                    "type": "dict",
                    "required": True,
                    "options": {"image": {"type": "str", "required": True}},
                },
            },
        },
        "edge_ca": {
            "type": "dict",
            "options": {
                "cert": {"type": "str"},
                "pk": {"type": "str", "no_log": False},
                "auto_generated_edge_ca_expiry_days": {"type": "int"},
            },
        },
        "moby_runtime": {
            "type": "dict",
            "options": {
                "uri": {"type": "str", "default": "unix:///var/run/docker.sock"},
                "network": {"type": "str", "default": "azure-iot-edge"},
            },
        },
        "trust_bundle_cert": {"type": "str"},
        "settings": {"type": "dict", "default": {}},
        "validate_cert_cn": {"type": "bool", "default": True},
        **backup_argument_spec(),
        # The file may hold a key: root-only by default (add_file_common_args adds the rest of the file options).
        "owner": {"type": "str", "default": "root"},
        "group": {"type": "str", "default": "root"},
        "mode": {"type": "raw", "default": "0600"},
    }


def read_existing(module: AnsibleModule, path: str) -> str:
    if not os.path.exists(path):
        return ""
    try:
        with open(path, "rb") as handle:
            return to_text(handle.read(), errors="surrogate_or_strict")
    except (OSError, UnicodeError) as exc:
        module.fail_json(msg=f"{path}: cannot read the file ({to_native(exc)}); check its permissions and encoding")
    return ""  # not reached


def ensure_config(module: AnsibleModule) -> dict:
    """Merge the options into the file, validate, write it when its text changes; return the module result.

    A syntax error in the file or an invalid result fails the module (the file is not changed).
    """
    path = module.params["path"]
    before = read_existing(module, path)
    warnings: list[str] = []
    try:
        existing = unwrap(parse_toml(before))
    except TomlSyntaxError as exc:
        module.fail_json(
            msg=f"{path}: TOML syntax error at line {exc.line}, column {exc.col}: {exc}; "
            "fix the file by hand (it was not changed)",
            line=exc.line,
            column=exc.col,
        )

    def validate(document):
        if module.params["validate_cert_cn"]:
            warnings.extend(check_registration_id_matches_cert(document))

    try:
        desired = desired_from_options(module.params, existing)
        merged = merge_config(before, desired, product=module.params["product"], validate=validate)
    except ConfigError as exc:
        module.fail_json(msg=exc.format(path) + " (the file was not changed)", option=exc.option_path)

    for warning in warnings:
        module.warn(warning)
    if merged.removed:
        module.warn(f"{path}: removed keys of the previous provisioning variant: {', '.join(merged.removed)}")

    file_args = module.load_file_common_arguments(module.params)
    result = {
        "changed": merged.changed,
        "content_changed": merged.changed,
        "config": mask_secrets(unwrap(merged.document)),
        "removed_keys": merged.removed,
    }
    if merged.changed and not module.check_mode:
        directory = os.path.dirname(path) or "."
        if not os.path.isdir(directory):
            module.fail_json(msg=f"{path}: directory {directory} does not exist; install aziot-edge or create it first")
        # The temporary file gets the final owner/group/mode before it is renamed over `path` (the content may hold
        # a symmetric key); a read-only or full filesystem fails in one line, the old file intact.
        backup = write_file_atomic(module, path, to_bytes(merged.after), file_args, module.params["backup"])
        if backup:
            result["backup_file"] = backup
    if os.path.exists(path):
        result["changed"] = module.set_fs_attributes_if_different(file_args, result["changed"])
    elif module.check_mode:
        result["changed"] = True
    if module._diff:
        result["diff"] = {
            "before": masked_text(merged.before),
            "after": masked_text(merged.after),
            "before_header": path,
            "after_header": path,
        }
    return result


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), add_file_common_args=True, supports_check_mode=True)
    if not HAS_TOMLKIT:
        module.fail_json(msg=missing_required_lib("tomlkit"), exception=TOMLKIT_IMPORT_ERROR)
    module.exit_json(**ensure_config(module))


if __name__ == "__main__":
    main()
