"""The backup step (archives to every destination) and verify (re-read, check every member)."""
