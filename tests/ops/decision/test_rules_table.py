"""The retention rules for trading data, one row per case: path dates, calendar series
(keep_daily/weekly/monthly/yearly), space pressure (max_total_size, min_free), min_age,
protection (protect globs and .ops-keep markers) and the series refusal.

ops.maintenance.retention.policy.decide is pure: FileInfo records, a fixed clock and an explicit
time zone in, one Decision per file out. Every expected reason below was worked out by
hand from the rule, not copied from the implementation's output.
"""

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ops.config import Policy, parse_duration, parse_size
from ops.maintenance.retention.policy import FUTURE_TOLERANCE_NS, Decision, Disk, FileInfo, decide

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
S = 10**9
M = 60 * S
H = 60 * M
D = 24 * H

KEPT_RULES = {
    "protect",
    "future",
    "no_date",
    "settle",
    "keep_last",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
    "min_age",
    "younger",
    "series",
}
EXPIRING_RULES = {"older_than", "calendar", "pressure"}

SLASH = r"(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})"
DASH = r"(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})"
STAMP = r"(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})T(?P<H>\d{2})(?P<M>\d{2})"


def at(tz, y, mo, d, h=0, mi=0, s=0) -> int:
    """A local wall-clock time in ``tz`` as ns since the epoch (fold=0 for gaps and repeats)."""
    return int(datetime(y, mo, d, h, mi, s, tzinfo=tz).timestamp()) * S


NOW = at(BERLIN, 2026, 11, 26, 4)  # Thursday 2026-11-26 04:00 CET; nothing reads the real clock


def policy(
    older_than=None,
    settle="10m",
    keep_last=0,
    age_from="mtime",
    path_date=None,
    min_age="0s",
    max_total_size=None,
    min_free=None,
    protect=(),
    **calendar,
) -> Policy:
    return Policy(
        name="ticks",
        root=Path("/nonexistent/root"),
        include=("**",),
        exclude=(),
        older_than=parse_duration(older_than) if older_than is not None else None,
        settle=parse_duration(settle),
        keep_last=keep_last,
        missing_ok=False,
        age_from=age_from,
        path_date=path_date,
        min_age=parse_duration(min_age),
        max_total_size=parse_size(max_total_size, False) if max_total_size is not None else None,
        min_free=parse_size(min_free, True) if min_free is not None else None,
        protect=tuple(protect),
        **calendar,
    )


def paths_policy(pattern=SLASH, **kw) -> Policy:
    return policy(age_from="path", path_date=pattern, **kw)


@dataclass
class F:
    """A file of a row: its mtime defaults to an hour before the row's clock (settled, fresh)."""

    path: str
    mtime: int | None = None
    size: int = 1
    marker: str = ""


def run(files: list[F], pol: Policy, now: int = NOW, tz=BERLIN, disk: Disk | None = None) -> dict[str, Decision]:
    infos = [
        FileInfo(f.path, f.size, now - H if f.mtime is None else f.mtime, now, 1, i, f.marker)
        for i, f in enumerate(files)
    ]
    out = list(decide(infos, pol, now, disk=disk, tz=tz))
    # a partition: every file exactly once, each with exactly one readable reason
    assert sorted(d.file.ino for d in out) == list(range(len(infos)))
    for d in out:
        assert d.rule in KEPT_RULES | EXPIRING_RULES, d
        assert d.expire == (d.rule in EXPIRING_RULES), d
        assert isinstance(d.reason, str) and d.reason.strip() and "\n" not in d.reason, d
    return {d.file.path: d for d in out}


def check(got: dict[str, Decision], expected: dict[str, tuple]) -> None:
    """expected: path -> (expire, rule) or (expire, rule, exact reason)."""
    assert set(got) == set(expected)
    for path, want in expected.items():
        d = got[path]
        assert (d.expire, d.rule) == want[:2], f"{path}: {d.rule} / {d.reason}"
        if len(want) == 3:
            assert d.reason == want[2], path


@dataclass
class Row:
    id: str
    pol: Policy
    files: list[F]
    expected: dict[str, tuple]
    now: int = NOW
    tz: object = BERLIN
    disk: Disk | None = None


def params(rows: list[Row]):
    return pytest.mark.parametrize("row", rows, ids=[r.id for r in rows])


# --- path dates --------------------------------------------------------------------------

OLD = (True, "older_than", "older than 30d")
NO_DATE = (False, "no_date", "date not found in name")

PATH_DATES = [
    Row(
        "slash_date_in_directories_expires",
        paths_policy(older_than="30d"),
        [F("ticks/2026/01/05.parquet")],
        {"ticks/2026/01/05.parquet": OLD},
    ),
    Row(
        "dash_date_in_file_name_expires",
        paths_policy(DASH, older_than="30d"),
        [F("fills-2026-01-05.csv")],
        {"fills-2026-01-05.csv": OLD},
    ),
    Row(
        "date_found_in_a_directory_name",
        paths_policy(DASH, older_than="30d"),
        [F("venue-a/2026-01-05/fills.csv")],
        {"venue-a/2026-01-05/fills.csv": OLD},
    ),
    Row(
        "young_path_date_kept_with_its_age",
        paths_policy(older_than="30d"),
        [F("ticks/2026/11/20.parquet")],
        {"ticks/2026/11/20.parquet": (False, "younger", "younger than 30d (age 6d 4h)")},
    ),
    Row(
        "no_date_in_name_kept",
        paths_policy(older_than="30d"),
        [F("ticks/README.txt", mtime=NOW - 400 * D)],
        {"ticks/README.txt": NO_DATE},
    ),
    Row(
        "feb_30_is_not_a_date_kept",
        paths_policy(older_than="30d"),
        [F("ticks/2026/02/30.parquet")],
        {"ticks/2026/02/30.parquet": (False, "no_date", "date in name is not a valid date ('2026/02/30')")},
    ),
    Row(
        "feb_29_of_a_common_year_kept",
        paths_policy(older_than="30d"),
        [F("ticks/2027/02/29.parquet")],
        {"ticks/2027/02/29.parquet": (False, "no_date", "date in name is not a valid date ('2027/02/29')")},
    ),
    Row(
        "leap_day_2024_is_a_date_and_expires",
        paths_policy(older_than="30d"),
        [F("ticks/2024/02/29.parquet")],
        {"ticks/2024/02/29.parquet": OLD},
    ),
    Row(
        "leap_day_2028_is_a_date_in_the_future",
        paths_policy(older_than="30d"),
        [F("ticks/2028/02/29.parquet")],
        {"ticks/2028/02/29.parquet": (False, "future", "date in name is in the future by 459d 20h")},
    ),
    Row(
        "future_path_date_kept_whatever_the_mtime",
        paths_policy(older_than="0s"),
        [F("ticks/2026/12/01.parquet", mtime=NOW - 400 * D)],
        {"ticks/2026/12/01.parquet": (False, "future", "date in name is in the future by 4d 20h")},
    ),
    Row(
        "hour_and_minute_exactly_older_than_expires",
        paths_policy(STAMP, older_than="1h"),
        [F("bars/20261126T0300.csv", mtime=NOW - 2 * H)],
        {"bars/20261126T0300.csv": (True, "older_than", "older than 1h")},
    ),
    Row(
        "hour_and_minute_one_minute_short_kept",
        paths_policy(STAMP, older_than="1h"),
        [F("bars/20261126T0301.csv", mtime=NOW - 2 * H)],
        {"bars/20261126T0301.csv": (False, "younger", "younger than 1h (age 59m)")},
    ),
    Row(
        "path_date_4m_ahead_is_within_clock_tolerance",
        paths_policy(STAMP, older_than="1h"),
        [F("bars/20261126T0404.csv")],
        {"bars/20261126T0404.csv": (False, "younger", "younger than 1h (age 0s)")},
    ),
    Row(
        "path_date_6m_ahead_is_the_future",
        paths_policy(STAMP, older_than="1h"),
        [F("bars/20261126T0406.csv")],
        {"bars/20261126T0406.csv": (False, "future", "date in name is in the future by 6m")},
    ),
    Row(
        "hour_25_is_not_a_time_kept",
        paths_policy(STAMP, older_than="1h"),
        [F("bars/20261126T2500.csv")],
        {"bars/20261126T2500.csv": (False, "no_date", "date in name is not a valid date ('20261126T2500')")},
    ),
    # the date is in the name, but the core may still be writing the file
    Row(
        "old_path_date_with_settling_mtime_kept",
        paths_policy(older_than="30d"),
        [F("ticks/2026/01/05.parquet", mtime=NOW - M)],
        {"ticks/2026/01/05.parquet": (False, "settle", "settling: modified 1m ago (settle 10m)")},
    ),
    Row(
        "old_path_date_with_future_mtime_kept",
        paths_policy(older_than="30d"),
        [F("ticks/2026/01/05.parquet", mtime=NOW + D)],
        {"ticks/2026/01/05.parquet": (False, "future", "mtime in the future by 1d (check the clock)")},
    ),
    # an ancient mtime does not matter: the name says how old the data is
    Row(
        "young_path_date_with_ancient_mtime_kept",
        paths_policy(older_than="30d"),
        [F("ticks/2026/11/25.parquet", mtime=NOW - 900 * D)],
        {"ticks/2026/11/25.parquet": (False, "younger", "younger than 30d (age 1d 4h)")},
    ),
    # a pattern whose year is optional: a name without the year has no date (not a crash)
    Row(
        "optional_year_group_not_present_kept",
        paths_policy(r"(?:(?P<y>\d{4})-)?(?P<m>\d{2})-(?P<d>\d{2})", older_than="30d"),
        [F("fills-01-05.csv"), F("fills-2026-01-05.csv")],
        {"fills-01-05.csv": (False, "no_date"), "fills-2026-01-05.csv": OLD},
    ),
    # a digit run far too long for a year: no date (not a crash)
    Row(
        "absurdly_long_year_kept",
        paths_policy(r"(?P<y>\d+)-(?P<m>\d{2})-(?P<d>\d{2})", older_than="30d"),
        [F("run-99999999999999999999-01-05.csv")],
        {"run-99999999999999999999-01-05.csv": (False, "no_date")},
    ),
]

# the same midnight is 6 hours later in New York: whether it is a day old depends on the zone
TZ_ROWS = [
    Row(
        "path_date_is_local_midnight_in_berlin",
        paths_policy(DASH, older_than="1d"),
        [F("fills-2026-11-25.csv")],
        {"fills-2026-11-25.csv": (True, "older_than", "older than 1d")},
        now=at(BERLIN, 2026, 11, 26),
        tz=BERLIN,
    ),
    Row(
        "path_date_is_local_midnight_in_new_york",
        paths_policy(DASH, older_than="1d"),
        [F("fills-2026-11-25.csv")],
        {"fills-2026-11-25.csv": (False, "younger", "younger than 1d (age 18h)")},
        now=at(BERLIN, 2026, 11, 26),
        tz=NEW_YORK,
    ),
    Row(
        "exactly_older_than_by_path_date_expires",
        paths_policy(older_than="30d"),
        [F("ticks/2026/10/27.parquet")],
        {"ticks/2026/10/27.parquet": OLD},
        now=at(BERLIN, 2026, 10, 27) + 30 * D,
    ),
    Row(
        "one_ns_short_of_older_than_by_path_date_kept",
        paths_policy(older_than="30d"),
        [F("ticks/2026/10/27.parquet")],
        {"ticks/2026/10/27.parquet": (False, "younger", "younger than 30d (age 29d 23h)")},
        now=at(BERLIN, 2026, 10, 27) + 30 * D - 1,
    ),
    Row(
        "exactly_older_than_by_path_date_in_new_york",
        paths_policy(older_than="30d"),
        [F("ticks/2026/10/27.parquet")],
        {"ticks/2026/10/27.parquet": OLD},
        now=at(NEW_YORK, 2026, 10, 27) + 30 * D,
        tz=NEW_YORK,
    ),
    Row(
        "one_ns_short_in_new_york_kept",
        paths_policy(older_than="30d"),
        [F("ticks/2026/10/27.parquet")],
        {"ticks/2026/10/27.parquet": (False, "younger")},
        now=at(NEW_YORK, 2026, 10, 27) + 30 * D - 1,
        tz=NEW_YORK,
    ),
    # older_than is a duration, not a count of calendar days: across the October DST change
    # 30d after local midnight is 23:00 local
    Row(
        "older_than_is_a_duration_across_dst",
        paths_policy(older_than="30d"),
        [F("ticks/2026/10/20.parquet")],
        {"ticks/2026/10/20.parquet": OLD},
        now=at(BERLIN, 2026, 11, 18, 23),
    ),
    Row(
        "older_than_across_dst_one_second_short",
        paths_policy(older_than="30d"),
        [F("ticks/2026/10/20.parquet")],
        {"ticks/2026/10/20.parquet": (False, "younger")},
        now=at(BERLIN, 2026, 11, 18, 22, 59, 59),
    ),
    # on the leap day itself, in 2028
    Row(
        "leap_day_2028_expires_once_old_enough",
        paths_policy(older_than="30d"),
        [F("ticks/2028/02/29.parquet"), F("ticks/2028/03/01.parquet")],
        {
            "ticks/2028/02/29.parquet": OLD,
            "ticks/2028/03/01.parquet": (False, "younger", "younger than 30d (age 29d 23h)"),
        },
        now=at(BERLIN, 2028, 3, 31),
    ),
]


@params(PATH_DATES + TZ_ROWS)
def test_path_date_rule(row):
    check(run(row.files, row.pol, row.now, row.tz, row.disk), row.expected)


# --- calendar series: keep_daily / weekly / monthly / yearly --------------------------------


def cal(**kw) -> Policy:
    return policy(**kw)


def b(y, mo, d, h=0, mi=0, s=0, tz=BERLIN) -> int:
    return at(tz, y, mo, d, h, mi, s)


DAILY2 = "not kept by keep_daily 2"
OCT1_TO_NOV20 = [date(2026, 10, 1) + timedelta(days=i) for i in range(51)]

CALENDAR = [
    Row(
        "keep_daily_keeps_the_newest_of_each_of_the_newest_days",
        cal(keep_daily=2),
        [
            F("a", b(2026, 11, 3, 20)),
            F("b", b(2026, 11, 3, 8)),
            F("c", b(2026, 11, 2, 12)),
            F("d", b(2026, 11, 1, 9)),
            F("e", b(2026, 10, 20, 10)),
        ],
        {
            "a": (False, "keep_daily", "keep_daily 2026-11-03"),
            "b": (True, "calendar", DAILY2),
            "c": (False, "keep_daily", "keep_daily 2026-11-02"),
            "d": (True, "calendar", DAILY2),
            "e": (True, "calendar", DAILY2),
        },
    ),
    # restic semantics: days without a file do not use up a slot
    Row(
        "keep_daily_counts_days_that_have_files",
        cal(keep_daily=3),
        [F("a", b(2026, 11, 3)), F("b", b(2026, 10, 20)), F("c", b(2025, 6, 1)), F("d", b(2024, 1, 1))],
        {
            "a": (False, "keep_daily", "keep_daily 2026-11-03"),
            "b": (False, "keep_daily", "keep_daily 2026-10-20"),
            "c": (False, "keep_daily", "keep_daily 2025-06-01"),
            "d": (True, "calendar", "not kept by keep_daily 3"),
        },
    ),
    Row(
        "a_file_1ns_before_local_midnight_is_the_earlier_day",
        cal(keep_daily=1),
        [F("late", b(2026, 11, 4) - 1), F("noon", b(2026, 11, 3, 12))],
        {
            "late": (False, "keep_daily", "keep_daily 2026-11-03"),
            "noon": (True, "calendar", "not kept by keep_daily 1"),
        },
    ),
    Row(
        "a_file_at_local_midnight_is_the_new_day",
        cal(keep_daily=2),
        [F("midnight", b(2026, 11, 4)), F("late", b(2026, 11, 4) - 1), F("noon", b(2026, 11, 3, 12))],
        {
            "midnight": (False, "keep_daily", "keep_daily 2026-11-04"),
            "late": (False, "keep_daily", "keep_daily 2026-11-03"),
            "noon": (True, "calendar", DAILY2),
        },
    ),
    # the same three instants, bucketed by Berlin's and by New York's local date
    Row(
        "daily_buckets_are_berlin_dates",
        cal(keep_daily=2),
        [F("a", b(2026, 11, 3, 0, 30)), F("b", b(2026, 11, 2, 23, 30)), F("c", b(2026, 11, 2, 10))],
        {
            "a": (False, "keep_daily", "keep_daily 2026-11-03"),
            "b": (False, "keep_daily", "keep_daily 2026-11-02"),
            "c": (True, "calendar", DAILY2),
        },
        tz=BERLIN,
    ),
    Row(
        "daily_buckets_are_new_york_dates",
        cal(keep_daily=2),
        [F("a", b(2026, 11, 3, 0, 30)), F("b", b(2026, 11, 2, 23, 30)), F("c", b(2026, 11, 2, 10))],
        {
            "a": (False, "keep_daily", "keep_daily 2026-11-02"),
            "b": (True, "calendar", DAILY2),
            "c": (True, "calendar", DAILY2),
        },
        tz=NEW_YORK,
    ),
    # ISO weeks: 2026-12-28 (Mon) .. 2027-01-03 (Sun) are all 2026-W53
    Row(
        "keep_weekly_across_the_year_boundary",
        cal(keep_weekly=2),
        [
            F("mon-w53", b(2026, 12, 28, 9)),
            F("dec31", b(2026, 12, 31, 12)),
            F("jan1", b(2027, 1, 1, 12)),
            F("sun-w53", b(2027, 1, 3, 23)),
            F("mon-w01", b(2027, 1, 4, 9)),
        ],
        {
            "mon-w01": (False, "keep_weekly", "keep_weekly 2027-W01"),
            "sun-w53": (False, "keep_weekly", "keep_weekly 2026-W53"),
            "jan1": (True, "calendar", "not kept by keep_weekly 2"),
            "dec31": (True, "calendar", "not kept by keep_weekly 2"),
            "mon-w53": (True, "calendar", "not kept by keep_weekly 2"),
        },
        now=b(2027, 2, 1),
    ),
    Row(
        "dec_31_and_jan_1_share_one_weekly_bucket",
        cal(keep_weekly=1),
        [F("dec31", b(2026, 12, 31, 12)), F("jan1", b(2027, 1, 1, 12))],
        {
            "jan1": (False, "keep_weekly", "keep_weekly 2026-W53"),
            "dec31": (True, "calendar", "not kept by keep_weekly 1"),
        },
        now=b(2027, 2, 1),
    ),
    Row(
        "keep_monthly_at_month_ends",
        cal(keep_monthly=3),
        [
            F("jan31", b(2026, 1, 31, 23)),
            F("feb1", b(2026, 2, 1, 0, 30)),
            F("feb28", b(2026, 2, 28, 23, 59)),
            F("mar1", b(2026, 3, 1)),
            F("mar31", b(2026, 3, 31, 23, 59, 59)),
        ],
        {
            "mar31": (False, "keep_monthly", "keep_monthly 2026-03"),
            "mar1": (True, "calendar", "not kept by keep_monthly 3"),
            "feb28": (False, "keep_monthly", "keep_monthly 2026-02"),
            "feb1": (True, "calendar", "not kept by keep_monthly 3"),
            "jan31": (False, "keep_monthly", "keep_monthly 2026-01"),
        },
    ),
    # 2026-02-28 23:30 in New York is already March in Berlin
    Row(
        "month_end_bucket_in_berlin",
        cal(keep_monthly=2),
        [
            F("mid-mar", b(2026, 3, 15, 12)),
            F("ny-feb-end", b(2026, 2, 28, 23, 30, tz=NEW_YORK)),
            F("feb10", b(2026, 2, 10, 12)),
        ],
        {
            "mid-mar": (False, "keep_monthly", "keep_monthly 2026-03"),
            "ny-feb-end": (True, "calendar", "not kept by keep_monthly 2"),
            "feb10": (False, "keep_monthly", "keep_monthly 2026-02"),
        },
        tz=BERLIN,
    ),
    Row(
        "month_end_bucket_in_new_york",
        cal(keep_monthly=2),
        [
            F("mid-mar", b(2026, 3, 15, 12)),
            F("ny-feb-end", b(2026, 2, 28, 23, 30, tz=NEW_YORK)),
            F("feb10", b(2026, 2, 10, 12)),
        ],
        {
            "mid-mar": (False, "keep_monthly", "keep_monthly 2026-03"),
            "ny-feb-end": (False, "keep_monthly", "keep_monthly 2026-02"),
            "feb10": (True, "calendar", "not kept by keep_monthly 2"),
        },
        tz=NEW_YORK,
    ),
    Row(
        "keep_yearly_keeps_the_newest_of_each_year",
        cal(keep_yearly=2),
        [
            F("y2023", b(2023, 6, 1)),
            F("dec31-2024", b(2024, 12, 31, 23, 59)),
            F("jan1-2025", b(2025, 1, 1, 0, 1)),
            F("jul-2025", b(2025, 7, 1)),
            F("mar-2026", b(2026, 3, 1)),
        ],
        {
            "mar-2026": (False, "keep_yearly", "keep_yearly 2026"),
            "jul-2025": (False, "keep_yearly", "keep_yearly 2025"),
            "jan1-2025": (True, "calendar", "not kept by keep_yearly 2"),
            "dec31-2024": (True, "calendar", "not kept by keep_yearly 2"),
            "y2023": (True, "calendar", "not kept by keep_yearly 2"),
        },
    ),
    Row(
        "year_end_in_new_york_is_next_year_in_berlin",
        cal(keep_yearly=2),
        [F("ny-new-year-eve", b(2024, 12, 31, 23, 30, tz=NEW_YORK)), F("jun-2024", b(2024, 6, 1))],
        {
            "ny-new-year-eve": (False, "keep_yearly", "keep_yearly 2025"),
            "jun-2024": (False, "keep_yearly", "keep_yearly 2024"),
        },
        tz=BERLIN,
    ),
    # restic semantics: a file kept by keep_daily still fills its week and month, so
    # keep_weekly and keep_monthly reach further back
    Row(
        "daily_weekly_monthly_together",
        cal(keep_daily=3, keep_weekly=2, keep_monthly=2),
        [F(f"{day:%m-%d}", b(day.year, day.month, day.day, 12)) for day in OCT1_TO_NOV20],
        {
            **{
                f"{day:%m-%d}": (True, "calendar", "not kept by keep_daily 3, keep_weekly 2, keep_monthly 2")
                for day in OCT1_TO_NOV20
            },
            "11-20": (False, "keep_daily", "keep_daily 2026-11-20"),
            "11-19": (False, "keep_daily", "keep_daily 2026-11-19"),
            "11-18": (False, "keep_daily", "keep_daily 2026-11-18"),
            "11-15": (False, "keep_weekly", "keep_weekly 2026-W46"),
            "10-31": (False, "keep_monthly", "keep_monthly 2026-10"),
        },
    ),
    # DST: Berlin springs forward at 02:00 on 2026-03-29; 02:30 does not exist on the wall
    # clock but is still a valid date in a name, and it belongs to its local date
    Row(
        "spring_forward_0230_in_a_name_is_that_day",
        paths_policy(STAMP, keep_daily=2),
        [F("20260329T0230.csv"), F("20260329T0100.csv"), F("20260328T2330.csv")],
        {
            "20260329T0230.csv": (False, "keep_daily", "keep_daily 2026-03-29"),
            "20260329T0100.csv": (True, "calendar", DAILY2),
            "20260328T2330.csv": (False, "keep_daily", "keep_daily 2026-03-28"),
        },
    ),
    # 22:30 UTC that evening is already 00:30 CEST on 03-30 (it would be 23:30 in winter)
    Row(
        "spring_forward_evening_buckets_by_summer_time",
        cal(keep_daily=2),
        [
            F("x", int(datetime(2026, 3, 29, 22, 30, tzinfo=UTC).timestamp()) * S),
            F("y", int(datetime(2026, 3, 29, 21, 30, tzinfo=UTC).timestamp()) * S),
            F("z", int(datetime(2026, 3, 29, 0, 30, tzinfo=UTC).timestamp()) * S),
        ],
        {
            "x": (False, "keep_daily", "keep_daily 2026-03-30"),
            "y": (False, "keep_daily", "keep_daily 2026-03-29"),
            "z": (True, "calendar", DAILY2),
        },
    ),
    # New York falls back on 2026-11-01: a 25-hour day, 00:30 EDT and 23:30 EST are 24h apart
    Row(
        "fall_back_day_is_one_daily_bucket_in_new_york",
        cal(keep_daily=2),
        [
            F("early", b(2026, 11, 1, 0, 30, tz=NEW_YORK)),
            F("late", b(2026, 11, 1, 23, 30, tz=NEW_YORK)),
            F("eve", b(2026, 10, 31, 23, 30, tz=NEW_YORK)),
        ],
        {
            "late": (False, "keep_daily", "keep_daily 2026-11-01"),
            "early": (True, "calendar", DAILY2),
            "eve": (False, "keep_daily", "keep_daily 2026-10-31"),
        },
        tz=NEW_YORK,
    ),
    Row(
        "spring_forward_0230_in_new_york",
        paths_policy(STAMP, keep_daily=1),
        [F("20260308T0230.csv"), F("20260308T0100.csv")],
        {
            "20260308T0230.csv": (False, "keep_daily", "keep_daily 2026-03-08"),
            "20260308T0100.csv": (True, "calendar", "not kept by keep_daily 1"),
        },
        tz=NEW_YORK,
    ),
    # with older_than, the calendar only keeps: what it does not keep ages out normally
    Row(
        "keep_last_then_calendar_then_older_than",
        cal(older_than="30d", keep_last=1, keep_monthly=2),
        [
            F("p1", b(2026, 11, 24, 12)),
            F("p2", b(2026, 11, 10)),
            F("p3", b(2026, 10, 15, 12)),
            F("p4", b(2026, 10, 1)),
            F("p5", b(2026, 9, 1)),
        ],
        {
            "p1": (False, "keep_last", "keep_last 1"),
            "p2": (False, "younger", "younger than 30d (age 16d 4h)"),
            "p3": (False, "keep_monthly", "keep_monthly 2026-10"),
            "p4": OLD,
            "p5": OLD,
        },
    ),
    Row(
        "min_age_keeps_what_the_calendar_would_expire",
        cal(keep_daily=1, min_age="7d"),
        [F("new", b(2026, 11, 25, 12)), F("two-days", b(2026, 11, 24, 4)), F("old", b(2026, 11, 1))],
        {
            "new": (False, "keep_daily", "keep_daily 2026-11-25"),
            "two-days": (False, "min_age", "younger than min_age 7d (age 2d)"),
            "old": (True, "calendar", "not kept by keep_daily 1"),
        },
    ),
    # calendar slots go to dated files in the past only: an undated or future file
    # neither uses a slot nor is expired
    Row(
        "undated_and_future_files_take_no_calendar_slot",
        paths_policy(DASH, keep_daily=1),
        [F("notes.txt"), F("fills-2027-01-01.csv"), F("fills-2026-11-20.csv"), F("fills-2026-11-19.csv")],
        {
            "notes.txt": NO_DATE,
            "fills-2027-01-01.csv": (False, "future"),
            "fills-2026-11-20.csv": (False, "keep_daily", "keep_daily 2026-11-20"),
            "fills-2026-11-19.csv": (True, "calendar", "not kept by keep_daily 1"),
        },
    ),
]


@params(CALENDAR)
def test_calendar_rule(row):
    check(run(row.files, row.pol, row.now, row.tz, row.disk), row.expected)


def test_iso_weeks_of_the_year_boundary_rows_are_what_the_rows_assume():
    assert date(2026, 12, 31).isocalendar()[:2] == date(2027, 1, 1).isocalendar()[:2] == (2026, 53)
    assert date(2026, 12, 28).isocalendar()[:2] == date(2027, 1, 3).isocalendar()[:2] == (2026, 53)
    assert date(2027, 1, 4).isocalendar()[:2] == (2027, 1)
    assert date(2026, 11, 15).isocalendar()[:2] == (2026, 46) and date(2026, 11, 16).isocalendar()[:2] == (2026, 47)


# --- space pressure: max_total_size and min_free ------------------------------------------


def aged(n: int = 10, size: int = 100, extra: dict | None = None) -> list[F]:
    """f01..fNN, fKK exactly KK days old, ``size`` bytes each (``extra``: k -> F fields)."""
    return [F(f"f{k:02d}", NOW - k * D, size, **(extra or {}).get(k, {})) for k in range(1, n + 1)]


def pressure_expected(
    expired: range,
    reason: str,
    kept_reason=lambda k: f"no rule expires it (age {k}d)",
    kept_rule="younger",
    n=10,
    **overrides,
) -> dict:
    out = {}
    for k in range(1, n + 1):
        out[f"f{k:02d}"] = (True, "pressure", reason) if k in expired else (False, kept_rule, kept_reason(k))
    out.update(overrides)
    return out


CAP_550 = "space pressure: total 1000 B > max_total_size 550B"
FREE_15 = "space pressure: free 1000 B < min_free 15%"

PRESSURE = [
    Row(
        "max_total_size_expires_oldest_until_under_the_cap",
        policy(max_total_size="550B"),
        aged(),
        pressure_expected(range(6, 11), CAP_550),
    ),
    Row(
        "total_equal_to_the_cap_expires_nothing", policy(max_total_size="1000"), aged(), pressure_expected(range(0), "")
    ),
    Row(
        "one_byte_over_the_cap_expires_only_the_oldest",
        policy(max_total_size="999"),
        aged(),
        pressure_expected(range(10, 11), "space pressure: total 1000 B > max_total_size 999"),
    ),
    Row(
        "pressure_never_crosses_min_age",
        policy(max_total_size="550B", min_age="8d"),
        aged(),
        pressure_expected(
            range(8, 11), CAP_550, kept_rule="min_age", kept_reason=lambda k: f"younger than min_age 8d (age {k}d)"
        ),
    ),
    Row(
        "pressure_never_crosses_keep_last",
        policy(max_total_size="550B", keep_last=8),
        aged(),
        pressure_expected(range(9, 11), CAP_550, kept_rule="keep_last", kept_reason=lambda k: "keep_last 8"),
    ),
    Row(
        "pressure_never_crosses_a_protect_glob",
        policy(max_total_size="550B", protect=["f10"]),
        aged(),
        pressure_expected(range(5, 10), CAP_550, f10=(False, "protect", "protected by a protect glob")),
    ),
    Row(
        "pressure_never_crosses_an_ops_keep_marker",
        policy(max_total_size="550B"),
        aged(extra={9: {"marker": ".ops-keep"}}),
        pressure_expected([10, 8, 7, 6, 5], CAP_550, f09=(False, "protect", "protected by .ops-keep")),
    ),
    Row(
        "pressure_never_crosses_the_calendar",
        policy(max_total_size="550B", older_than="365d", keep_daily=3),
        aged(),
        pressure_expected(
            range(6, 11),
            CAP_550,
            kept_reason=lambda k: f"younger than 365d (age {k}d)",
            f01=(False, "keep_daily", "keep_daily 2026-11-25"),
            f02=(False, "keep_daily", "keep_daily 2026-11-24"),
            f03=(False, "keep_daily", "keep_daily 2026-11-23"),
        ),
    ),
    Row(
        "pressure_never_crosses_settle",
        policy(max_total_size="0B", settle="2d"),
        aged(n=3),
        pressure_expected(
            range(2, 4),
            "space pressure: total 300 B > max_total_size 0B",
            n=3,
            f01=(False, "settle", "settling: modified 1d ago (settle 2d)"),
        ),
    ),
    Row(
        "files_older_than_count_towards_the_cap",
        policy(max_total_size="550B", older_than="8d"),
        aged(),
        pressure_expected(
            range(6, 8),
            CAP_550,
            kept_reason=lambda k: f"younger than 8d (age {k}d)",
            f08=(True, "older_than", "older than 8d"),
            f09=(True, "older_than", "older than 8d"),
            f10=(True, "older_than", "older than 8d"),
        ),
    ),
    Row(
        "equal_ages_expire_in_path_order",
        policy(max_total_size="150B"),
        [F("b", NOW - 5 * D, 100), F("a", NOW - 5 * D, 100), F("c", NOW - 5 * D, 100)],
        {"a": (True, "pressure"), "b": (True, "pressure"), "c": (False, "younger")},
    ),
    Row(
        "pressure_goes_by_path_date_not_mtime",
        paths_policy(DASH, max_total_size="150B"),
        [
            F("fills-2026-01-01.csv", NOW - 2 * D, 100),
            F("fills-2026-06-01.csv", NOW - 300 * D, 100),
            F("notes.txt", NOW - 900 * D, 100),
        ],
        {
            "fills-2026-01-01.csv": (True, "pressure", "space pressure: total 300 B > max_total_size 150B"),
            "fills-2026-06-01.csv": (True, "pressure"),
            "notes.txt": NO_DATE,
        },
    ),
    Row(
        "a_big_file_frees_enough_alone",
        policy(max_total_size="2KiB"),
        [F("big", NOW - 9 * D, 3000), F("small-old", NOW - 10 * D, 10), F("small-new", NOW - 1 * D, 10)],
        {
            "small-old": (True, "pressure", "space pressure: total 2.9 KiB > max_total_size 2KiB"),
            "big": (True, "pressure"),
            "small-new": (False, "younger"),
        },
    ),
    Row(
        "min_free_percent_expires_oldest_until_the_target",
        policy(min_free="15%"),
        aged(),
        pressure_expected(range(6, 11), FREE_15),
        disk=Disk(total=10_000, free=1_000),
    ),
    Row(
        "min_free_met_exactly_expires_nothing",
        policy(min_free="15%"),
        aged(),
        pressure_expected(range(0), ""),
        disk=Disk(total=10_000, free=1_500),
    ),
    Row(
        "min_free_without_a_disk_measure_expires_nothing",
        policy(min_free="15%"),
        aged(),
        pressure_expected(range(0), ""),
    ),
    Row(
        "min_free_as_a_size",
        policy(min_free="1KiB"),
        aged(),
        pressure_expected(range(10, 11), "space pressure: free 1000 B < min_free 1KiB"),
        disk=Disk(total=10_000, free=1_000),
    ),
    Row(
        "cap_and_min_free_the_larger_need_wins",
        policy(max_total_size="950B", min_free="15%"),
        aged(),
        pressure_expected(
            range(6, 11), "space pressure: total 1000 B > max_total_size 950B; free 1000 B < min_free 15%"
        ),
        disk=Disk(total=10_000, free=1_000),
    ),
    Row(
        "min_free_never_crosses_min_age_even_when_short",
        policy(min_free="50%", min_age="9d"),
        aged(),
        pressure_expected(
            range(9, 11),
            "space pressure: free 1000 B < min_free 50%",
            kept_rule="min_age",
            kept_reason=lambda k: f"younger than min_age 9d (age {k}d)",
        ),
        disk=Disk(total=10_000, free=1_000),
    ),
]


@params(PRESSURE)
def test_space_pressure_rule(row):
    got = run(row.files, row.pol, row.now, row.tz, row.disk)
    check(got, row.expected)


def test_max_total_size_leaves_the_kept_total_at_or_under_the_cap():
    got = run(aged(), policy(max_total_size="550B"))
    assert sum(d.file.size for d in got.values() if not d.expire) == 500


# --- protection beats every other rule -----------------------------------------------------


def _protected_cases():
    """(id, policy kwargs, the file under test, other files, disk): without protection the
    file would be expired or kept for another reason."""
    old = NOW - 400 * D
    return [
        ("older_than", {"older_than": "30d"}, F("x/old.log", old), [], None),
        ("calendar", {"keep_daily": 1}, F("x/old.log", old), [F("y/new.log", NOW - D)], None),
        ("pressure", {"max_total_size": "0B"}, F("x/old.log", old, 100), [F("y/new.log", NOW - D, 100)], None),
        ("min_free", {"min_free": "99%"}, F("x/old.log", old, 100), [], Disk(1000, 0)),
        ("keep_last", {"older_than": "30d", "keep_last": 1}, F("x/old.log", old), [], None),
        ("settle", {"older_than": "0s", "settle": "1d"}, F("x/old.log", NOW - M), [], None),
        ("future_mtime", {"older_than": "30d"}, F("x/old.log", NOW + 10 * D), [], None),
        ("no_date", {"older_than": "30d", "age_from": "path", "path_date": DASH}, F("x/old.log", old), [], None),
        (
            "future_path_date",
            {"older_than": "30d", "age_from": "path", "path_date": DASH},
            F("x/2027-05-01.log", old),
            [],
            None,
        ),
        (
            "old_path_date",
            {"older_than": "30d", "age_from": "path", "path_date": DASH},
            F("x/2020-05-01.log", NOW - H),
            [],
            None,
        ),
    ]


@pytest.mark.parametrize(
    "kw, target, others, disk", [c[1:] for c in _protected_cases()], ids=[c[0] for c in _protected_cases()]
)
@pytest.mark.parametrize("how", ["marker", "glob"])
def test_protection_beats_every_other_rule(how, kw, target, others, disk):
    unprotected = run([target, *others], policy(**kw), disk=disk)[target.path]
    assert unprotected.rule != "protect"
    if how == "marker":
        files = [F(target.path, target.mtime, target.size, marker="x/.ops-keep"), *others]
        want = "protected by x/.ops-keep"
        pol = policy(**kw)
    else:
        files = [target, *others]
        want = "protected by a protect glob"
        pol = policy(protect=["x/**"], **kw)
    d = run(files, pol, disk=disk)[target.path]
    assert (d.expire, d.rule, d.reason) == (False, "protect", want)


def test_marker_reason_names_the_marker_path_as_given():
    got = run([F("data/x/fills.csv", NOW - 400 * D, marker="data/x/.ops-keep")], policy(older_than="1d"))
    assert got["data/x/fills.csv"].reason == "protected by data/x/.ops-keep"


def test_protect_glob_protects_only_what_it_matches():
    got = run([F("x/a.log", NOW - 40 * D), F("y/a.log", NOW - 40 * D)], policy(older_than="30d", protect=["x/**"]))
    assert (got["x/a.log"].rule, got["y/a.log"].rule) == ("protect", "older_than")


# --- the series refusal -------------------------------------------------------------------
#
# decide() keeps every file of a calendar series rather than expire them all. No input
# reaches that through the rules: the newest dated, non-future file always takes the first
# calendar slot, and nothing later turns a keep into an expiry. So the refusal is checked as
# the property it guards: a calendar policy never expires every file.


def _random_calendar_case(rnd: random.Random):
    kw = {k: rnd.choice([0, 0, 1, 2, 5]) for k in ("keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")}
    if not any(kw.values()):
        kw[rnd.choice(list(kw))] = 1
    kw["older_than"] = rnd.choice([None, None, "0s", "1d", "30d"])
    kw["settle"] = rnd.choice(["0s", "10m"])
    kw["min_age"] = rnd.choice(["0s", "0s", "1d"])
    if rnd.random() < 0.3:
        kw["max_total_size"] = rnd.choice(["0B", "10B", "1KiB"])
    if rnd.random() < 0.3:
        kw["min_free"] = rnd.choice(["50%", "2KiB"])
    if rnd.random() < 0.3:
        kw["age_from"], kw["path_date"] = "path", DASH
    files = []
    for i in range(rnd.randint(1, 12)):
        when = NOW - rnd.randint(-3 * D, 800 * D)
        day = datetime.fromtimestamp(when // S, BERLIN)
        name = f"f{i}-{day:%Y-%m-%d}.csv" if rnd.random() < 0.9 else f"f{i}.txt"
        files.append(F(name, when if rnd.random() < 0.8 else NOW - rnd.randint(0, 3 * D), rnd.randint(0, 50)))
    return kw, files, rnd.choice([BERLIN, NEW_YORK])


@pytest.mark.parametrize("seed", range(300))
def test_a_calendar_policy_never_expires_every_file(seed):
    kw, files, tz = _random_calendar_case(random.Random(seed))
    got = run(files, policy(**kw), tz=tz, disk=Disk(1000, 0))
    assert not all(d.expire for d in got.values()), (kw, files)


def test_the_newest_past_file_of_a_calendar_series_takes_the_first_slot():
    files = [F("a", NOW - 3 * D), F("b", NOW + 2 * D), F("c", NOW - 9 * D)]
    got = run(files, policy(keep_monthly=1, max_total_size="0B"))
    assert (got["a"].rule, got["b"].rule, got["c"].rule) == ("keep_monthly", "future", "calendar")


def test_tolerance_constant_is_what_the_4m_and_6m_rows_straddle():
    assert 4 * M < FUTURE_TOLERANCE_NS < 6 * M
