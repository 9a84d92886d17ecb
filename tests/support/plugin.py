"""The pytest plugin of every suite (tests/conftest.py: `pytest_plugins = ["tests.support.plugin"]`).

The collection is imported the way ansible-test's units do it: Ansible's collection loader, installed for the
checkout's collection link, resolves `ansible_collections.iotfleet.aziot` (and the collections of the `ansible`
package); no test edits `sys.path`.
"""

from __future__ import annotations

from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder

from tests.support.emulator import dps_emulator_factory  # noqa: F401 - a fixture, registered by being imported
from tests.support.paths import COLLECTION_LINK, COLLECTIONS_ROOT
from tests.support.swtpm import device_tpm, other_tpm, software_tpm  # noqa: F401 - fixtures, registered by import


def _install_collection_loader() -> None:
    if not COLLECTION_LINK.exists():
        COLLECTION_LINK.parent.mkdir(parents=True, exist_ok=True)
        COLLECTION_LINK.symlink_to("../../..")
    _AnsibleCollectionFinder(paths=[str(COLLECTIONS_ROOT)])._install()


_install_collection_loader()
