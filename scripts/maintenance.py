#!/usr/bin/env python3
"""Run scan, backup, verify and clean in order on one run, under one lock; stop at the
first failure and exit with its code. An unfinished newest run is resumed, not repeated.
The run done, the copies whose re-reading is due are scrubbed (make scrub; scrub.cycle)."""

import _bootstrap  # puts the repository root on sys.path, before ops is imported

from ops import cli
from ops.maintenance.chain import maintenance
from ops.restore.scrub import scrub

if __name__ == "__main__":
    p = cli.parser("maintenance", __doc__, run=False, pace=True, window=True, brake=True)
    p.add_argument(
        "--new-run",
        action="store_true",
        help="start a new run even if the newest one is unfinished (after inspecting it)",
    )
    cli.run(
        name="maintenance",
        p=p,
        # The run done, the copies whose re-reading is due (scrub.cycle's share of a night).
        action=lambda args, config, ui: (
            maintenance(config, ui, args.new_run, args.allow_large_delete) or scrub(config, ui, quiet=True)
        ),
    )
