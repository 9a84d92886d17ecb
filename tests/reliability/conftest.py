"""pytest fixtures of the fault matrix: a session-wide PKI and DPS emulator (defined in matrix_helpers.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from matrix_helpers import emulator, pki  # noqa: F401 - fixtures, registered by being imported here
