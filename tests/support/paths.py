"""Where things are: the repository, the collection link Ansible finds it through, the venv's executables."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# ansible.cfg's collections_path: `make venv` links the checkout at .collections/ansible_collections/iotfleet/aziot.
COLLECTIONS_ROOT = REPO_ROOT / ".collections"
COLLECTION_LINK = COLLECTIONS_ROOT / "ansible_collections" / "iotfleet" / "aziot"
ANSIBLE_CONFIG = REPO_ROOT / "ansible.cfg"
MODULES = REPO_ROOT / "plugins" / "modules"
# ansible-playbook, ansible-doc, ... of the interpreter that runs the tests
BIN = Path(sys.executable).parent
