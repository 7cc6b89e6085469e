#!/usr/bin/env python3
"""Show what the next run would back up and delete, and why, per policy and rule, with
the space it would free. Writes nothing but log lines. --json prints every decision."""

import _bootstrap  # puts the repository root on sys.path, before ops is imported

from ops import cli
from ops.maintenance.retention.plan import plan

if __name__ == "__main__":
    p = cli.parser("plan", __doc__, run=False)
    p.add_argument("--json", action="store_true", help="every decision as one JSON document on stdout")
    p.add_argument(
        "--files",
        type=cli.count,
        default=20,
        metavar="N",
        help="list the first N files each policy would expire, with why (default: %(default)s)",
    )
    cli.run(name="plan", p=p, action=lambda args, config, ui: plan(config, ui, args.json, args.files))
