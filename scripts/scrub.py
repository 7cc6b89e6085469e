#!/usr/bin/env python3
"""Re-read the copies whose last check is oldest (the cycle's share; --all: every one) on
every destination (or --dest), as verify checks them, and repair a damaged or missing copy
from another that passes. Exits 1 naming each run of which no intact copy is left.
make maintenance ends with the share that is due."""

import _bootstrap  # puts the repository root on sys.path, before ops is imported

from ops import cli
from ops.restore.scrub import scrub

if __name__ == "__main__":
    p = cli.parser("scrub", __doc__, run=False, pace=True, window=True)
    p.add_argument("--dest", metavar="NAME", help="only this destination's copies")
    p.add_argument("--all", action="store_true", help="every run on every destination now, not only the share due")
    cli.run(name="scrub", p=p, action=lambda args, config, ui: scrub(config, ui, args.dest, args.all))
