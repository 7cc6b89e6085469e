#!/usr/bin/env python3
"""Delete the run's files that verify confirmed and that are provably unchanged since
backup; keep (and log why) every other one."""

import _bootstrap  # puts the repository root on sys.path, before ops is imported

from ops import cli
from ops.maintenance.chain import step_main

if __name__ == "__main__":
    cli.run(
        name="clean",
        p=cli.parser("clean", __doc__, pace=True, window=True),
        action=lambda args, config, ui: step_main("clean", args.run, config, ui),
    )
