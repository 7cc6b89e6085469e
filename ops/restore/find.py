"""find: where the verified copies of deleted files live, from the catalogue."""

import json
import os
import shlex
import sys

from ops.config import Config
from ops.console import Console
from ops.errors import StepFailed
from ops.state import catalogue
from ops.state.scrubbed import lost_runs
from ops.sys.jsonl import shown


def _shell_word(path: str) -> str:
    """``path`` as one word a shell gives back byte for byte: quoted, or for a name a
    terminal cannot show (see jsonl.shown), bash's $'...' with each such byte as \\xNN."""
    if shown(path) == path:
        return shlex.quote(path)
    return (
        "$'"
        + "".join(chr(b) if 0x20 <= b < 0x7F and b not in b"\\'" else f"\\x{b:02x}" for b in os.fsencode(path))
        + "'"
    )


def indexing(ui: Console):
    """catalogue.find's ``progress``: a bar, on a terminal, while blocks written before the
    index existed (or by a rebuild) are indexed."""
    return lambda total: ui.progress("indexing the catalogue", total)


def find(config: Config, pattern: str, ui: Console, as_json: bool = False) -> int:
    rows, last = [], None
    lost = lost_runs(config.state_dir)
    for e in catalogue.find(config.state_dir, pattern, progress=indexing(ui), warn=ui.problem):
        if e["run"] in lost:  # scrub found no intact copy of the run on any destination
            e = {**e, "no_intact_copy": True}
        if as_json:
            sys.stdout.write(json.dumps(e) + "\n")
        last = e["path"]
        rows.append(
            [
                shown(e["path"]),
                e["run"],
                "NO INTACT COPY (make scrub)" if e.get("no_intact_copy") else ",".join(e["destinations"]),
                e["archive"],
                e["sha256"][:16],
                e["deleted_at"] or "unknown",
            ]
        )
    if not rows:
        raise StepFailed(
            f"nothing deleted by this toolkit matches {pattern!r}",
            hint="a glob's * spans directories: make find FILE='*/ticks/2026/01/*'",
        )
    if not as_json:
        ui.table(
            f"Deleted files matching {shown(pattern)}",
            ["path", "run", "destinations", "archive", "sha256", "deleted at"],
            rows,
        )
        ui.info(f"get one back: make restore FILE={_shell_word(last)}")
    return 0
