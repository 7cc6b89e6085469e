"""What scrub found (ops/restore/scrub.py), kept in ``<state_dir>/scrub.json``: when each run
was last checked on each destination and in what state, the runs of which no intact copy
is left, and when the last scrub ran. Read by scrub, status, find and the metrics."""

import json
from pathlib import Path

from ops.sys.atomic import atomic_write
from ops.sys.jsonl import dumps_document
from ops.sys.paths import read_plain_file

STATE = "scrub.json"


def load(state_dir: Path) -> dict:
    """{"checked": {dest: {run: {at, state, error}}}, "lost": {run: {at, destinations}}, "last": time}."""
    try:
        data = json.loads(read_plain_file(Path(state_dir) / STATE))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    # What is not of the shape scrub writes is dropped (scrub then checks those runs again).
    checked = data.get("checked")
    data["checked"] = {
        n: {r: v for r, v in runs.items() if isinstance(v, dict)}
        for n, runs in (checked.items() if isinstance(checked, dict) else ())
        if isinstance(runs, dict)
    }
    lost = data.get("lost")
    data["lost"] = {r: v for r, v in lost.items() if isinstance(v, dict)} if isinstance(lost, dict) else {}
    if not isinstance(data.get("last"), (int, float)):
        data.pop("last", None)
    return data


def save(state_dir: Path, data: dict) -> None:
    atomic_write(Path(state_dir) / STATE, dumps_document(data))


def lost_runs(state_dir: Path) -> set[str]:
    return set(load(state_dir).get("lost", {}))
