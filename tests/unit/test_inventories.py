"""What the demo and the molecule fleet run against is what inventory/example tells users to copy.

The device group's variables (group_vars/pis.yml) of the demo inventory and of the molecule `fleet` scenario must
have exactly the keys of inventory/example/group_vars/pis.yml, with the same values except where they point at
the local DPS emulator instead of Azure; their hosts are reached the same way (ansible_host + ansible_port, SSH as
`pi` with sudo), never through a container connection.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tools.device_containers import inventory_hosts

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "inventory" / "example"
COPIES = {
    "demo": REPO_ROOT / "inventory" / "demo",
    "molecule fleet": REPO_ROOT / "extensions" / "molecule" / "fleet" / "inventory",
}
# Where a copy may differ: the DPS it registers with (the emulator's id scope, address and server CA).
EMULATOR_ENDPOINT = {
    "dps_registration_id_scope",
    "dps_registration_provisioning_host",
    "dps_registration_server_ca_src",
}


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


@pytest.mark.parametrize("name", sorted(COPIES))
def test_device_group_vars_have_the_example_shape(name: str) -> None:
    example = _load(EXAMPLE / "group_vars" / "pis.yml")
    copy = _load(COPIES[name] / "group_vars" / "pis.yml")
    assert sorted(copy) == sorted(example), f"{name}: keys differ from inventory/example/group_vars/pis.yml"
    differing = {key for key in example if copy[key] != example[key]}
    assert differing <= EMULATOR_ENDPOINT, f"{name}: {sorted(differing - EMULATOR_ENDPOINT)} differ from the example"


@pytest.mark.parametrize("name", sorted(COPIES))
def test_hosts_are_reached_over_ssh_like_the_example(name: str) -> None:
    hosts = inventory_hosts(_load(COPIES[name] / "hosts.yml")["pis"])
    assert hosts, f"{name}: no hosts"
    for host, host_vars in hosts.items():
        assert set(host_vars) <= {"ansible_host", "ansible_port", "container_image"}, f"{name}: {host}: {host_vars}"
        assert host_vars["ansible_host"] == "127.0.0.1", f"{name}: {host} must stay on loopback"
    for path in (COPIES[name] / "group_vars").glob("*.yml"):
        assert "ansible_connection" not in _load(path), f"{path}: devices are reached over SSH, as real Pis"
