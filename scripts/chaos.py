#!/usr/bin/env python3
"""The fault campaign (make chaos) against the real scripts; it lives in tools/chaos/, and
--help lists its options and fault kinds."""

import sys

import _bootstrap  # puts the repository root on sys.path, before ops is imported

from tools.chaos.cli import main

if __name__ == "__main__":
    sys.exit(main())
