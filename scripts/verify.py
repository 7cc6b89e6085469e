#!/usr/bin/env python3
"""Re-read every archive of the run from every destination and check each member's
SHA-256 against the original's, and every checksum file to the byte."""

import _bootstrap  # puts the repository root on sys.path, before ops is imported

from ops import cli
from ops.maintenance.chain import step_main

if __name__ == "__main__":
    cli.run(
        name="verify",
        p=cli.parser("verify", __doc__, pace=True, window=True),
        action=lambda args, config, ui: step_main("verify", args.run, config, ui),
    )
