#!/usr/bin/env python3
"""Build a sandbox of synthetic, aged trading data under demo/ with its own config, run
the whole job on it, restore one policy's files and show status. Touches nothing else."""

import argparse
import sys
from pathlib import Path

import _bootstrap  # puts the repository root on sys.path, before ops is imported

from ops.demo import demo

if __name__ == "__main__":
    argparse.ArgumentParser(prog="scripts/demo.py", description=__doc__).parse_args()
    sys.exit(demo(Path(__file__).resolve().parent.parent))
