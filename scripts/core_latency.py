#!/usr/bin/env python3
"""A stand-in for the trading core: what its journal writes feel while something else runs.

Every --interval (5 ms) it appends a --record (512-byte) record to a journal file and
fdatasyncs it, as an order journal does, and times each append+fdatasync. At the end
(--seconds, or Ctrl-C / SIGTERM) it prints how many it managed, against how many the
interval asks for, and the latency percentiles. Run it idle first, then beside the job
whose effect you want to see (make maintenance), on the disk the real core writes to:

    python3 scripts/core_latency.py --dir /srv/qts/journal --seconds 60
    python3 scripts/core_latency.py --dir /srv/qts/journal --seconds 60 & make maintenance

It needs nothing but Python 3 (no .venv), so it can run on any trading host; it writes
only its own file (removed at the end) in --dir. --json writes the figures as JSON.
"""

import sys

import _bootstrap  # puts the repository root on sys.path; nothing beyond the standard library is imported

from tools.core_latency import main

if __name__ == "__main__":
    sys.exit(main(description=__doc__))
