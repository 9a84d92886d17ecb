"""Running the benchmark's fleet: inventories, containers, SSH, the CA and the DPS emulator, and the three methods
(A: the guides' openssl loop, B: community.crypto, C: iotfleet.aziot) for one (key type, size, repeat) cell."""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from bench.measure import VENV_BIN, loadavg, parse_profile, parse_recap, run_measured
from bench.report import cell_ratios, operations_per_device
from tools.device_containers import Device, DeviceError, podman, podman_env, start, stop

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PLAYBOOKS = BENCH_DIR / "playbooks"
ID_SCOPE = "0ne00BENCH1"
KEY_TYPES = ("ec-p256", "rsa-4096")
# The emulator's linked hub; method H signs its IoT Hub requests for it with this owner policy.
HUB = "bench-hub.azure-devices.net"
HUB_POLICY = "iothubowner"
HUB_POLICY_KEY = base64.b64encode(b"bench-iot-hub-owner-policy-key-1").decode()


class BenchError(Exception):
    """A phase failed: the harness stops with this message."""


# --- fleet setup -------------------------------------------------------------------------------------------


def host_names(size: int, prefix: str = "bench-dev-") -> list[str]:
    width = max(4, len(str(size)))
    return [f"{prefix}{index:0{width}d}" for index in range(1, size + 1)]


def write_inventory(path: Path, hosts: list[str], devices_dir: Path, target: str, ssh_dir: Path | None = None) -> None:
    """YAML inventory, group `fleet`: local hosts with their own device_root, or one container per device."""
    lines = ["---", "fleet:", "  vars:"]
    if target == "podman":
        # One container per device; each method writes under its own root inside it (devices_dir).
        lines.append("    ansible_connection: containers.podman.podman")
    elif target == "ssh":
        # As inventory/example reaches a Pi: SSH as pi, sudo to root; the run's own key and known_hosts.
        lines.append("    ansible_user: pi")
        lines.append("    ansible_become: true")
        lines.append(f"    ansible_ssh_private_key_file: {json.dumps(str(ssh_dir / 'id_ed25519'))}")
        lines.append(
            f"    ansible_ssh_common_args: {json.dumps('-o UserKnownHostsFile=' + str(ssh_dir / 'known_hosts'))}"
        )
    if target in ("podman", "ssh"):
        lines.append("    ansible_python_interpreter: /usr/bin/python3")
        lines.append(f"    device_root: {json.dumps(str(devices_dir))}")
        lines.append("  hosts:")
        for device in containers_for(hosts):
            # The podman connection finds the container by its name, the inventory name.
            address = f" {{ansible_host: {device.address}, ansible_port: {device.port}}}" if target == "ssh" else ""
            lines.append(f"    {device.name}:{address}")
    else:
        lines.append("    ansible_connection: local")
        lines.append(f"    ansible_python_interpreter: {json.dumps(sys.executable)}")
        lines.append("  hosts:")
        for host in hosts:
            lines.append(f"    {host}:")
            lines.append(f"      device_root: {json.dumps(str(devices_dir / host))}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --- container targets (podman connection or SSH) -------------------------------------------------------------

PODMAN_ROOT = Path("/bench")  # inside each container: /bench/A, /bench/B, /bench/C
SSH_BASE_PORT = 2400  # --target ssh: device N listens on 127.0.0.1:SSH_BASE_PORT+N (--ssh-base-port)


def containers_for(hosts: list[str], image: str = "bookworm-amd64-prepared") -> list[Device]:
    return [Device(host, SSH_BASE_PORT + index, image) for index, host in enumerate(hosts, start=1)]


def start_containers(hosts: list[str], image: str, ssh_dir: Path) -> list[Device]:
    """A fresh container per device (not timed), reachable over SSH; --target podman ignores the SSH side."""
    devices = containers_for(hosts, image)
    stop(hosts)
    try:
        start(devices, ssh_dir)
    except DeviceError as error:
        raise BenchError(str(error)) from None
    return devices


def push_to_containers(hosts: list[str], dps_ca: Path) -> None:
    """/etc/aziot under C's root (as after installing the aziot packages) and the emulator's CA (not timed)."""
    ca = dps_ca.read_text(encoding="utf-8")
    for host in hosts:
        script = f"mkdir -p {PODMAN_ROOT}/C/etc/aziot && cat > {PODMAN_ROOT}/dps-ca.pem"
        result = subprocess.run(  # noqa: S603
            ["podman", "exec", "-i", host, "sh", "-c", script],  # noqa: S607
            input=ca,
            capture_output=True,
            text=True,
            env=podman_env(),
            check=False,
        )
        if result.returncode != 0:
            raise BenchError(f"preparing container {host} failed: {result.stderr[-500:]}")


def podman_gateway() -> str:
    """The host's address on podman's default bridge: where the containers reach the DPS emulator. It exists only
    while a container runs on the bridge: start the containers first."""
    data = json.loads(podman("network", "inspect", "podman").stdout)
    return data[0]["subnets"][0]["gateway"]


# sun_path holds 108 bytes with its NUL; stay below 100 so that a longer %C or temporary suffix still fits.
SSH_SOCKET_PATH_MAX = 100


def ssh_control_dir() -> Path:
    """This run's directory of SSH ControlMaster sockets: short and under /tmp, never under the checkout.

    A socket path must fit in sun_path (108 bytes) whatever the checkout's path, and ssh appends '.' and 16
    random characters to it while it creates the socket: /tmp/iotf.XXXXXXXX/<40 hex>.<16> is 76 bytes.
    """
    return Path(tempfile.mkdtemp(prefix="iotf.", dir="/tmp"))


def ssh_control_path(control_dir: Path) -> str:
    """ssh's ControlPath in `control_dir`: %C, the 40-character hash of the connection (host, port, user)."""
    return f"{control_dir}/%C"


def ssh_config(path: Path, devices: list[Device], ssh_dir: Path, control_dir: Path) -> Path:
    """An ssh_config naming each device, for method A's ssh loop (same key, known_hosts and ControlPersist; the
    sockets in `control_dir`, from ssh_control_dir())."""
    lines = []
    for device in devices:
        lines += [
            f"Host {device.name}",
            f"  HostName {device.address}",
            f"  Port {device.port}",
            "  User pi",
            f"  IdentityFile {ssh_dir / 'id_ed25519'}",
            f"  UserKnownHostsFile {ssh_dir / 'known_hosts'}",
            "  StrictHostKeyChecking accept-new",
            "  ControlMaster auto",
            "  ControlPersist 60s",
            f"  ControlPath {ssh_control_path(control_dir)}",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def ansible_env(forks: int, profile: bool) -> dict[str, str]:
    env = podman_env()  # the podman connection plugin and method A's podman exec run podman too
    env.update(
        {
            "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
            "ANSIBLE_FORKS": str(forks),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    if profile:
        env["ANSIBLE_CALLBACKS_ENABLED"] = "ansible.posix.profile_tasks"
        env["PROFILE_TASKS_TASK_OUTPUT_LIMIT"] = "30"
    return env


def make_ca(ca_dir: Path, key_type: str, env: dict[str, str]) -> None:
    """Root + intermediate CA with iotfleet.aziot.x509_ca (not timed; shared by A, B and C)."""
    argv = [
        str(VENV_BIN / "ansible"),
        "localhost",
        "-m",
        "iotfleet.aziot.x509_ca",
        "-a",
        json.dumps({"path": str(ca_dir), "key_type": key_type}),
    ]
    result = subprocess.run(argv, env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise BenchError(f"creating the bench CA in {ca_dir} failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")


def write_enrollments(path: Path, root_ca: Path, operations_per_minute: int = 0) -> None:
    """Emulator enrollment file: one verified X.509 group on the bench root CA, the emulator's DPS defaults and, when
    `operations_per_minute` is set, DPS's operations quota (1,000 a minute per instance)."""
    path.write_text(
        "---\n"
        f"id_scope: {ID_SCOPE}\n"
        f"linked_hubs: [{HUB}]\n"
        "iot_hub:\n"
        "  shared_access_policies:\n"
        f"    - {{name: {HUB_POLICY}, primary_key: {json.dumps(HUB_POLICY_KEY)}, rights: [RegistryRead, "
        "RegistryWrite]}\n"
        "  configuration_operations_per_minute: 20\n"  # IoT Hub's throttle (S1); H makes at most 4 a run
        "defaults:\n"
        "  assignment_delay: 1.0\n"
        "  retry_after: 3\n"
        "  rate_limit_per_minute: 0\n"
        f"  operations_per_minute: {operations_per_minute}\n"
        "enrollment_groups:\n"
        "  - name: bench-x509\n"
        "    attestation: x509\n"
        f"    ca_cert: {json.dumps(str(root_ca))}\n"
        "    verified: true\n",
        encoding="utf-8",
    )


def dps_operations(emulator: Any, size: int) -> dict[str, Any]:
    """The DPS operations the emulator billed since the last call (as DPS bills them: polls are not operations), per
    device of the fleet, then counting from zero again: called after each phase, it is that phase's count."""
    counted = emulator.operations()
    emulator.reset_operations()
    return {
        "total": counted["total"],
        "per_device": operations_per_device(counted, size),
        "by_kind": counted["by_kind"],
        "throttled": counted["throttled"],
        "per_minute": counted["per_minute"],
    }


# --- the IoT Hub phase (H): inventory/demo's cohorts and deployments on the simulated fleet ------------------------

DEMO_INVENTORY = REPO_ROOT / "inventory" / "demo"


def demo_hub_declaration() -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """inventory/demo's cohorts (inventory group -> its group_vars: dps_enrollment_group and the tags) and its
    deployments (content files made absolute): the declaration method H measures, read from the demo itself."""
    hosts = yaml.safe_load((DEMO_INVENTORY / "hosts.yml").read_text(encoding="utf-8"))
    group_vars = DEMO_INVENTORY / "group_vars"
    cohorts = {
        group: yaml.safe_load((group_vars / f"{group}.yml").read_text(encoding="utf-8"))
        for group in hosts["pis"]["children"]
    }
    declared = yaml.safe_load((group_vars / "all.yml").read_text(encoding="utf-8"))["iothub_deployment_deployments"]
    deployments = [{**entry, "content_file": str(DEMO_INVENTORY / entry["content_file"])} for entry in declared]
    return cohorts, deployments


def hub_cohorts(hosts: list[str]) -> dict[str, list[str]]:
    """The hosts split into inventory/demo's cohorts, in order: the first cohort gets the odd one out."""
    cohorts, _ = demo_hub_declaration()
    names = list(cohorts)
    size = -(-len(hosts) // len(names))
    return {name: hosts[index * size : (index + 1) * size] for index, name in enumerate(names)}


def hub_connection_string() -> str:
    return f"HostName={HUB};SharedAccessKeyName={HUB_POLICY};SharedAccessKey={HUB_POLICY_KEY}"


def write_hub_inventory(path: Path, hosts: list[str], ca_dir: Path, emulator: Any) -> None:
    """Method H's inventory: the hosts in inventory/demo's cohorts (each cohort's group_vars: its enrollment group
    and tags; its own CA certificate path, which the cohort computation compares but never reads), the demo's
    deployments, the emulator's hub. JSON, which is YAML."""
    cohorts, deployments = demo_hub_declaration()
    children = {}
    for group, members in hub_cohorts(hosts).items():
        settings = cohorts[group]
        children[group] = {
            "vars": {
                **{key: settings[key] for key in ("dps_enrollment_group", "site", "ring")},
                "device_identity_ca_cert_path": str(ca_dir / f"{settings['dps_enrollment_group']}-ca.cert.pem"),
            },
            "hosts": dict.fromkeys(members),
        }
    inventory = {
        "fleet": {
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "iothub_deployment_connection_string": hub_connection_string(),
                "iothub_deployment_service_url": emulator.url,
                "iothub_deployment_ca_path": str(emulator.ca_cert),
                "iothub_deployment_deployments": deployments,
                "iothub_deployment_fleet_hosts": "{{ groups['fleet'] }}",
            },
            "children": children,
        }
    }
    path.write_text(json.dumps(inventory, indent=1) + "\n", encoding="utf-8")


def seed_hub_devices(emulator: Any, hosts: list[str]) -> dict[str, int]:
    """Before H's first run (not timed): every host a device of the emulator's hub whose twin carries the *other*
    cohort's tags, as if each had moved cohort in the inventory since it registered - so the first run rewrites every
    twin. A device DPS registered already (C's DPS phase) is kept; the others are created with the IoT Hub API (PUT
    /devices, X.509 CA authentication, as DPS creates them). Uses the collection's own IoT Hub client."""
    sys.path.insert(0, str(REPO_ROOT / ".collections"))
    from ansible_collections.iotfleet.aziot.plugins.module_utils import _http, _iothub

    cohorts, _ = demo_hub_declaration()
    tags = {group: {key: cohorts[group][key] for key in ("site", "ring")} for group in cohorts}
    other = dict(zip(tags, list(tags)[1:] + list(tags)[:1], strict=True))
    client = _iothub.IotHubClient(
        _iothub.parse_connection_string(hub_connection_string(), emulator.url),
        _http.urls_transport("iotfleet-bench", ca_path=str(emulator.ca_cert)),
        "bench: seeding the hub",
    )
    registered = {device["deviceId"] for device in emulator.devices()}
    created = 0
    for group, members in hub_cohorts(hosts).items():
        for host in members:
            if host not in registered:
                client.put_device(host, {"deviceId": host, "authentication": {"type": "certificateAuthority"}}, None)
                created += 1
            client.patch_twin(host, {"tags": tags[other[group]]}, None)
    return {"created": created, "registered_before": len(registered & set(hosts)), "requests": client.attempts}


REQUESTS_MARK = "bench-hub-requests "


def run_phase_h(call: PlaybookCall) -> dict[str, Any]:
    """bench/playbooks/hub_deployment.yml (run_playbook), plus the IoT Hub requests and what changed, from the
    modules' own results (the playbook's last task prints them on one line)."""
    result = run_playbook(call)
    text = call.log.read_text(encoding="utf-8", errors="replace")
    match = re.search(re.escape(REQUESTS_MARK) + r"((?:\w+=\d+ ?)+)", text)
    if match is None:
        raise BenchError(f"{call.name}: no '{REQUESTS_MARK.strip()}' line in {call.log}")
    result["hub"] = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}
    return result


# --- phases ------------------------------------------------------------------------------------------------


def run_phase_a(
    cell_dir: Path, hosts: list[str], key_type: str, ca_dir: Path, env: dict[str, str], tag: str, target: str
) -> dict[str, Any]:
    devices = cell_dir / "A"
    devices.mkdir(exist_ok=True)
    log = cell_dir / f"A-{tag}.log"
    if target == "podman":
        script, where = "method_a_remote.sh", ["podman", str(devices), str(PODMAN_ROOT / "A")]
    elif target == "ssh":
        where = [f"ssh:{cell_dir / 'ssh_config'}", str(devices), str(PODMAN_ROOT / "A")]
        script = "method_a_remote.sh"
    else:
        script, where = "method_a_openssl.sh", [str(devices)]
    argv = ["bash", str(BENCH_DIR / script), key_type, str(ca_dir), *where, *hosts]
    result = run_measured(argv, log, env, REPO_ROOT)
    text = log.read_text(encoding="utf-8", errors="replace")
    if result["rc"] != 0:
        raise BenchError(f"method A ({tag}) exited {result['rc']}: {text[-2000:]}")
    match = re.search(r"^changed=(\d+)$", text, re.MULTILINE)
    result["changed"] = int(match.group(1)) if match else None
    return result


@dataclasses.dataclass(frozen=True)
class PlaybookCall:
    """One ansible-playbook process of a cell (run_playbook), or the slices of one (run_playbook_sliced)."""

    name: str
    playbook: Path
    inventory: Path
    extra: dict[str, Any]
    env: dict[str, str]
    forks: int
    log: Path


def run_playbook(call: PlaybookCall, more_args: list[str] | None = None) -> dict[str, Any]:
    argv = [
        str(VENV_BIN / "ansible-playbook"),
        "-i",
        str(call.inventory),
        "-f",
        str(call.forks),
        "-e",
        json.dumps(call.extra),
        *(more_args or []),
        str(call.playbook),
    ]
    name, env, log = call.name, call.env, call.log
    result = run_measured(argv, log, env, REPO_ROOT)
    text = log.read_text(encoding="utf-8", errors="replace")
    recap = parse_recap(text)
    result.update(changed=recap["changed"], tasks_ok=recap["ok"], hosts=recap["hosts"])
    if result["rc"] != 0 or recap["failed"] or recap["unreachable"]:
        raise BenchError(f"{name} failed (rc {result['rc']}, see {log}): {text[-3000:]}")
    if "profile_tasks" in env.get("ANSIBLE_CALLBACKS_ENABLED", ""):
        result["profile"] = parse_profile(text)
    return result


def slice_hosts(hosts: list[str], slices: int) -> list[list[str]]:
    """AWX job slicing: slice k (0-based) of `slices` runs hosts[k::slices] of the sorted inventory."""
    ordered = sorted(hosts)
    return [ordered[index::slices] for index in range(slices)]


def run_playbook_sliced(call: PlaybookCall, hosts: list[str], slices: int) -> dict[str, Any]:
    """`playbook` as `slices` concurrent ansible-playbook processes with disjoint --limit (AWX job slicing), each
    with `forks` forks (a slice is a job of its own). Per slice: what run_playbook measures. Total: wall from the
    first start to the last end, CPU and changed summed, memory peaks summed (an upper bound: they need not
    coincide)."""
    if slices == 1:
        return run_playbook(call)
    log = call.log
    results: list[dict[str, Any] | BaseException | None] = [None] * slices
    parts = slice_hosts(hosts, slices)

    def one(index: int) -> None:
        limit = log.with_name(f"{log.stem}-slice{index + 1}.limit")
        limit.write_text("\n".join(parts[index]) + "\n", encoding="utf-8")
        slice_extra = ["--limit", f"@{limit}"]
        try:
            one_slice = dataclasses.replace(
                call,
                name=f"{call.name} slice {index + 1}/{slices}",
                log=log.with_name(f"{log.stem}-slice{index + 1}.log"),
            )
            results[index] = run_playbook(one_slice, slice_extra)
        except BaseException as error:  # reported below, after every slice ended
            results[index] = error

    started = time.perf_counter()
    threads = [threading.Thread(target=one, args=(index,)) for index in range(slices)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    for result in results:
        if isinstance(result, BaseException):
            raise result
    per_slice = [result for result in results if isinstance(result, dict)]
    total: dict[str, Any] = {
        "wall_s": round(wall, 3),
        "rc": max(result["rc"] for result in per_slice),
        "changed": sum(result["changed"] for result in per_slice),
        "tasks_ok": sum(result["tasks_ok"] for result in per_slice),
        "hosts": sum(result["hosts"] for result in per_slice),
        "cpu_user_s": round(sum(result["cpu_user_s"] for result in per_slice), 2),
        "cpu_sys_s": round(sum(result["cpu_sys_s"] for result in per_slice), 2),
        "peak_rss_tree_mib": round(sum(result["peak_rss_tree_mib"] for result in per_slice), 1),
        "peak_pss_tree_mib": round(sum(result["peak_pss_tree_mib"] for result in per_slice), 1),
        "peak_processes": sum(result["peak_processes"] for result in per_slice),
        "max_rss_single_mib": max(result["max_rss_single_mib"] for result in per_slice),
        "slices": [
            {"hosts": len(part), **{key: result[key] for key in SLICE_FIELDS}}
            for part, result in zip(parts, per_slice, strict=True)
        ],
    }
    return total


SLICE_FIELDS = ("wall_s", "cpu_user_s", "cpu_sys_s", "changed", "peak_pss_tree_mib", "max_rss_single_mib")


def start_cell(
    args: argparse.Namespace,
    cell_dir: Path,
    hosts: list[str],
    enrollments: Path,
    ssh_dir: Path,
    control_dir: Path | None,
) -> Any:
    """Start the cell's containers (a container target) and then its DPS emulator; return the emulator."""
    from dps_emulator.testing import EmulatorStartError, start_emulator

    container_target = args.target in ("podman", "ssh")
    if container_target:
        # Containers first: the emulator listens on the podman bridge, which has no address before they run.
        devices = start_containers(hosts, args.image.rpartition(":")[2], ssh_dir)
        if control_dir is not None:
            ssh_config(cell_dir / "ssh_config", devices, ssh_dir, control_dir)
    try:
        return start_emulator(
            enrollments,
            cell_dir / "dps",
            host=podman_gateway() if container_target else "127.0.0.1",
            python=sys.executable,
            extra_args=["--quiet"],
        )
    except EmulatorStartError as error:
        if container_target and not args.keep:
            stop(hosts)
        raise BenchError(f"the DPS emulator did not start: {error}") from error


def run_cell(args: argparse.Namespace, key_type: str, size: int, repeat: int, work: Path) -> dict[str, Any]:
    cell_dir = work / f"{key_type}-{size}-r{repeat}"
    if cell_dir.exists():
        shutil.rmtree(cell_dir)
    cell_dir.mkdir(parents=True)
    env = ansible_env(args.forks, args.profile)
    hosts = host_names(size, args.name_prefix)
    ca_dir = cell_dir / "ca"
    make_ca(ca_dir, key_type, env)
    inventories = {}
    container_target = args.target in ("podman", "ssh")
    ssh_dir = cell_dir / "ssh"
    for method in ("B", "C"):
        (cell_dir / method).mkdir()
        inventories[method] = cell_dir / f"inventory-{method}.yml"
        root = PODMAN_ROOT / method if container_target else cell_dir / method
        write_inventory(inventories[method], hosts, root, args.target, ssh_dir)
    if not container_target:
        for host in hosts:  # /etc/aziot comes with the aziot packages on a device (not timed)
            (cell_dir / "C" / host / "etc" / "aziot").mkdir(parents=True)
    enrollments = cell_dir / "enrollments.yml"
    write_enrollments(enrollments, ca_dir / "root-ca.cert.pem", args.dps_operations_per_minute)
    cell: dict[str, Any] = {
        "key_type": key_type,
        "size": size,
        "repeat": repeat,
        "target": args.target,
        "load_before": loadavg(),
    }
    phases: dict[str, dict[str, Any]] = {}
    control_dir = ssh_control_dir() if args.target == "ssh" else None
    if control_dir is not None:
        env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(control_dir)  # Ansible's own ControlPath (%(directory)s/<hash>)
    try:
        emulator = start_cell(args, cell_dir, hosts, enrollments, ssh_dir, control_dir)
    except BaseException:
        if control_dir is not None:
            shutil.rmtree(control_dir, ignore_errors=True)
        raise
    try:
        if container_target:
            push_to_containers(hosts, Path(emulator.ca_cert))
        if "H" in args.methods:
            inventories["H"] = cell_dir / "inventory-H.yml"
            write_hub_inventory(inventories["H"], hosts, ca_dir, emulator)
        b_extra = {"bench_ca_dir": str(ca_dir), "bench_key_type": key_type}
        # dps_registration_id_scope: for C's inventory validation (an extra var: hostvars have no play vars).
        c_extra = {
            **b_extra,
            "bench_dps_endpoint": emulator.url + "/",
            "bench_id_scope": ID_SCOPE,
            "dps_registration_id_scope": ID_SCOPE,
        }
        dps_extra = {
            "bench_dps_host": f"{emulator.host}:{emulator.port}",
            "bench_id_scope": ID_SCOPE,
            "bench_dps_ca": str(PODMAN_ROOT / "dps-ca.pem") if container_target else str(emulator.ca_cert),
        }
        pb = PLAYBOOKS
        for tag in ("first", "rerun"):
            emulator.reset_operations()  # each phase's DPS operations, from zero (dps_operations)
            if "A" in args.methods:
                phases.setdefault("A", {})[tag] = run_phase_a(cell_dir, hosts, key_type, ca_dir, env, tag, args.target)
                phases["A"][tag]["dps_operations"] = dps_operations(emulator, size)
            if "B" in args.methods:
                phases.setdefault("B", {})[tag] = run_playbook(
                    PlaybookCall(
                        "method B",
                        pb / "method_b_community_crypto.yml",
                        inventories["B"],
                        b_extra,
                        env,
                        args.forks,
                        cell_dir / f"B-{tag}.log",
                    )
                )
                phases["B"][tag]["dps_operations"] = dps_operations(emulator, size)
            if "C" in args.methods:
                c_call = PlaybookCall(
                    "method C",
                    pb / "method_c_collection.yml",
                    inventories["C"],
                    c_extra,
                    env,
                    args.forks,
                    cell_dir / f"C-{tag}.log",
                )
                phases.setdefault("C", {})[tag] = run_playbook_sliced(c_call, hosts, args.slices)
                phases["C"][tag]["dps_operations"] = dps_operations(emulator, size)
            if "C" in args.methods and not args.no_dps:
                dps_call = PlaybookCall(
                    "method C DPS phase",
                    pb / "method_c_dps.yml",
                    inventories["C"],
                    dps_extra,
                    env,
                    args.forks,
                    cell_dir / f"C_dps-{tag}.log",
                )
                dps = run_playbook_sliced(dps_call, hosts, args.slices)
                dps["devices_per_min"] = round(size * 60 / dps["wall_s"], 1)
                dps["dps_operations"] = dps_operations(emulator, size)
                phases.setdefault("C_dps", {})[tag] = dps
            if "H" in args.methods:
                if tag == "first":
                    cell["hub_seed"] = seed_hub_devices(emulator, hosts)
                    emulator.reset_operations()  # the seeding is no part of H (it uses the hub API only)
                h_call = PlaybookCall(
                    "method H (IoT Hub deployments)",
                    pb / "hub_deployment.yml",
                    inventories["H"],
                    {},
                    env,
                    args.forks,
                    cell_dir / f"H-{tag}.log",
                )
                phases.setdefault("H", {})[tag] = run_phase_h(h_call)
                phases["H"][tag]["dps_operations"] = dps_operations(emulator, size)
            progress(
                f"  {key_type} n={size} r{repeat} {tag}: "
                + ", ".join(
                    f"{name} {phase[tag]['wall_s']:.1f}s ch={phase[tag]['changed']}" for name, phase in phases.items()
                )
            )
        if "C" in args.methods and not args.no_dps:
            registered = len(emulator.devices())
            phases["C_dps"]["registered_devices"] = registered
            if registered != size:
                raise BenchError(f"the DPS emulator shows {registered} devices, expected {size}")
        if "H" in args.methods:
            # The hub's own answer after both runs: how many devices each configuration is applied to.
            applied = emulator._admin("GET", f"/_emulator/hubs/{HUB}/configurations-applied")
            cell["hub_applied"] = {
                name: sum(name in names for names in applied.values())
                for name in sorted({name for names in applied.values() for name in names})
            }
    finally:
        emulator.stop()
        if container_target and not args.keep:
            stop(hosts)
        if control_dir is not None:
            shutil.rmtree(control_dir, ignore_errors=True)
    cell["load_after"] = loadavg()
    cell["phases"] = phases
    cell["ratios"] = cell_ratios(phases)
    if not args.keep:
        shutil.rmtree(cell_dir)
    return cell


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
