"""`python -m dps_emulator ...`: the same command line as the `dps-emulator` script."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
