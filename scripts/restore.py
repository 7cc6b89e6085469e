#!/usr/bin/env python3
"""Restore a run's files from a destination: each checked against its SHA-256, mtimes
restored, nothing ever overwritten (conflicts are listed and nothing is written). Without
--to, files go back under their policy's root; with --to DIR, under DIR/<policy>/."""

import _bootstrap  # the repository root on sys.path, before ops is imported
from ops import cli
from ops.restore import restore

if __name__ == "__main__":
    p = cli.parser("restore", __doc__)
    p.add_argument("--policy", metavar="NAME", help="restore only this policy's archive")
    p.add_argument("--to", metavar="DIR", help="restore under DIR/<policy>/ instead of the policy root")
    p.add_argument("--dest", metavar="NAME", help="read from this destination (default: the first holding the run)")
    cli.run(name="restore", p=p, action=lambda args, config, ui: restore(
        config, args.run, ui, policy=args.policy, to=args.to, dest_name=args.dest))
