"""The I/O budget: at most so many bytes per second (``io_limit``, an S3 destination's
``bandwidth``). It works beside the pace (ops/sys/pace.py), not instead of it: the pace
keeps each write small and rests while the disk is slow; the budget caps the volume,
for a link or a disk shared with others.

A token bucket that may go into debt: each transfer takes its bytes when it happens, and
the taker sleeps until the debt is paid (the bytes it moved included). No burst is saved up while idle, so a limit of
16 MiB/s moves 48 MiB in 3 s from the first byte on. Threads share one bucket: each
pays its own debt and everyone's before it, so together they stay within the rate.
The seconds slept are counted as rested (``PACE.add_throttled``): status and the metrics
report them per step.
"""

import io
import threading
import time

from ops.sys.pace import PACE
from ops.sys.window import WINDOW

SLICE = 0.25


class Budget:
    def __init__(self, rate: int | None = None):
        self._lock = threading.Lock()
        self.set(rate)

    def set(self, rate: int | None) -> None:
        """Bytes per second, or None: no limit."""
        self.rate = rate
        self._paid_until = time.monotonic()  # when the bytes taken so far are within the rate

    def take(self, n: int) -> None:
        if not self.rate or n <= 0:
            return
        with self._lock:
            now = time.monotonic()
            self._paid_until = max(self._paid_until, now) + n / self.rate
            wait = self._paid_until - now
        if wait <= 0:
            return
        PACE.add_throttled(wait)
        # In slices: a step's main thread looks at the maintenance window between them, so a
        # long wait never hides its closing (another thread's wait holds the main one back
        # by at most a few blocks).
        main = threading.current_thread() is threading.main_thread()
        end = time.monotonic() + wait
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, SLICE))
            if main:
                WINDOW.check()


class Metered(io.RawIOBase):
    """A raw stream that reads through ``budgets``: BufferedReader over it reads no faster."""

    def __init__(self, raw, *budgets: Budget):
        super().__init__()
        self._raw = raw
        self._budgets = budgets

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._raw.readinto(buffer)
        for budget in self._budgets:
            budget.take(n or 0)
        return n

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


def metered(f, size: int, *budgets: Budget):
    """``f`` (a buffered reader) read within ``budgets``; ``f`` itself when none limits."""
    limiting = [b for b in budgets if b.rate]
    if not limiting:
        return f
    return io.BufferedReader(Metered(f.detach() if hasattr(f, "detach") else f, *limiting), size)


# io_limit: what steps read from the roots and from destinations, and what they write to
# local destinations, each at most this many bytes per second. Set once per process.
READS = Budget()
WRITES = Budget()
