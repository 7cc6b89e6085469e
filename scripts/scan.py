#!/usr/bin/env python3
"""Find the files whose retention expired under each policy and record them as a new run
(or as run --run ID). Nothing is deleted or archived by this step."""

import _bootstrap  # puts the repository root on sys.path, before ops is imported

from ops import cli
from ops.maintenance.chain import step_main

if __name__ == "__main__":
    cli.run(
        name="scan",
        p=cli.parser("scan", __doc__, pace=True, window=True, brake=True),
        action=lambda args, config, ui: step_main("scan", args.run, config, ui, args.allow_large_delete),
    )
