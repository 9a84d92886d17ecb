"""What every test suite shares, one of each (loaded through `pytest_plugins` in tests/conftest.py):

- paths.py      where the repository, the collection link and the venv's executables are
- plugin.py     the pytest plugin: makes `ansible_collections.iotfleet.aziot` importable, and the fixtures below
- pki.py        the one PKI builder: CAs, device certificates and their files (no collection code: the DPS emulator's
                own tests use it too)
- emulator.py   the DPS emulator fixture factory, on top of `dps_emulator.testing`
- playbook.py   `run_playbook`: ansible-playbook on generated tasks or a playbook file, results back as a dict
- modules.py    `run_module`: one module's main() with arguments, in this process or a forked one
- dps_fakes.py  a fake clock and a module harness for the collection's DPS clients: a scripted transport, or the
                real one answered by the emulator (unit tests)
- killer.py     SIGKILLs a module process at a chosen point of its write path (run_module(kill_at=...))
- swtpm.py      a software TPM 2.0 (swtpm + tpm2-tools): the `software_tpm` fixture factory, a device's EK and SRK,
                and the device side of DPS's TPM flow (import the authenticationKey, HMAC inside the TPM)
"""
