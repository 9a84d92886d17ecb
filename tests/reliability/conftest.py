"""pytest fixtures of the fault matrix: a session-wide PKI and DPS emulator (defined in matrix_helpers.py)."""

from __future__ import annotations

from matrix_helpers import emulator, pki  # noqa: F401 - fixtures, registered by being imported here
