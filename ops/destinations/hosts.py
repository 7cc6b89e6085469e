"""Whose a run on a destination is: the host its MANIFEST.json names.

Two hosts given the same bucket prefix (or the same directory) see each other's runs as
their own; backup warns and status says so. A run is this host's if its local state knows
it (runs/, compacted/, the catalogue); only the others' MANIFEST.json are read.
"""

import json
import os
import socket
from pathlib import Path

from ops.config import Config
from ops.destinations import Destination
from ops.state.manifest import RUN_ID_RE, list_runs


def this_host() -> str:
    return socket.gethostname()


def run_host(manifest: dict) -> str | None:
    """The host a run's MANIFEST.json names (its identity's, else the older plain field)."""
    identity = manifest.get("identity")
    host = identity.get("host") if isinstance(identity, dict) else None
    host = host or manifest.get("host")
    return host if isinstance(host, str) else None


def known_runs(config: Config) -> set[str]:
    """The runs this host's state knows: its own, whatever a destination says."""
    known = set(list_runs(config.state_dir))
    for sub, suffix in (("compacted", ".tar.zst"), ("catalogue", ".jsonl")):
        try:
            names = os.listdir(Path(config.state_dir) / sub)
        except OSError:
            continue
        known.update(n.removesuffix(suffix) for n in names if RUN_ID_RE.match(n.removesuffix(suffix)))
    return known


def other_hosts(
    dest: Destination, known: set[str], first_only: bool = False, runs: list[str] | None = None
) -> dict[str, str]:
    """{run id: host} of the runs on ``dest`` whose MANIFEST.json names another host,
    newest first; with ``first_only``, the first one found. A manifest that cannot be read
    or parsed is left out (restore refuses such a run anyway). DestinationError as raised."""
    me = this_host()
    found = {}
    for run_id in reversed(dest.list_runs() if runs is None else runs):
        if run_id in known:
            continue
        try:
            host = run_host(json.loads(dest.read_bytes(run_id, "MANIFEST.json")))
        except (ValueError, AttributeError):
            continue
        if host is not None and host != me:
            found[run_id] = host
            if first_only:
                break
    return found
