"""The maintenance window: when the steps that touch policy data may run. One per process.

An entry of ``window.allow`` is a day or a day range and a span of wall-clock time in the
window's timezone: ``Mon-Fri 17:30-07:30``, ``Sat-Sun 00:00-24:00``. A span that crosses
midnight belongs to the day it starts on (``Fri 17:30-07:30`` ends on Saturday at 07:30),
and a range may wrap the week (``Fri-Mon``).

Outside the window scan, backup, verify, clean, compaction and the chain do nothing and
exit 0. A step already running looks at the window at its safe points (``WINDOW.check``,
between files, members and batches) and stops there with OutsideWindow when it has
closed, leaving the run to be resumed by the next run inside the window. Restore, find,
status and plan never look: they are what an operator runs during an incident.
"""

import math
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ops.errors import OutsideWindow

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_DAY = "|".join(DAYS)
SPAN_RE = re.compile(rf"^({_DAY})(?:-({_DAY}))? ([0-9]{{2}}):([0-9]{{2}})-([0-9]{{2}}):([0-9]{{2}})\Z")
DAY_MINUTES = 24 * 60
# How often a running step looks at the clock: a closed window is noticed within this,
# plus the time to the next safe point. Looking costs a monotonic clock read otherwise.
CHECK_EVERY = 0.25
# Tests move the window's clock (and only it: ages are never skewed) by this many seconds,
# in every process of a run alike, to close a window in the middle of a step.
SKEW_ENV = "QTS_OPS_WINDOW_CLOCK_SKEW"


@dataclass(frozen=True)
class Span:
    """One entry of ``window.allow``: minutes after midnight of each day it starts on."""

    text: str
    days: frozenset[int]  # Mon = 0
    start: int
    end: int  # past DAY_MINUTES when the span crosses midnight

    def holds(self, weekday: int, minute: float) -> bool:
        today = weekday in self.days and self.start <= minute < self.end
        return today or ((weekday - 1) % 7 in self.days and minute + DAY_MINUTES < self.end)


def parse_span(text) -> Span:
    m = SPAN_RE.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"expected a day or day range and a time span like 'Mon-Fri 17:30-07:30', got {text!r}")
    first, last = DAYS.index(m.group(1)), DAYS.index(m.group(2) or m.group(1))
    days = frozenset((first + i) % 7 for i in range((last - first) % 7 + 1))
    h1, m1, h2, m2 = (int(g) for g in m.groups()[2:])
    if h1 > 23 or m1 > 59:
        raise ValueError(f"{text!r}: the span starts at {h1:02}:{m1:02}, not a time of day (00:00 to 23:59)")
    if h2 > 24 or m2 > 59 or (h2 == 24 and m2):
        raise ValueError(f"{text!r}: the span ends at {h2:02}:{m2:02}, not a time of day (00:00 to 24:00)")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if end == start:
        raise ValueError(f"{text!r}: the span starts and ends at the same time; a whole day is 00:00-24:00")
    return Span(text, days, start, end if end > start else end + DAY_MINUTES)


def zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r} (an IANA name like America/New_York)") from None


def is_open(spans: tuple[Span, ...], local: datetime) -> bool:
    minute = local.hour * 60 + local.minute + local.second / 60
    return any(s.holds(local.weekday(), minute) for s in spans)


def _skew() -> float:
    """The tests' skew of the window's clock; a value that is not a finite number is ignored."""
    try:
        skew = float(os.environ.get(SKEW_ENV) or 0)
    except ValueError:
        return 0.0
    return skew if math.isfinite(skew) and abs(skew) < 1e9 else 0.0


class Window:
    def __init__(self):
        self.spans: tuple[Span, ...] | None = None  # None: no window, always open
        self.timezone: str | None = None
        self.ignored = False
        self._skew = _skew()
        self._next_look = 0.0

    def set(self, spans: tuple[Span, ...] | None, timezone: str | None, ignored: bool = False) -> None:
        self.spans, self.timezone, self.ignored = spans, timezone, ignored
        self._next_look = 0.0

    def now(self) -> datetime:
        t = time.time() + self._skew
        return datetime.fromtimestamp(t, zone(self.timezone)) if self.timezone else datetime.fromtimestamp(t)

    @property
    def open(self) -> bool:
        return self.ignored or self.spans is None or is_open(self.spans, self.now())

    def closed_message(self) -> str:
        where = self.timezone or "host time"
        return (
            f"outside the maintenance window ({', '.join(s.text for s in self.spans)}; "
            f"{where} now {self.now():%a %H:%M})"
        )

    def require(self) -> None:
        """Raise OutsideWindow unless the window is open now (a step's start)."""
        self._next_look = time.monotonic() + CHECK_EVERY
        if not self.open:
            raise OutsideWindow(
                self.closed_message(), hint="IGNORE_WINDOW=1 (--ignore-window) runs it anyway, from the keyboard"
            )

    def check(self) -> None:
        """At a safe point of a running step: raise OutsideWindow if the window has closed.
        Looks at the clock at most every CHECK_EVERY seconds."""
        if self.spans is None or self.ignored or time.monotonic() < self._next_look:
            return
        self.require()


WINDOW = Window()
