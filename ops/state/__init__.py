"""The state of runs on this host: run ids and sealed manifests, the lock, the catalogue of
deletions, restored files."""
