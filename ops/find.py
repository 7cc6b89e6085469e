"""find: where the verified copies of deleted files live, from the catalogue."""

import json
import sys

from ops import catalogue
from ops.config import Config
from ops.console import Console
from ops.errors import StepFailed


def find(config: Config, pattern: str, ui: Console, as_json: bool = False) -> int:
    rows = []
    for e in catalogue.find(config.state_dir, pattern):
        if as_json:
            sys.stdout.write(json.dumps(e) + "\n")
        rows.append([e["path"], e["run"], ",".join(e["destinations"]), e["archive"], e["sha256"][:16], e["deleted_at"] or ""])
    if not rows:
        raise StepFailed(f"nothing deleted by this toolkit matches {pattern!r}",
                         hint="a glob's * spans directories: make find FILE='*/ticks/2026/01/*'")
    if not as_json:
        ui.table(f"Deleted files matching {pattern}", ["path", "run", "destinations", "archive", "sha256", "deleted at"], rows)
        ui.info(f"get one back: make restore FILE={rows[-1][0]}")
    return 0
