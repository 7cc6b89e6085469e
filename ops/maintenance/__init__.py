"""The maintenance chain and its declared steps (scan, backup, verify, clean)."""
