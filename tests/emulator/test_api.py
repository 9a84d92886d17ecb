"""Protocol details: api-version, status lookup, id scope, errors, admin API, persistence, concurrency."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
from pathlib import Path

import requests
from cryptography import x509
from dps_emulator.testing import start_emulator

from .helpers import GROUP_KEY, ID_SCOPE, Client, derived_key, sas_token

REPO_ROOT = Path(__file__).resolve().parents[2]


def sym_client(emulator, registration_id: str) -> Client:
    return Client(emulator, sas=sas_token(registration_id, derived_key(GROUP_KEY, registration_id)))


def test_unsupported_api_version(emulator):
    response = sym_client(emulator, "api-dev").register("api-dev", api_version="2017-01-01")
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["errorCode"] == 400004
    for version in ("2019-03-31", "2021-06-01", "2021-10-01"):
        assert sym_client(emulator, "api-dev").register("api-dev", api_version=version).status_code == 202


def test_unknown_id_scope(emulator):
    response = sym_client(emulator, "scope-dev").register("scope-dev", scope="0ne99999999")
    assert response.status_code == 401
    assert "0ne99999999" in response.json()["message"]


def test_status_lookup_404_then_200(emulator):
    client = sym_client(emulator, "lookup-dev")
    missing = client.status("lookup-dev")
    assert missing.status_code == 404
    assert "never registered" in missing.json()["message"]
    client.provision("lookup-dev")
    found = client.status("lookup-dev")
    assert found.status_code == 200
    assert found.json()["status"] == "assigned"
    assert found.json()["registrationId"] == "lookup-dev"


def test_unknown_operation_404(emulator):
    response = sym_client(emulator, "op-dev").operation("op-dev", "4.0000.nope")
    assert response.status_code == 404


def test_body_registration_id_mismatch(emulator):
    client = sym_client(emulator, "body-dev")
    response = requests.put(
        client.url("body-dev/register"),
        json={"registrationId": "other"},
        headers=client.headers,
        verify=emulator.ca_cert,
        timeout=10,
    )
    assert response.status_code == 400


def test_wrong_method_and_path(emulator):
    client = sym_client(emulator, "m-dev")
    response = requests.get(client.url("m-dev/register"), headers=client.headers, verify=emulator.ca_cert, timeout=10)
    assert response.status_code == 405
    response = requests.get(f"{emulator.url}/nothing/here", verify=emulator.ca_cert, timeout=10)
    assert response.status_code == 404


def test_tls_is_verified_with_exported_ca(emulator):
    # the exported CA is what makes verification pass; an unrelated trust store fails
    response = requests.get(f"{emulator.url}/_emulator/health", verify=emulator.ca_cert, timeout=10)
    assert response.json()["idScope"] == ID_SCOPE
    try:
        requests.get(f"{emulator.url}/_emulator/health", timeout=10)
    except requests.exceptions.SSLError:
        pass
    else:
        raise AssertionError("the emulator's certificate verified against the system trust store")


def test_concurrent_registrations_all_assigned(emulator, pki):
    count = 60
    names = [f"fleet-{index:03d}" for index in range(count)]
    certs = {name: pki.device(name) for name in names}

    def register(name: str) -> dict:
        return Client(emulator, cert=certs[name].full()).provision(name, deadline=30)

    with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(register, names))
    assert [result["status"] for result in results] == ["assigned"] * count
    registered = {device["deviceId"] for device in emulator.devices()}
    assert set(names) <= registered


def test_devices_cli_and_persistence_across_restart(config_file, tmp_path):
    state_dir = tmp_path / "state"
    first = start_emulator(config_file, state_dir)
    try:
        sym_client(first, "persist-dev").provision("persist-dev")
        before = first.registrations()["persist-dev"]["registrationState"]
    finally:
        first.stop()
    assert not (state_dir / "endpoint.json").exists()
    listing = subprocess.run(
        [sys.executable, "-m", "dps_emulator", "devices", "--state-dir", str(state_dir)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert [device["deviceId"] for device in json.loads(listing.stdout)] == ["persist-dev"]
    second = start_emulator(config_file, state_dir)
    try:
        response = sym_client(second, "persist-dev").status("persist-dev")
        assert response.status_code == 200
        assert response.json()["createdDateTimeUtc"] == before["createdDateTimeUtc"]
        assert second.ca_cert == first.ca_cert  # same server CA after a restart: clients keep trusting it
    finally:
        second.stop()


def test_bad_config_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("id_scope: 0ne1\nlinked_hubs: [hub]\nenrollment_groups:\n  - name: g\n    attestation: x509\n")
    result = subprocess.run(
        [sys.executable, "-m", "dps_emulator", "serve", "--config", str(bad), "--state-dir", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "dps_emulator: error: enrollment group 'g': x509 attestation needs ca_cert (PEM file path or inline PEM) "
        "or ca_reference (the name of an entry of certificates)"
    )


def test_documented_example_config_loads(tmp_path, pki):
    from dps_emulator.config import load_config

    example = REPO_ROOT / "tools" / "dps_emulator" / "examples" / "enrollments.yml"
    copy = tmp_path / "enrollments.yml"
    copy.write_text(example.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "root-ca.pem").write_bytes((pki.directory / "root.pem").read_bytes())
    config = load_config(copy)
    groups = [seed.record["enrollmentGroupId"] for seed in config.seeds if seed.kind == "enrollmentGroups"]
    individuals = [seed.record["registrationId"] for seed in config.seeds if seed.kind == "enrollments"]
    assert groups == ["fleet-x509", "fleet-ca-ref", "fleet-sym"]
    assert [policy.name for policy in config.policies] == ["provisioningserviceowner", "enrollmentread"]
    assert [(certificate.name, certificate.verified) for certificate in config.certificates] == [("lab-root", True)]
    assert individuals == ["gateway-01", "sensor-01", "retired-01"]
    assert config.faults[0].type == "throttle"


def test_shell_workflow_and_extra_san(config_file, tmp_path):
    """`dps-emulator serve &` then `python -m dps_emulator wait`, as a shell script would; the generated server cert
    carries --san names."""
    state_dir = tmp_path / "state"
    server = subprocess.Popen(
        [
            *(str(Path(sys.executable).parent / "dps-emulator"), "serve", "--config", str(config_file)),
            *("--state-dir", str(state_dir), "--san", "dps.example.test", "--quiet"),
        ],
        cwd=tmp_path,
    )
    try:
        waited = subprocess.run(
            [sys.executable, "-m", "dps_emulator", "wait", "--state-dir", str(state_dir), "--url"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        url = waited.stdout.strip()
        assert url.startswith("https://127.0.0.1:")
        endpoint = json.loads((state_dir / "endpoint.json").read_text())
        assert endpoint["pid"] == server.pid and endpoint["url"] == url
        health = requests.get(f"{url}/_emulator/health", verify=endpoint["ca_cert"], timeout=10)
        assert health.status_code == 200
        cert = x509.load_pem_x509_certificate((state_dir / "server.pem").read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "dps.example.test" in names.get_values_for_type(x509.DNSName)
        assert "localhost" in names.get_values_for_type(x509.DNSName)
    finally:
        server.terminate()
        assert server.wait(timeout=10) == 0
    assert not (state_dir / "endpoint.json").exists()


def test_emulator_is_independent_of_the_collection():
    """A bug shared by the client and the emulator would hide itself: the emulator must not import the collection."""
    package = REPO_ROOT / "tools" / "dps_emulator" / "src" / "dps_emulator"
    assert (package / "__init__.py").exists()
    for source in package.rglob("*.py"):
        text = source.read_text(encoding="utf-8")
        assert "ansible_collections" not in text, source
        assert "plugins." not in text and "from plugins" not in text, source
