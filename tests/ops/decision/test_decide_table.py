"""ops.maintenance.retention.policy.decide: which file expires and why, against a fixed clock.

Pure function, so no sandbox: FileInfo records in, Decisions out. Every case is one row.
"""

import itertools
from pathlib import Path

import pytest

from ops.config import Policy, parse_duration
from ops.maintenance.retention.policy import FUTURE_TOLERANCE_NS, Decision, FileInfo, decide

NOW = 1_790_000_000 * 10**9  # a fixed "now" in ns (Sept 2026); nothing reads the real clock
S = 10**9
M = 60 * S
H = 60 * M
D = 24 * H
RULES = {"future", "settle", "keep_last", "younger", "older_than"}


def policy(older_than="30d", settle="10m", keep_last=0) -> Policy:
    return Policy(
        name="logs",
        root=Path("/nonexistent/root"),
        include=("**",),
        exclude=(),
        older_than=parse_duration(older_than),
        settle=parse_duration(settle),
        keep_last=keep_last,
        missing_ok=False,
    )


def fi(path: str, age_ns: int, ino: int = 1) -> FileInfo:
    """A file whose mtime is ``age_ns`` before NOW (negative: in the future)."""
    return FileInfo(path=path, size=1, mtime_ns=NOW - age_ns, ctime_ns=NOW - age_ns, dev=1, ino=ino)


def decide_one(age_ns: int, **kw) -> Decision:
    (d,) = list(decide([fi("a.log", age_ns)], policy(**kw), NOW))
    return d


def assert_well_formed(d: Decision) -> None:
    assert d.rule in RULES
    assert isinstance(d.reason, str) and d.reason.strip()
    assert "\n" not in d.reason
    # exactly one rule decides, and only the age rule may expire a file
    assert d.expire == (d.rule == "older_than")


# --- one file, one policy: the age rules and their exact boundaries -----------------------

SINGLE = [
    # (id, age_ns, policy kwargs, expire, rule)
    ("exactly_older_than_expires", 30 * D, {}, True, "older_than"),
    ("older_than_minus_1ns_keeps", 30 * D - 1, {}, False, "younger"),
    ("older_than_plus_1ns_expires", 30 * D + 1, {}, True, "older_than"),
    ("very_old_expires", 3650 * D, {}, True, "older_than"),
    ("weeks_unit_boundary", 2 * 7 * D, {"older_than": "2w"}, True, "older_than"),
    ("weeks_unit_minus_1ns", 2 * 7 * D - 1, {"older_than": "2w"}, False, "younger"),
    ("seconds_unit_boundary", 90 * S, {"older_than": "90s", "settle": "0s"}, True, "older_than"),
    # settle wins over an expired age: the core may still be writing the file
    ("within_settle_kept_though_old_enough", 5 * M, {"older_than": "1m", "settle": "10m"}, False, "settle"),
    ("settle_minus_1ns_kept", 10 * M - 1, {"older_than": "1m", "settle": "10m"}, False, "settle"),
    ("exactly_settle_expires", 10 * M, {"older_than": "1m", "settle": "10m"}, True, "older_than"),
    ("settle_longer_than_older_than", 2 * H, {"older_than": "1h", "settle": "1d"}, False, "settle"),
    ("older_than_zero_still_settles", 1 * S, {"older_than": "0s", "settle": "10s"}, False, "settle"),
    ("older_than_zero_settle_zero_expires_now", 0, {"older_than": "0s", "settle": "0s"}, True, "older_than"),
    ("just_modified_is_settling", 0, {}, False, "settle"),
    # mtime in the future: beyond the tolerance it is a clock problem, kept and said so
    ("future_beyond_tolerance", -FUTURE_TOLERANCE_NS - 1, {}, False, "future"),
    ("far_future", -400 * D, {}, False, "future"),
    ("far_future_even_with_zero_durations", -400 * D, {"older_than": "0s", "settle": "0s"}, False, "future"),
    # within the tolerance the file is treated as any fresh file
    ("future_exactly_at_tolerance_is_normal", -FUTURE_TOLERANCE_NS, {}, False, "settle"),
    ("future_by_1ns_is_normal", -1, {}, False, "settle"),
    ("future_within_tolerance_settle_zero", -1 * M, {"older_than": "0s", "settle": "0s"}, False, "settle"),
]


@pytest.mark.parametrize("age_ns, kw, expire, rule", [c[1:] for c in SINGLE], ids=[c[0] for c in SINGLE])
def test_single_file_decision(age_ns, kw, expire, rule):
    d = decide_one(age_ns, **kw)
    assert (d.expire, d.rule) == (expire, rule), d.reason
    assert_well_formed(d)


REASONS = [
    # (id, age_ns, policy kwargs, words the reason must contain)
    ("older_than_names_the_setting", 31 * D, {}, ["older than", "30d"]),
    ("younger_names_setting_and_age", 3 * D, {}, ["younger", "30d", "3d"]),
    ("settle_names_setting_and_age", 7 * M, {}, ["settl", "10m", "7m"]),
    ("future_says_future_and_by_how_much", -2 * D, {}, ["future", "2d"]),
    ("keep_last_names_n", 99 * D, {"keep_last": 3}, ["keep_last", "3"]),
]


@pytest.mark.parametrize("age_ns, kw, words", [c[1:] for c in REASONS], ids=[c[0] for c in REASONS])
def test_reason_tells_a_person_which_rule_and_setting(age_ns, kw, words):
    d = decide_one(age_ns, **kw)
    for w in words:
        assert w in d.reason, (w, d.reason)


# --- keep_last: the newest N are kept whatever their age ---------------------------------

KEEP_LAST = [
    # (id, keep_last, [(path, age_ns)], paths that must be kept by keep_last)
    ("newest_two_of_four_kept", 2, [("a", 40 * D), ("b", 50 * D), ("c", 60 * D), ("d", 70 * D)], {"a", "b"}),
    ("keep_more_than_exist_keeps_all", 10, [("a", 40 * D), ("b", 50 * D)], {"a", "b"}),
    ("keep_zero_keeps_none", 0, [("a", 40 * D), ("b", 50 * D)], set()),
    ("newest_by_mtime_not_by_input_order", 1, [("z-old", 90 * D), ("a-new", 31 * D), ("m-mid", 60 * D)], {"a-new"}),
    (
        "ties_broken_by_path_the_greater_path_counts_newer",
        2,
        [("b", 40 * D), ("c", 40 * D), ("a", 40 * D), ("old", 90 * D)],
        {"b", "c"},
    ),
]


@pytest.mark.parametrize("keep, files, kept_by_keep_last", [c[1:] for c in KEEP_LAST], ids=[c[0] for c in KEEP_LAST])
def test_keep_last_keeps_newest_n_whatever_their_age(keep, files, kept_by_keep_last):
    infos = [fi(p, age, ino=i) for i, (p, age) in enumerate(files)]
    for perm in itertools.permutations(infos):  # the answer must not depend on walk order
        out = {d.file.path: d for d in decide(perm, policy(keep_last=keep), NOW)}
        assert set(out) == {p for p, _ in files}
        assert {p for p, d in out.items() if d.rule == "keep_last"} == kept_by_keep_last
        # every file here is older than 30d: all the others expire
        assert {p for p, d in out.items() if d.expire} == {p for p, _ in files} - kept_by_keep_last
        for d in out.values():
            assert_well_formed(d)


def test_keep_last_slots_are_filled_by_the_newest_even_when_they_are_settling():
    # The newest file (being written) is one of the newest N: it is kept by settle, and
    # it still takes a keep_last slot, so only one old file is kept by keep_last.
    files = [fi("current.log", 1 * M, 1), fi("yesterday.log", 40 * D, 2), fi("older.log", 50 * D, 3)]
    out = {d.file.path: d for d in decide(files, policy(keep_last=2), NOW)}
    assert out["current.log"].rule == "settle"
    assert out["yesterday.log"].rule == "keep_last"
    assert out["older.log"].expire


def test_keep_last_keeps_young_files_as_keep_last_not_as_expired():
    files = [fi("new", 1 * D, 1), fi("old", 40 * D, 2)]
    out = {d.file.path: d for d in decide(files, policy(keep_last=1), NOW)}
    assert (out["new"].expire, out["new"].rule) == (False, "keep_last")
    assert (out["old"].expire, out["old"].rule) == (True, "older_than")


# --- the whole output -----------------------------------------------------------------------


def test_every_file_comes_out_exactly_once_with_one_reason_and_rule():
    ages = [-400 * D, -FUTURE_TOLERANCE_NS - 1, -1, 0, 5 * M, 10 * M, 29 * D, 30 * D - 1, 30 * D, 31 * D, 500 * D]
    files = [fi(f"f{i:02d}.log", a, ino=i) for i, a in enumerate(ages)]
    for keep in (0, 1, 3, len(files) + 1):
        out = list(decide(files, policy(keep_last=keep), NOW))
        assert sorted(d.file.path for d in out) == sorted(f.path for f in files)
        assert all(d.file in files for d in out)
        for d in out:
            assert_well_formed(d)


def test_decide_streams_and_accepts_a_generator():
    gen = (fi(f"{i}.log", 40 * D, ino=i) for i in range(1000))
    out = decide(gen, policy(keep_last=2), NOW)
    first = next(out)  # decided before the input is exhausted
    assert first.expire
    assert 1 + sum(1 for _ in out) == 1000


def test_empty_input_gives_no_decisions():
    assert list(decide([], policy(keep_last=3), NOW)) == []
