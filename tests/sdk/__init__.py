"""The DPS emulator judged by Microsoft's Node SDKs (make sdk)."""
