#!/usr/bin/env python3
"""Show recent runs and each step's state (with counts), the lock holder, destinations,
and any problem with what to do about it. --json for machines. Changes nothing."""

import _bootstrap  # puts the repository root on sys.path, before ops is imported

from ops import cli
from ops.reports.status import runs_on, status

if __name__ == "__main__":
    p = cli.parser("status", __doc__, run=False)
    p.add_argument("--json", action="store_true", help="the same as one JSON document on stdout")
    p.add_argument("--runs-on", metavar="DEST", help="list the runs destination DEST holds (works with no local state)")
    cli.run(
        name="status",
        p=p,
        action=lambda args, config, ui: (
            runs_on(config, args.runs_on) if args.runs_on else status(config, ui, as_json=args.json)
        ),
    )
