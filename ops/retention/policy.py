"""The retention decision: a pure function of (files, policy, now).

No I/O and no clock: ``now_ns`` is passed in. Every file that matches a policy comes out
exactly once, either kept or expired, with one reason a person can read.
"""

import heapq
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from ops.config import Policy
from ops.retention.globs import compile_globs

# A clock a few minutes off (NTP stepping, a copied file) is not "from the future".
FUTURE_TOLERANCE_NS = 5 * 60 * 1_000_000_000


@dataclass(frozen=True, slots=True)
class FileInfo:
    path: str  # relative to the policy root, '/'-separated; undecodable bytes as surrogates
    size: int
    mtime_ns: int
    ctime_ns: int
    dev: int
    ino: int


@dataclass(frozen=True, slots=True)
class Decision:
    file: FileInfo
    expire: bool
    rule: str  # the rule that decided: future, settle, keep_last, younger, older_than
    reason: str  # that rule, said for a person


def format_age(ns: int) -> str:
    """A short human age: '3d 4h', '2h 5m', '7m', '12s'."""
    days, rest = divmod(max(0, ns // 1_000_000_000), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m" if minutes else f"{seconds}s"


def matcher(policy: Policy) -> Callable[[str], bool]:
    """Whether a root-relative path is governed by ``policy`` (include, then exclude)."""
    include = compile_globs(policy.include)
    exclude = compile_globs(policy.exclude)

    def matches(path: str) -> bool:
        if include is None or not include.match(path):
            return False
        return exclude is None or not exclude.match(path)

    return matches


def _decide_one(f: FileInfo, policy: Policy, now_ns: int, newest: bool) -> Decision:
    age = now_ns - f.mtime_ns
    if age < -FUTURE_TOLERANCE_NS:
        return Decision(f, False, "future", f"mtime in the future by {format_age(-age)} (check the clock)")
    if age < policy.settle.ns:
        return Decision(f, False, "settle", f"settling: modified {format_age(age)} ago (settle {policy.settle.text})")
    if newest:
        return Decision(f, False, "keep_last", f"keep_last {policy.keep_last}")
    if age >= policy.older_than.ns:
        return Decision(f, True, "older_than", f"older than {policy.older_than.text}")
    return Decision(f, False, "younger", f"younger than {policy.older_than.text} (age {format_age(age)})")


def decide(files: Iterable[FileInfo], policy: Policy, now_ns: int) -> Iterator[Decision]:
    """Decide every file (already matched to ``policy``), streaming.

    Memory is bounded by ``keep_last``: the newest N candidates wait in a heap and are
    decided at the end; every other file is decided as soon as it is pushed out.
    """
    keep = policy.keep_last
    heap: list[tuple[int, str, FileInfo]] = []
    for f in files:
        if keep == 0:
            yield _decide_one(f, policy, now_ns, newest=False)
            continue
        item = (f.mtime_ns, f.path, f)
        if len(heap) < keep:
            heapq.heappush(heap, item)
            continue
        older = heapq.heappushpop(heap, item)
        yield _decide_one(older[2], policy, now_ns, newest=False)
    for _, _, f in sorted(heap, reverse=True):
        yield _decide_one(f, policy, now_ns, newest=True)
