#!/usr/bin/env python3
"""Write docs/config-reference.md and docs/retention.schema.json from the config's field
tables (ops/config/fields.py). --check writes nothing and exits 1 if either is out of date."""

import argparse
import sys
from pathlib import Path

import _bootstrap  # puts the repository root on sys.path, before ops is imported

from ops.config.reference import generated

REPO = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="scripts/config_reference.py", description=__doc__)
    p.add_argument("--check", action="store_true", help="compare only; exit 1 if a file differs")
    args = p.parse_args()
    stale = []
    for name, text in generated().items():
        path = REPO / name
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(name)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    for name in stale:
        print(f"{name}: {'out of date' if args.check else 'written'}")
    sys.exit(1 if args.check and stale else 0)
