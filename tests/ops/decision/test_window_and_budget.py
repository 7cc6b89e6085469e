"""The maintenance window's spans read as an operator writes them, and the I/O budget's
arithmetic, as pure functions (the scripts' behaviour is in tests/ops/e2e/test_guard_rails.py)."""

import threading
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from ops.errors import OutsideWindow
from ops.sys import pace
from ops.sys.budget import Budget
from ops.sys.window import Window, is_open, parse_span

NY = ZoneInfo("America/New_York")


def at(day: int, hhmm: str) -> datetime:
    """A time in the first week of June 2026, which starts on a Monday (day 0)."""
    h, m = map(int, hhmm.split(":"))
    return datetime(2026, 6, 1 + day, h, m, tzinfo=NY)


TRADING_HOST = tuple(map(parse_span, ["Mon-Fri 17:30-07:30", "Sat-Sun 00:00-24:00"]))


@pytest.mark.parametrize(
    ("day", "hhmm", "open_"),
    [
        (0, "07:29", False),  # Monday morning: Sunday's span ended at 24:00, Monday's starts at 17:30
        (0, "17:29", False),
        (0, "17:30", True),
        (1, "07:29", True),  # Monday's span crossed midnight: it belongs to Monday, ends Tuesday 07:30
        (1, "07:30", False),
        (4, "23:59", True),
        (5, "07:00", True),  # Friday's span, and Saturday's whole day
        (5, "12:00", True),
        (6, "23:59", True),
        (2, "12:00", False),
    ],
)
def test_the_trading_host_example(day, hhmm, open_):
    assert is_open(TRADING_HOST, at(day, hhmm)) is open_


def test_a_span_crossing_midnight_belongs_to_the_day_it_starts_on():
    friday_night = (parse_span("Fri 17:30-07:30"),)
    assert is_open(friday_night, at(5, "07:00"))  # Saturday morning
    assert not is_open(friday_night, at(5, "08:00"))
    assert not is_open(friday_night, at(4, "07:00"))  # Friday morning: Thursday had no span
    assert not is_open(friday_night, at(0, "07:00"))


def test_a_day_range_may_wrap_the_week():
    span = parse_span("Fri-Mon 10:00-11:00")
    assert span.days == {4, 5, 6, 0}
    assert is_open((span,), at(0, "10:30")) and not is_open((span,), at(1, "10:30"))


@pytest.mark.parametrize(
    "bad",
    ["Mon-Fri 25:00-07:30", "Mon 10:00-24:01", "Mon 24:00-01:00", "Mon 10:00-10:00", "mon 10:00-11:00", "Mon", 3],
)
def test_a_bad_span_is_refused(bad):
    with pytest.raises(ValueError):
        parse_span(bad)


def test_the_window_clock_is_read_in_the_window_timezone(monkeypatch):
    w = Window()
    w.set((parse_span("Mon-Sun 09:00-10:00"),), "America/New_York")
    # 2026-06-03 13:30 UTC is 09:30 in New York (EDT, UTC-4): open there, not in UTC.
    monkeypatch.setattr(time, "time", lambda: datetime(2026, 6, 3, 13, 30, tzinfo=ZoneInfo("UTC")).timestamp())
    assert w.open
    w.set(w.spans, "UTC")
    assert not w.open
    with pytest.raises(OutsideWindow) as exc:
        w.require()
    assert "outside the maintenance window" in exc.value.message and exc.value.code == 0
    w.set(w.spans, "UTC", ignored=True)
    w.require()  # --ignore-window


def test_a_running_step_looks_at_the_clock_only_every_so_often(monkeypatch):
    w = Window()
    w.set((parse_span("Mon-Sun 00:00-24:00"),), "UTC")
    w.require()
    w.spans = (parse_span("Mon 00:00-00:01"),)  # as if the window had closed just now
    w.check()  # within CHECK_EVERY of the last look: not looked at again
    monkeypatch.setattr(time, "monotonic", lambda: w._next_look + 0.01)
    with pytest.raises(OutsideWindow):
        w.check()


def test_a_budget_moves_a_rate_of_bytes_in_about_a_second_and_counts_the_wait():
    before = pace.PACE.throttled_s
    budget = Budget(8 << 20)
    started = time.monotonic()
    for _ in range(8):
        budget.take(1 << 20)
    took = time.monotonic() - started
    assert 0.95 <= took < 1.5
    assert pace.PACE.throttled_s - before >= 0.9


def test_threads_share_one_budget():
    budget = Budget(16 << 20)
    started = time.monotonic()
    threads = [threading.Thread(target=lambda: [budget.take(1 << 20) for _ in range(8)]) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - started >= 0.95  # 16 MiB at 16 MiB/s, whoever took them


def test_no_budget_never_waits():
    budget = Budget(None)
    started = time.monotonic()
    for _ in range(1000):
        budget.take(1 << 30)
    assert time.monotonic() - started < 0.5
