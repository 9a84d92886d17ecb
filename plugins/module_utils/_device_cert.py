# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The x509_device_cert argument spec, shared by the action plugin (controller) and the module (device)."""

from __future__ import annotations

from ansible_collections.iotfleet.aziot.plugins.module_utils._pki import DEFAULT_DEVICE_KEY_TYPE, KEY_TYPES

KEY_POLICIES = ("never", "on_mismatch", "always")

# Options only the controller reads; they are never sent to the device.
CONTROLLER_ONLY = ("ca_key_passphrase",)


def argument_spec() -> dict:
    """The user-facing options (documented in plugins/modules/x509_device_cert.py)."""
    return {
        "registration_id": {"type": "str", "required": True},
        "key_path": {"type": "path", "required": True},
        "cert_path": {"type": "path", "required": True},
        "key_type": {"type": "str", "default": DEFAULT_DEVICE_KEY_TYPE, "choices": list(KEY_TYPES)},
        "regenerate_key": {"type": "str", "default": "never", "choices": list(KEY_POLICIES)},
        "ca_cert_path": {"type": "path", "required": True},
        "ca_key_path": {"type": "path", "required": True},
        "ca_key_passphrase": {"type": "str", "no_log": True},
        "valid_days": {"type": "int", "default": 365},
        "renew_before": {"type": "int", "default": 30},
        "key_owner": {"type": "str", "no_log": False},
        "key_group": {"type": "str", "no_log": False},
        "key_mode": {"type": "raw", "default": "0600", "no_log": False},
        "cert_owner": {"type": "str"},
        "cert_group": {"type": "str"},
        "cert_mode": {"type": "raw", "default": "0644"},
        "key_dir_mode": {"type": "raw", "no_log": False},
        "cert_dir_mode": {"type": "raw"},
        "backup": {"type": "bool", "default": False},
        "full_chain_path": {"type": "path"},
        "ca_chain_paths": {"type": "list", "elements": "path", "default": []},
        "full_chain_include_root": {"type": "bool", "default": True},
    }


def module_argument_spec() -> dict:
    """The module's spec: the user options plus the two the action plugin fills in."""
    spec = argument_spec()
    spec["_phase"] = {"type": "str"}  # inspect | install
    spec["_certificate"] = {"type": "str"}
    spec["_full_chain"] = {"type": "str"}
    return spec
