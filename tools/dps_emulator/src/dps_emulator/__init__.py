"""A local Azure IoT Hub Device Provisioning Service (DPS) emulator with real attestation.

Independent of the iotfleet.aziot collection on purpose: it never imports the collection's DPS client,
so a bug shared by both sides cannot hide itself. See docs/dps_emulator.md.
"""

from __future__ import annotations

SUPPORTED_API_VERSIONS = ("2019-03-31", "2021-06-01", "2021-10-01")
