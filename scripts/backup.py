#!/usr/bin/env python3
"""Pack the run's expired files into one archive per policy on every destination,
hashing each file on the way, and publish the run on each destination whole."""

import _bootstrap  # puts the repository root on sys.path, before ops is imported

from ops import cli
from ops.maintenance.chain import step_main

if __name__ == "__main__":
    cli.run(
        name="backup",
        p=cli.parser("backup", __doc__, pace=True, window=True),
        action=lambda args, config, ui: step_main("backup", args.run, config, ui),
    )
