#!/usr/bin/env python3
"""Rebuild the catalogue (where every deleted file's copies live) from the runs a destination
holds, for a host that lost its state: each run of this host gets the files its MANIFEST.json
and member lists name, checked as restore checks them; a run the catalogue already has is
kept. Deletion times the destination cannot know are marked unknown. make find and make
restore FILE= then work again."""

import _bootstrap  # puts the repository root on sys.path, before ops is imported

from ops import cli
from ops.restore.rebuild import rebuild

if __name__ == "__main__":
    p = cli.parser("catalogue_rebuild", __doc__, run=False)
    p.add_argument("--dest", metavar="NAME", required=True, help="the destination whose runs are read")
    cli.run(name="catalogue-rebuild", p=p, action=lambda args, config, ui: rebuild(config, args.dest, ui))
