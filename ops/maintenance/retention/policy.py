"""The retention decision: a pure function of (files, policy, now, disk, timezone).

No I/O and no clock: everything it needs is passed in. Every file that matches a policy
comes out exactly once, kept or expired, with the one rule that decided it and a reason a
person can read. Rules are tried in a fixed order; the first that applies decides:

  kept:    protected (protect glob or .ops-keep) > mtime in the future > no date in the
           name (age_from: path) > settling > keep_last > keep_daily/weekly/monthly/yearly
           > younger than min_age
  expired: older than older_than > not kept by the calendar rules (when they alone say
           when files expire) > space pressure (oldest first, until the target is met)
  kept:    everything else ("younger than ...")

``keep_restored`` then keeps, of what would expire, the files restore put back into the
root while their ``restore_grace`` lasts (the marks are passed in, as data).

A policy with calendar rules never expires every file of its series (as restic refuses
to forget the last snapshot): should its rules ever do so, all are kept and it says why.
"""

import heapq
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, tzinfo

from ops.config import Policy, compile_path_date
from ops.config.globs import compile_globs

# A clock a few minutes off (NTP stepping, a copied file) is not "from the future".
FUTURE_TOLERANCE_NS = 5 * 60 * 1_000_000_000
MARKER = ".ops-keep"
NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class FileInfo:
    path: str  # relative to the policy root, '/'-separated; undecodable bytes as surrogates
    size: int
    mtime_ns: int
    ctime_ns: int
    dev: int
    ino: int
    marker: str = ""  # root-relative path of the .ops-keep that protects this file, if any


@dataclass(frozen=True, slots=True)
class Decision:
    file: FileInfo
    expire: bool
    # protect, future, no_date, settle, keep_last, keep_daily.., min_age, older_than, calendar, pressure, younger
    rule: str
    reason: str  # that rule, said for a person


@dataclass(frozen=True)
class Disk:
    """The filesystem holding the root, as measured at scan time, and what the policies
    decided before this one in the same run will free on it (``pending``)."""

    total: int
    free: int
    pending: int = 0


def format_age(ns: int) -> str:
    """A short human age: '3d 4h', '2h 5m', '7m', '12s'."""
    days, rest = divmod(max(0, ns // NS), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m" if minutes else f"{seconds}s"


def format_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def matcher(policy: Policy) -> Callable[[str], bool]:
    """Whether a root-relative path is governed by ``policy`` (include, then exclude)."""
    include = compile_globs(policy.include)
    exclude = compile_globs(policy.exclude)

    def matches(path: str) -> bool:
        if include is None or not include.match(path):
            return False
        return exclude is None or not exclude.match(path)

    return matches


_BUCKETS = {
    "keep_daily": lambda t: t.strftime("%Y-%m-%d"),
    "keep_weekly": lambda t: "{:04d}-W{:02d}".format(*t.isocalendar()[:2]),
    "keep_monthly": lambda t: t.strftime("%Y-%m"),
    "keep_yearly": lambda t: t.strftime("%Y"),
}


class _Rules:
    """The per-file rules of one policy, compiled once."""

    def __init__(self, policy: Policy, now_ns: int, tz: tzinfo | None):
        self.p = policy
        self.now = now_ns
        self.tz = tz
        self.protect = compile_globs(policy.protect)
        self.path_date = compile_path_date(policy.path_date) if policy.age_from == "path" else None

    def when(self, f: FileInfo) -> int | str:
        """The instant (ns) the file's age counts from, or why there is none."""
        if self.path_date is None:
            return f.mtime_ns
        m = self.path_date.search(f.path)
        if not m:
            return "date not found in name"
        g = m.groupdict()
        try:
            t = datetime(
                int(g["y"]), int(g["m"]), int(g["d"]), int(g.get("H") or 0), int(g.get("M") or 0), tzinfo=self.tz
            )
        except (TypeError, ValueError, OverflowError):  # a group that did not match; Feb 30; a 20-digit year
            return f"date in name is not a valid date ({m.group(0)!r})"
        return int(t.timestamp()) * NS  # naive (tz None) is the host's local time

    def fixed(self, f: FileInfo, when: int | str) -> Decision | None:
        """The rules that need no other file: protection, clock, date, settle."""
        if f.marker:
            return Decision(f, False, "protect", f"protected by {f.marker}")
        if self.protect is not None and self.protect.match(f.path):
            return Decision(f, False, "protect", "protected by a protect glob")
        if f.mtime_ns - self.now > FUTURE_TOLERANCE_NS:
            return Decision(
                f, False, "future", f"mtime in the future by {format_age(f.mtime_ns - self.now)} (check the clock)"
            )
        if isinstance(when, str):
            return Decision(f, False, "no_date", when)
        if when - self.now > FUTURE_TOLERANCE_NS:
            return Decision(f, False, "future", f"date in name is in the future by {format_age(when - self.now)}")
        if self.now - f.mtime_ns < self.p.settle.ns:
            return Decision(
                f,
                False,
                "settle",
                f"settling: modified {format_age(self.now - f.mtime_ns)} ago (settle {self.p.settle.text})",
            )
        return None

    def by_age(self, f: FileInfo, when: int) -> Decision | None:
        """min_age, then older_than: the rules that look at this file's age alone."""
        age = self.now - when
        if self.p.min_age.ns and age < self.p.min_age.ns:  # min_age 0s is "no min_age", not a reason
            return Decision(f, False, "min_age", f"younger than min_age {self.p.min_age.text} (age {format_age(age)})")
        if self.p.older_than is not None and age >= self.p.older_than.ns:
            return Decision(f, True, "older_than", f"older than {self.p.older_than.text}")
        return None

    def younger(self, f: FileInfo, when: int) -> Decision:
        age = format_age(self.now - when)
        if self.p.older_than is not None:
            return Decision(f, False, "younger", f"younger than {self.p.older_than.text} (age {age})")
        return Decision(f, False, "younger", f"no rule expires it (age {age})")

    def bucket(self, rule: str, when: int) -> str:
        # whole seconds, floored: a float of the ns would round 23:59:59.9999999 into the next day
        return _BUCKETS[rule](datetime.fromtimestamp(when // NS, self.tz))


def decide(
    files: Iterable[FileInfo], policy: Policy, now_ns: int, disk: Disk | None = None, tz: tzinfo | None = None
) -> Iterator[Decision]:
    """Decide every file (already matched to ``policy``).

    Without calendar or space rules this streams, holding only the ``keep_last`` newest
    candidates; with them it needs the whole series at once (buckets and "oldest first"
    are properties of the set, not of one file).
    """
    rules = _Rules(policy, now_ns, tz)
    if policy.calendar or policy.has_space_rules:
        return iter(_decide_set(list(files), rules, disk))
    return _decide_stream(files, rules)


def keep_restored(
    decisions: Iterable[Decision], restored: dict[tuple[int, int], tuple[int, int, int]] | None, now_ns: int
) -> Iterator[Decision]:
    """``decisions``, with each expiry of a file restore put back turned into a keep while
    its grace lasts. ``restored``: {(dev, ino): (mtime_ns, restored_ns, kept_until_ns)};
    only the same file (same inode, unchanged mtime) counts, so one written anew in its
    place is decided as any other."""
    for d in decisions:
        mark = restored.get((d.file.dev, d.file.ino)) if d.expire and restored else None
        if mark and d.file.mtime_ns == mark[0] and now_ns < mark[2]:
            d = Decision(
                d.file, False, "restored", f"restored {_day(mark[1])}; kept until {_day(mark[2])} (restore_grace)"
            )
        yield d


def keep_open(decisions: Iterable[Decision], writers) -> Iterator[Decision]:
    """``decisions``, with each expiry of a file some process holds open for writing (a
    journal the core keeps open all day, untouched for hours) turned into a keep.
    ``writers``: ops.sys.writers.Writers, one sweep of /proc, or None."""
    for d in decisions:
        held = writers.holder(d.file.dev, d.file.ino) if d.expire and writers else None
        if held:
            d = Decision(d.file, False, "open", held)
        yield d


def _day(ns: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ns // NS))


def _decide_stream(files: Iterable[FileInfo], rules: _Rules) -> Iterator[Decision]:
    keep = rules.p.keep_last
    heap: list[tuple[int, str, int, FileInfo]] = []
    for f in files:
        when = rules.when(f)
        if keep and not isinstance(when, str):
            item = (when, f.path, f.mtime_ns, f)
            if len(heap) < keep:
                heapq.heappush(heap, item)
                continue
            when, _, _, f = heapq.heappushpop(heap, item)
        yield _alone(rules, f, when)
    for when, _, _, f in sorted(heap, reverse=True):
        yield rules.fixed(f, when) or Decision(f, False, "keep_last", f"keep_last {rules.p.keep_last}")


def _alone(rules: _Rules, f: FileInfo, when: int | str) -> Decision:
    return rules.fixed(f, when) or rules.by_age(f, when) or rules.younger(f, when)


def _decide_set(files: list[FileInfo], rules: _Rules, disk: Disk | None) -> list[Decision]:
    p = rules.p
    whens = [rules.when(f) for f in files]
    out: list[Decision | None] = [rules.fixed(f, w) for f, w in zip(files, whens, strict=True)]
    dated = [i for i, w in enumerate(whens) if not isinstance(w, str)]
    newest_first = sorted(dated, key=lambda i: (whens[i], files[i].path), reverse=True)
    for i in newest_first[: p.keep_last]:
        out[i] = out[i] or Decision(files[i], False, "keep_last", f"keep_last {p.keep_last}")
    in_series = [i for i in newest_first if whens[i] - rules.now <= FUTURE_TOLERANCE_NS]
    for rule, count in p.calendar.items():
        last, kept = None, 0
        for i in in_series:
            if kept == count:
                break
            b = rules.bucket(rule, whens[i])
            if b != last:
                last, kept = b, kept + 1
                out[i] = out[i] or Decision(files[i], False, rule, f"{rule} {b}")
    for i in dated:
        out[i] = out[i] or rules.by_age(files[i], whens[i])
    if p.calendar and p.older_than is None:
        said = ", ".join(f"{k} {v}" for k, v in p.calendar.items())
        for i in dated:
            out[i] = out[i] or Decision(files[i], True, "calendar", f"not kept by {said}")
    _apply_pressure(files, whens, out, rules, disk)
    decisions = [d or rules.younger(f, w) for d, f, w in zip(out, files, whens, strict=True)]
    if p.calendar and decisions and all(d.expire for d in decisions):
        decisions = [
            Decision(d.file, False, "series", "series refusal: these rules would expire every file; all kept")
            for d in decisions
        ]
    return decisions


def _apply_pressure(files, whens, out, rules: _Rules, disk: Disk | None) -> None:
    """Expire the oldest undecided files until the size cap and free-space target are met."""
    p = rules.p
    if not p.has_space_rules:
        return
    total = sum(f.size for f in files)
    freed = sum(f.size for f, d in zip(files, out, strict=True) if d is not None and d.expire)
    need, why = 0, []
    if p.max_total_size is not None and total - p.max_total_size.bytes > need:
        need = total - p.max_total_size.bytes
        why.append(f"total {format_size(total)} > max_total_size {p.max_total_size.text}")
    if p.min_free is not None and disk is not None:
        short = p.min_free.of(disk.total) - disk.free - disk.pending
        if short > 0:
            need = max(need, short)
            pending = f" (+{format_size(disk.pending)} other policies free)" if disk.pending else ""
            why.append(f"free {format_size(disk.free)}{pending} < min_free {p.min_free.text}")
    if freed >= need:
        return
    reason = "space pressure: " + "; ".join(why)
    undecided = sorted(
        (i for i, d in enumerate(out) if d is None and not isinstance(whens[i], str)),
        key=lambda i: (whens[i], files[i].path),
    )
    for i in undecided:
        if freed >= need:
            break
        out[i] = Decision(files[i], True, "pressure", reason)
        freed += files[i].size
