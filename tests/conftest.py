"""Every suite's shared setup: the collection importable from this checkout, the PKI builder, the emulator fixture
factory, run_playbook and run_module (tests/support)."""

pytest_plugins = ["tests.support.plugin"]
