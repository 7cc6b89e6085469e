#!/usr/bin/env python3
"""The power-cut campaign (make powercut) against the real scripts on a FUSE layer that
forgets what was not made durable; it lives in tools/powercut/, and --help lists its options."""

import sys

import _bootstrap  # puts the repository root on sys.path, before ops is imported

from tools.powercut.cli import main

if __name__ == "__main__":
    sys.exit(main())
