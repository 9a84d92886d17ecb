# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""x509_device_cert's options, split by where they are used, and the phases of the module.

The action plugin (controller) validates every user option (`argument_spec()`), keeps the controller's own
(`controller_argument_spec()`: CA paths and passphrase, validity, chain) and calls the module on the device with the
device's options only (`device_argument_spec()`) plus the internal ones (`module_argument_spec()`), like
ansible-core's copy action plugin with `_original_basename`. The user options are documented in
plugins/modules/x509_device_cert.py; the internal ones are not (tests/sanity/ignore-*.txt says so).
"""

from __future__ import annotations

import os

from ansible_collections.iotfleet.aziot.plugins.module_utils._files import backup_argument_spec
from ansible_collections.iotfleet.aziot.plugins.module_utils._pki import (
    DEFAULT_DEVICE_KEY_TYPE,
    key_type_argument_spec,
)
from ansible_collections.iotfleet.aziot.plugins.module_utils._registration_id import registration_id_argument_spec

KEY_POLICIES = ("never", "on_mismatch", "always")

# The module runs twice per task at most: `inspect` ensures the key and returns a CSR; `install` writes what the
# controller signed.
PHASE_INSPECT = "inspect"
PHASE_INSTALL = "install"


def device_argument_spec() -> dict:
    """The user options the module needs on the device (the only ones sent there)."""
    return {
        **registration_id_argument_spec(),
        "key_path": {"type": "path", "required": True},
        "cert_path": {"type": "path", "required": True},
        **key_type_argument_spec(DEFAULT_DEVICE_KEY_TYPE),
        "regenerate_key": {"type": "str", "default": "never", "choices": list(KEY_POLICIES)},
        "key_owner": {"type": "str", "no_log": False},
        "key_group": {"type": "str", "no_log": False},
        "key_mode": {"type": "raw", "default": "0600", "no_log": False},
        "cert_owner": {"type": "str"},
        "cert_group": {"type": "str"},
        "cert_mode": {"type": "raw", "default": "0644"},
        "key_dir_mode": {"type": "raw", "no_log": False},
        "cert_dir_mode": {"type": "raw"},
        **backup_argument_spec(),
        "full_chain_path": {"type": "path"},
    }


def controller_argument_spec() -> dict:
    """The user options only the controller reads: the CA (its key never leaves the controller), the validity of a
    new certificate, the chain above the CA, and where the controller keeps its copy of the device certificate.
    Never sent to the device."""
    return {
        "ca_cert_path": {"type": "path", "required": True},
        "ca_key_path": {"type": "path", "required": True},
        "ca_key_passphrase": {"type": "str", "no_log": True},
        "valid_days": {"type": "int", "default": 365},
        "renew_before": {"type": "int", "default": 30},
        "ca_chain_paths": {"type": "list", "elements": "path", "default": []},
        "full_chain_include_root": {"type": "bool", "default": True},
        "issued_cert_dir": {"type": "path"},
    }


def argument_spec() -> dict:
    """Every user option (what DOCUMENTATION describes); the action plugin validates the task's arguments with it."""
    return {**device_argument_spec(), **controller_argument_spec()}


def module_argument_spec() -> dict:
    """The module's spec on the device: the device options plus the internal ones the action plugin fills in."""
    return {
        **device_argument_spec(),
        "_phase": {"type": "str"},  # PHASE_INSPECT or PHASE_INSTALL; else "must run through its action plugin"
        "_certificate": {"type": "str"},  # the signed certificate (PEM), for PHASE_INSTALL
        "_full_chain": {"type": "str"},  # the full chain (PEM), for PHASE_INSTALL
    }


def wanted_directories(params: dict) -> tuple[dict, str | None]:
    """The directories key_dir_mode / cert_dir_mode ask for, as {directory: (owner, group, mode)}, and the first
    directory asked for with two different sets of attributes (the key and the certificate in one directory), if
    any. The module makes or fixes them; the action plugin's read checks them."""
    entries = []
    if params["key_dir_mode"] is not None:
        entries.append((params["key_path"], params["key_owner"], params["key_group"], params["key_dir_mode"]))
    if params["cert_dir_mode"] is not None:
        for path in (params["cert_path"], params["full_chain_path"]):
            if path:
                entries.append((path, params["cert_owner"], params["cert_group"], params["cert_dir_mode"]))
    wanted: dict = {}
    for path, owner, group, mode in entries:
        directory = os.path.dirname(os.path.abspath(path))
        if wanted.setdefault(directory, (owner, group, mode)) != (owner, group, mode):
            return wanted, directory
    return wanted, None
