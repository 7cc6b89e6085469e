"""Chaos runs only: put this directory on PYTHONPATH and set QTS_CHAOS_FAULT, and every
toolkit process of the chain opens the fault-injecting destination (faultdest.py).
Without QTS_CHAOS_FAULT it does nothing at all."""

import os

if os.environ.get("QTS_CHAOS_FAULT"):
    import sys
    from pathlib import Path

    # The repository root, for ``ops`` and ``tools``: only this directory is on PYTHONPATH.
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from tools.chaos.inject import faultdest

    faultdest.install()
