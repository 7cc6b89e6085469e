#!/usr/bin/env python3
"""The benchmark (make bench) of the whole job against a shell pipeline, restic and the
disk; it lives in tools/bench/, and --help says what it runs and where the results go."""

import sys

import _bootstrap  # puts the repository root on sys.path, before ops is imported

from tools.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
