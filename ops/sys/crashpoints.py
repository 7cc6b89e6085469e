"""Named points where a test can have the process SIGKILL itself.

Crash-safety is only proven by crashing. Tests set QTS_OPS_CRASH_AT=<point>[:<n>] and the
process kills itself with SIGKILL the n-th time (default first) it reaches that point: a
real, uncatchable death at an exact place, with no other effect when the variable is unset.
"""

import os
import signal

ENV = "QTS_OPS_CRASH_AT"
_TARGET = os.environ.get(ENV)  # read once: reach() sits on per-file hot paths
_seen: dict[str, int] = {}


def reach(point: str) -> None:
    target = _TARGET
    if not target:
        return
    name, _, nth = target.partition(":")
    if name != point:
        return
    _seen[point] = _seen.get(point, 0) + 1
    if _seen[point] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
