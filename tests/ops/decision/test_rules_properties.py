"""Properties of the retention rules (path dates, calendar series, space pressure, min_age,
protection) over random file sets, policies and time zones (hypothesis).

The oracle never reuses ops' own code for what it checks: a file's age is computed here
from the date this test put in its name (or its mtime), and "eligible for pressure" is
worked out here from the rules' definitions. No example database is written.
"""

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ops.config import Duration, Policy, Size
from ops.maintenance.retention.policy import FUTURE_TOLERANCE_NS, Disk, FileInfo, decide

S = 10**9
H = 3600 * S
D = 24 * H
TODAY = date(2026, 11, 26)
TZS = [ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York"), UTC]
NOW = int(datetime(2026, 11, 26, 4, tzinfo=TZS[0]).timestamp()) * S
SETTINGS = settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

DASH = r"(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})"
EXPIRING = {"older_than", "calendar", "pressure"}
CALENDAR = ("keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
PROTECTED_DIR = "keep/"  # the protect glob used below is "keep/**"

durations = st.sampled_from([0, 60, 600, 3600, 86400, 7 * 86400, 30 * 86400, 365 * 86400])


def dur(seconds: int) -> Duration:
    return Duration(f"{seconds}s", seconds)


@st.composite
def policies(draw, space: bool = True, calendar: bool = True, pressure: bool = False) -> Policy:
    """Any policy; with ``pressure`` one whose cap is set and whose other rules leave files
    for the pressure rule to take (so that it is exercised, not just allowed)."""
    age_from = draw(st.sampled_from(["mtime", "path"]))
    cal = {k: draw(st.sampled_from([0, 0, 1, 2, 3])) if calendar else 0 for k in CALENDAR}
    max_total = min_free = None
    if pressure or (space and draw(st.booleans())):
        max_total = Size("cap", bytes=draw(st.integers(0, 3000)))
    if space and draw(st.booleans()):
        min_free = draw(
            st.one_of(
                st.builds(lambda p: Size(f"{p}%", percent=p), st.sampled_from([0.0, 10.0, 50.0, 99.0])),
                st.builds(lambda n: Size("n", bytes=n), st.integers(0, 3000)),
            )
        )
    if pressure:
        older = draw(st.sampled_from([None, None, 30 * 86400, 365 * 86400]))
        settle, min_age = draw(st.sampled_from([0, 600, 86400])), draw(st.sampled_from([0, 0, 86400, 30 * 86400]))
    else:
        older = draw(st.one_of(st.none(), durations))
        settle, min_age = draw(durations), draw(durations)
    return Policy(
        name="p",
        root=Path("/nonexistent/root"),
        include=("**",),
        exclude=(),
        older_than=dur(older) if older is not None else None,
        settle=dur(settle),
        keep_last=draw(st.integers(0, 4)),
        missing_ok=False,
        age_from=age_from,
        path_date=DASH if age_from == "path" else None,
        min_age=dur(min_age),
        max_total_size=max_total,
        min_free=min_free,
        protect=("keep/**",) if draw(st.booleans()) else (),
        **cal,
    )


@st.composite
def file_sets(draw, pol: Policy, tz):
    """Files with unique paths; returns (files, when) where when[path] is this test's own idea
    of the instant the file's age counts from (None: no valid date in its name)."""
    files, when = [], {}
    for i in range(draw(st.integers(0, 14))):
        folder = draw(st.sampled_from(["", "", "a/", PROTECTED_DIR]))
        mtime = NOW - draw(
            st.one_of(
                st.integers(-3 * D, 1000 * D), st.sampled_from([0, 5 * 60 * S, 10 * 60 * S, D, 30 * D, -10 * 60 * S])
            )
        )
        kind = draw(st.sampled_from(["dated", "dated", "dated", "undated", "invalid"]))
        days_back = draw(st.integers(-5, 1200))
        day = TODAY - timedelta(days=days_back)
        if kind == "dated":
            name = f"{folder}{i:02d}-{day:%Y-%m-%d}.csv"
            path_when = int(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()) * S
        elif kind == "undated":
            name, path_when = f"{folder}{i:02d}-notes.txt", None
        else:
            name, path_when = f"{folder}{i:02d}-2026-02-30.csv", None
        marker = "a/.ops-keep" if folder == "a/" and draw(st.integers(0, 3)) == 0 else ""
        files.append(FileInfo(name, draw(st.integers(0, 400)), mtime, NOW, 5, i, marker))
        when[name] = path_when if pol.age_from == "path" else mtime
    return files, when


@st.composite
def scenarios(draw, space: bool = True, calendar: bool = True, pressure: bool = False):
    pol = draw(policies(space=space, calendar=calendar, pressure=pressure))
    tz = draw(st.sampled_from(TZS))
    files, when = draw(file_sets(pol, tz))
    disk = Disk(total=10_000, free=draw(st.integers(0, 10_000))) if draw(st.booleans()) else None
    return pol, files, when, tz, disk


def decided(pol, files, tz, disk, now=NOW):
    return {d.file.path: d for d in decide(files, pol, now, disk=disk, tz=tz)}


def is_protected(pol: Policy, f: FileInfo) -> bool:
    return bool(f.marker) or (bool(pol.protect) and f.path.startswith(PROTECTED_DIR))


@SETTINGS
@given(scenarios())
def test_keep_and_expire_partition_the_input_with_one_reason_each(case):
    pol, files, _when, tz, disk = case
    out = list(decide(files, pol, NOW, disk=disk, tz=tz))
    assert sorted(d.file.ino for d in out) == sorted(f.ino for f in files)
    assert {d.file for d in out} == set(files)
    for d in out:
        assert isinstance(d.rule, str) and d.rule
        assert isinstance(d.reason, str) and d.reason.strip() and "\n" not in d.reason
        assert d.expire == (d.rule in EXPIRING), d


@SETTINGS
@given(scenarios())
def test_protected_files_are_never_expired(case):
    pol, files, _when, tz, disk = case
    out = decided(pol, files, tz, disk)
    for f in files:
        if is_protected(pol, f):
            assert not out[f.path].expire and out[f.path].rule == "protect", out[f.path]


@SETTINGS
@given(scenarios(space=False), st.sampled_from([0, 60, 86400, 30 * 86400]), st.sampled_from([0, 1, 86400, 400 * 86400]))
def test_raising_older_than_never_expires_more(case, low, extra):
    pol, files, _when, tz, disk = case
    lower = replace(pol, older_than=dur(low))
    higher = replace(pol, older_than=dur(low + extra))
    expired_low = {p for p, d in decided(lower, files, tz, disk).items() if d.expire}
    expired_high = {p for p, d in decided(higher, files, tz, disk).items() if d.expire}
    assert expired_high <= expired_low


@SETTINGS
@given(scenarios())
def test_no_expired_file_is_younger_than_min_age(case):
    pol, files, when, tz, disk = case
    for path, d in decided(pol, files, tz, disk).items():
        if d.expire:
            assert when[path] is not None, f"{path} has no date yet was expired ({d.reason})"
            assert NOW - when[path] >= pol.min_age.ns, d


@SETTINGS
@given(scenarios())
def test_undated_or_future_files_are_never_expired(case):
    pol, files, when, tz, disk = case
    out = decided(pol, files, tz, disk)
    for f in files:
        if when[f.path] is None or when[f.path] - NOW > FUTURE_TOLERANCE_NS or f.mtime_ns - NOW > FUTURE_TOLERANCE_NS:
            assert not out[f.path].expire, out[f.path]


@SETTINGS
@given(scenarios())
def test_a_calendar_policy_never_expires_every_file(case):
    pol, files, _when, tz, disk = case
    assume(pol.calendar and files)
    assert not all(d.expire for d in decided(pol, files, tz, disk).values())


@SETTINGS
@given(scenarios(calendar=False, pressure=True))
def test_pressure_expires_oldest_eligible_first_and_only_as_much_as_needed(case):
    pol, files, when, tz, disk = case
    out = decided(pol, files, tz, disk)

    def eligible(f: FileInfo) -> bool:
        w = when[f.path]
        return (
            w is not None
            and not is_protected(pol, f)
            and f.mtime_ns - NOW <= FUTURE_TOLERANCE_NS
            and w - NOW <= FUTURE_TOLERANCE_NS
            and NOW - f.mtime_ns >= pol.settle.ns
            and not (pol.min_age.ns and NOW - w < pol.min_age.ns)
            and f.path not in newest
        )

    dated = sorted((f for f in files if when[f.path] is not None), key=lambda f: (when[f.path], f.path), reverse=True)
    newest = {f.path for f in dated[: pol.keep_last]}
    candidates = sorted((f for f in files if eligible(f)), key=lambda f: (when[f.path], f.path))
    by_pressure = [f for f in candidates if out[f.path].rule == "pressure"]
    undecided = [f for f in candidates if out[f.path].rule != "older_than"]
    # oldest first: the pressure-expired files are a prefix of the eligible ones, oldest first
    assert undecided[: len(by_pressure)] == by_pressure
    for f in files:
        if out[f.path].rule == "pressure":
            assert f in candidates, f"{f.path} was not eligible yet pressure expired it"

    need = 0
    total = sum(f.size for f in files)
    if pol.max_total_size is not None:
        need = total - pol.max_total_size.bytes
    if pol.min_free is not None and disk is not None:
        need = max(need, pol.min_free.of(disk.total) - disk.free)
    freed = sum(f.size for f in files if out[f.path].expire)
    if by_pressure:
        # only as much as needed: without the last one expired, the target was not met yet
        assert freed - by_pressure[-1].size < need
    if freed < need:
        assert by_pressure == undecided, "the target is not met, yet an eligible file was kept"


@SETTINGS
@given(scenarios(calendar=False, pressure=True))
def test_the_kept_total_is_under_the_cap_whenever_enough_eligible_files_exist(case):
    pol, files, when, tz, disk = case
    out = decided(pol, files, tz, disk)
    dated = sorted((f for f in files if when[f.path] is not None), key=lambda f: (when[f.path], f.path), reverse=True)
    newest = {f.path for f in dated[: pol.keep_last]}
    untouchable = [
        f
        for f in files
        if when[f.path] is None
        or is_protected(pol, f)
        or f.path in newest
        or f.mtime_ns - NOW > FUTURE_TOLERANCE_NS
        or when[f.path] - NOW > FUTURE_TOLERANCE_NS
        or NOW - f.mtime_ns < pol.settle.ns
        or (pol.min_age.ns and NOW - when[f.path] < pol.min_age.ns)
    ]
    kept_total = sum(f.size for f in files if not out[f.path].expire)
    if sum(f.size for f in untouchable) <= pol.max_total_size.bytes:
        assert kept_total <= pol.max_total_size.bytes
    else:
        assert kept_total == sum(f.size for f in untouchable)


@SETTINGS
@given(scenarios(space=False, calendar=False))
def test_streaming_and_whole_set_decisions_agree(case):
    """Without calendar or space rules decide() streams; a cap that is never reached sends
    the same files through the whole-set path, which must say exactly the same."""
    pol, files, _when, tz, _disk = case
    streamed = {(d.file.path, d.expire, d.rule, d.reason) for d in decide(files, pol, NOW, tz=tz)}
    whole = replace(pol, max_total_size=Size("1TiB", bytes=2**40))
    as_set = {(d.file.path, d.expire, d.rule, d.reason) for d in decide(files, whole, NOW, tz=tz)}
    assert streamed == as_set
