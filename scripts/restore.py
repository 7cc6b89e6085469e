#!/usr/bin/env python3
"""Restore a run's files from a destination: each checked against its SHA-256, mtimes
restored, nothing ever overwritten (conflicts are listed and nothing is written). Without
--to, files go back under their policy's root; with --to DIR, under DIR/<policy>/.
With --file PATH, just that deleted file comes back from its newest verified copy; with
--file GLOB ('*' spans directories), every catalogued file matching, each from its newest.
Every file is checked against the strongest record this host holds (the local state, the
catalogue, else the run's MANIFEST.json); without --dest, each destination holding the run
is tried in turn. A run of another host (or of another policy root) goes into this host's
roots only with --from-other-host; under --to it always may."""

import _bootstrap  # puts the repository root on sys.path, before ops is imported

from ops import cli
from ops.errors import UsageError
from ops.restore.restore import restore, restore_file, restore_files
from ops.state.catalogue import GLOB

if __name__ == "__main__":
    p = cli.parser("restore", __doc__, pace=True)
    p.add_argument("--policy", metavar="NAME", help="restore only this policy's archive")
    p.add_argument("--to", metavar="DIR", help="restore under DIR/<policy>/ instead of the policy root")
    p.add_argument(
        "--dest",
        metavar="NAME",
        help="read from this destination only (default: each holding the run, in turn, until one restores it)",
    )
    p.add_argument(
        "--file",
        metavar="PATH",
        help="restore just this deleted file (its original path) from its newest verified copy, found in the catalogue",
    )
    p.add_argument(
        "--from-other-host",
        action="store_true",
        help="restore a run of another host (or of another "
        "policy root) into this host's policy roots; look at it under --to first",
    )

    def action(args, config, ui):
        if args.file:
            if args.run or args.policy:
                raise UsageError("--file finds its own run and policy; do not combine it with --run or --policy")
            one = restore_files if any(c in args.file for c in GLOB) else restore_file
            return one(config, args.file, ui, to=args.to, dest_name=args.dest, from_other_host=args.from_other_host)
        return restore(
            config,
            args.run,
            ui,
            policy=args.policy,
            to=args.to,
            dest_name=args.dest,
            from_other_host=args.from_other_host,
        )

    cli.run(name="restore", p=p, action=action)
