#!/usr/bin/env python3
"""Restore a run's files from a destination: each checked against its SHA-256, mtimes
restored, nothing ever overwritten (conflicts are listed and nothing is written). Without
--to, files go back under their policy's root; with --to DIR, under DIR/<policy>/.
With --file PATH, just that deleted file comes back from its newest verified copy."""

import _bootstrap  # the repository root on sys.path, before ops is imported
from ops import cli
from ops.errors import UsageError
from ops.restore import restore, restore_file

if __name__ == "__main__":
    p = cli.parser("restore", __doc__)
    p.add_argument("--policy", metavar="NAME", help="restore only this policy's archive")
    p.add_argument("--to", metavar="DIR", help="restore under DIR/<policy>/ instead of the policy root")
    p.add_argument("--dest", metavar="NAME", help="read from this destination (default: the first holding the run)")
    p.add_argument("--file", metavar="PATH", help="restore just this deleted file (its original path) from its "
                   "newest verified copy, found in the catalogue")

    def action(args, config, ui):
        if args.file:
            if args.run or args.policy:
                raise UsageError("--file finds its own run and policy; do not combine it with --run or --policy")
            return restore_file(config, args.file, ui, to=args.to, dest_name=args.dest)
        return restore(config, args.run, ui, policy=args.policy, to=args.to, dest_name=args.dest)

    cli.run(name="restore", p=p, action=action)
