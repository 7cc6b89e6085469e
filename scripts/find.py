#!/usr/bin/env python3
"""List where the verified copies of deleted files live: original path, run, destinations,
archive, SHA-256 and deletion time, from the catalogue. FILE is a path or a glob (its *
spans directories). Exits 1 when nothing matches. --json prints one object per line."""

import _bootstrap  # puts the repository root on sys.path, before ops is imported

from ops import cli
from ops.restore.find import find

if __name__ == "__main__":
    p = cli.parser("find", __doc__, run=False)
    p.add_argument("--file", metavar="PATH_OR_GLOB", required=True, help="original path, or a glob over original paths")
    p.add_argument("--json", action="store_true", help="one JSON object per match on stdout")
    cli.run(name="find", p=p, action=lambda args, config, ui: find(config, args.file, ui, as_json=args.json))
