"""One find on a catalogue, timed in-process: the index brought up to date, then the query.

The bench runs it as a child of its own (``python -m tools.bench.findtime STATE_DIR PATTERN``)
so that a find's figure is the catalogue's work, not an interpreter's start; it prints one
JSON line: sync_s, query_s, found.
"""

import json
import sys
import time
from pathlib import Path

from ops.state import catalogue, catindex


def main(state_dir: str, pattern: str) -> None:
    t0 = time.perf_counter()
    catindex.sync(catalogue.catalogue_dir(Path(state_dir)))
    t1 = time.perf_counter()
    found = sum(1 for _ in catalogue.find(Path(state_dir), pattern))
    t2 = time.perf_counter()  # the second sync inside find found nothing to do: part of a find's cost
    print(json.dumps({"sync_s": round(t1 - t0, 4), "query_s": round(t2 - t1, 4), "found": found}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
