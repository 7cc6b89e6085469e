"""The retention rules for trading data through the real scripts: path dates, space
pressure (max_total_size, and min_free on a real tmpfs), .ops-keep markers, and the clock
sanity check, each judged by what is left on disk, what GNU tar finds in the archives, and
what plan.py --json says and why.

The scripts run with TZ=UTC, so a date in a name means UTC midnight, as the test computes.
"""

import datetime as dt
import json
import os
import time
from datetime import datetime, timedelta

import pytest
from e2e_support import assert_nothing_lost, tmpfs

from ops.state.manifest import seal_document
from tools.sandbox import published_runs, tar_members

UTC = {"TZ": "UTC"}
DAY_NS = 86400 * 10**9
KIB = 1024


def set_policies(sandbox, *policies: dict) -> None:
    for p in policies:
        (sandbox.base / p["root"]).mkdir(parents=True, exist_ok=True)
    sandbox.config["policies"] = [{"settle": "10m", "missing_ok": False, **p} for p in policies]
    sandbox.write_config()


def maintenance(sandbox):
    done = sandbox.run("maintenance", env=UTC)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def plan(sandbox) -> dict[str, dict[str, dict]]:
    """plan.py --json as {policy: {path: decision}}; it must change no data."""
    before = sandbox.snapshot()
    res = sandbox.run("plan", "--json", env=UTC)
    assert res.returncode == 0, res.stderr
    assert sandbox.snapshot() == before, "plan changed the data"
    doc = json.loads(res.stdout)
    return {p["name"]: {d["path"]: d for d in p["decisions"]} for p in doc["policies"]}


def archived(sandbox, policy: str) -> set[str]:
    """Every member of every published archive of ``policy`` (GNU tar lists them)."""
    out = set()
    for run_id in published_runs(sandbox.backups):
        archive = sandbox.backups / run_id / f"{policy}.tar.zst"
        if archive.exists():
            out.update(tar_members(archive))
    return out


def present(sandbox, root: str) -> set[str]:
    base = sandbox.data / root
    return {str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()}


# --- (a) path dates ------------------------------------------------------------------------


def test_old_path_dates_expire_despite_fresh_mtimes_and_young_or_undated_names_stay(sandbox, tmp_path):
    set_policies(
        sandbox,
        {
            "name": "market",
            "root": "data/market",
            "include": ["ticks/**"],
            "older_than": "30d",
            "age_from": "path",
            "path_date": r"(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})",
        },
    )
    today = datetime.now(dt.UTC).date()

    def name(days_ago: int) -> str:
        return f"ticks/{today - timedelta(days=days_ago):%Y/%m/%d}.csv"

    old, older, young, fresh = name(45), name(400), name(5), name(0)
    for rel in (old, older, young, fresh):
        sandbox.file(rel, f"ts,bid,ask\n{rel},1.0,1.1\n" * 50, age_days=1 / 24, root="market")  # written an hour ago
    sandbox.file("ticks/README.txt", "no date here\n", age_days=400, root="market")
    sandbox.file(name(60), "still being written\n", age_days=0, root="market")  # old name, settling mtime
    before = sandbox.snapshot()

    said = plan(sandbox)["market"]
    assert {p: (d["action"], d["rule"]) for p, d in said.items()} == {
        old: ("expire", "older_than"),
        older: ("expire", "older_than"),
        young: ("keep", "younger"),
        fresh: ("keep", "younger"),
        "ticks/README.txt": ("keep", "no_date"),
        name(60): ("keep", "settle"),
    }
    assert said[old]["reason"] == "older than 30d"
    assert said["ticks/README.txt"]["reason"] == "date not found in name"
    assert said[young]["reason"].startswith("younger than 30d (age 5d")

    maintenance(sandbox)
    assert present(sandbox, "market") == {young, fresh, "ticks/README.txt", name(60)}
    assert archived(sandbox, "market") == {old, older}
    run = sandbox.run_dir()
    entries = [json.loads(line) for line in run.joinpath("scan.market.jsonl").read_text().splitlines()]
    assert {(e["path"], e["reason"]) for e in entries} == {(old, "older than 30d"), (older, "older than 30d")}
    assert_nothing_lost(sandbox, before, tmp_path / "restored")


# --- (b) space pressure: max_total_size --------------------------------------------------


def test_max_total_size_deletes_the_oldest_files_until_the_total_is_under_the_cap(sandbox, tmp_path):
    set_policies(sandbox, {"name": "bars", "root": "data/bars", "max_total_size": "10KiB"})
    for age in range(1, 9):  # 8 files of 2 KiB: 16 KiB, 6 KiB over the cap
        sandbox.file(f"bars-{age}d.csv", os.urandom(2 * KIB), age_days=age, root="bars")
    before = sandbox.snapshot()

    said = plan(sandbox)["bars"]
    expire = {p for p, d in said.items() if d["action"] == "expire"}
    assert expire == {"bars-8d.csv", "bars-7d.csv", "bars-6d.csv"}
    assert {said[p]["reason"] for p in expire} == {"space pressure: total 16.0 KiB > max_total_size 10KiB"}
    assert {said[p]["reason"] for p in set(said) - expire} == {
        f"no rule expires it (age {age}d)" for age in range(1, 6)
    }

    maintenance(sandbox)
    left = present(sandbox, "bars")
    assert left == {f"bars-{age}d.csv" for age in range(1, 6)}
    assert sum((sandbox.data / "bars" / p).stat().st_size for p in left) <= 10 * KIB
    assert archived(sandbox, "bars") == expire
    assert_nothing_lost(sandbox, before, tmp_path / "restored")

    # under the cap now: the next run would expire nothing more
    assert {d["action"] for d in plan(sandbox)["bars"].values()} == {"keep"}


# --- (c) min_free on a real filesystem -------------------------------------------------------


@pytest.fixture
def small_root(sandbox):
    """A 1 MiB tmpfs mounted as data/fills, the policy root whose free space min_free reads."""
    mnt = sandbox.data / "fills"
    mnt.mkdir()
    with tmpfs(mnt, "1m"):
        yield mnt


def test_min_free_deletes_the_oldest_files_until_the_root_filesystem_has_room(sandbox, small_root, tmp_path):
    set_policies(sandbox, {"name": "fills", "root": "data/fills", "min_free": "50%"})
    for age in range(1, 7):  # 6 x 128 KiB on a 1 MiB filesystem: 25% free
        sandbox.file(f"fills-{age}d.bin", os.urandom(128 * KIB), age_days=age, root="fills")
    st = os.statvfs(small_root)
    total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    need = total // 2 - free
    assert need > 0, "the set-up must start short of the target"
    count = -(-need // (128 * KIB))  # the fewest oldest files that free enough
    expected = {f"fills-{age}d.bin" for age in range(6, 6 - count, -1)}
    before = sandbox.snapshot()

    said = plan(sandbox)["fills"]
    assert {p for p, d in said.items() if d["action"] == "expire"} == expected
    assert all(
        said[p]["reason"].startswith("space pressure: free ") and said[p]["reason"].endswith(" < min_free 50%")
        for p in expected
    )

    maintenance(sandbox)
    assert present(sandbox, "fills") == {f"fills-{age}d.bin" for age in range(1, 7)} - expected
    st = os.statvfs(small_root)
    assert st.f_bavail * st.f_frsize >= total // 2, "min_free is not met after the run"
    assert archived(sandbox, "fills") == expected
    assert_nothing_lost(sandbox, before, tmp_path / "restored")


# --- (d) .ops-keep -------------------------------------------------------------------------


def test_ops_keep_marker_protects_its_whole_subtree_through_maintenance(sandbox, tmp_path):
    protected = ["golden/2025/ticks.log", "golden/sub/deep/fills.log", "golden/orders.log"]
    for rel in protected:
        sandbox.file(rel, f"{rel}\n" * 20, age_days=400)
    sandbox.file("golden/.ops-keep", "kept for the auditors\n", age_days=400)
    sandbox.file("other/2025/ticks.log", "other\n" * 20, age_days=400)
    (sandbox.data / "logs" / "fake" / ".ops-keep").mkdir(parents=True)  # a directory is not a marker
    sandbox.file("fake/fills.log", "fake\n" * 20, age_days=400)
    before = sandbox.snapshot()

    said = plan(sandbox)["logs"]
    for rel in protected:
        assert (said[rel]["action"], said[rel]["rule"], said[rel]["reason"]) == (
            "keep",
            "protect",
            "protected by golden/.ops-keep",
        ), rel
    assert said["other/2025/ticks.log"]["action"] == "expire"
    assert said["fake/fills.log"]["action"] == "expire"

    maintenance(sandbox)
    assert present(sandbox, "logs") == {*protected, "golden/.ops-keep"}
    assert archived(sandbox, "logs") == {"other/2025/ticks.log", "fake/fills.log"}
    assert_nothing_lost(sandbox, before, tmp_path / "restored")


def test_protect_glob_and_marker_hold_against_space_pressure(sandbox):
    set_policies(sandbox, {"name": "bars", "root": "data/bars", "max_total_size": "0B", "protect": ["pinned/**"]})
    sandbox.file("pinned/oldest.csv", os.urandom(KIB), age_days=50, root="bars")
    sandbox.file("vault/.ops-keep", "", age_days=50, root="bars")
    sandbox.file("vault/old.csv", os.urandom(KIB), age_days=40, root="bars")
    sandbox.file("loose/old.csv", os.urandom(KIB), age_days=30, root="bars")

    said = plan(sandbox)["bars"]
    assert said["pinned/oldest.csv"]["reason"] == "protected by a protect glob"
    assert said["vault/old.csv"]["reason"] == "protected by vault/.ops-keep"

    maintenance(sandbox)
    assert present(sandbox, "bars") == {"pinned/oldest.csv", "vault/.ops-keep", "vault/old.csv"}


# --- (e) clock sanity ---------------------------------------------------------------------


def _forge_scan_manifest(path, now_ns: int, run_id: str | None = None) -> None:
    doc = json.loads(path.read_bytes())
    body = {k: v for k, v in doc.items() if k != "seal"}
    body["now_ns"] = now_ns
    if run_id:
        body["run_id"] = run_id
    path.write_bytes(seal_document(body))


def test_scan_refuses_while_the_clock_reads_earlier_than_the_last_scan(sandbox, tmp_path):
    sandbox.file("young.log", age_days=1)
    maintenance(sandbox)  # a real, complete earlier run
    [first] = sandbox.runs()
    manifest = sandbox.run_dir(first) / "scan.ok.json"
    original = manifest.read_bytes()
    _forge_scan_manifest(manifest, time.time_ns() + DAY_NS)  # that run saw a clock one day ahead

    for i in range(3):
        sandbox.file(f"2025/old-{i}.log", f"old {i}\n", age_days=400)
    before = sandbox.snapshot()
    published = published_runs(sandbox.backups)

    res = sandbox.run("scan", env=UTC)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "clock" in res.stderr and first in res.stderr
    [second] = [r for r in sandbox.runs() if r != first]  # same-second ids may sort either way
    assert not (sandbox.run_dir(second) / "scan.ok.json").exists()
    assert "clock" in json.loads((sandbox.run_dir(second) / "scan.failed.json").read_text())["error"]

    chain = sandbox.run("maintenance", env=UTC)
    assert chain.returncode == 1, chain.stdout + chain.stderr
    assert sandbox.snapshot() == before, "a file was deleted while the clock was wrong"
    assert published_runs(sandbox.backups) == published, "something was archived while the clock was wrong"

    # the control: the same state with the real manifest back goes through and expires them
    manifest.write_bytes(original)
    maintenance(sandbox)
    assert not any(p.startswith("logs/2025/") for p in sandbox.snapshot())
    assert_nothing_lost(sandbox, before, tmp_path / "restored")


def test_scan_refuses_when_a_later_named_run_recorded_a_later_clock(sandbox):
    """The clock was set back a day after a run: that run's id sorts after the new one."""
    sandbox.file("young.log", age_days=1)
    first = sandbox.run("scan", env=UTC)
    assert first.returncode == 0, first.stderr
    [real] = sandbox.runs()
    tomorrow = time.time() + 86400
    forged_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(tomorrow)) + "-f0f0"
    forged = sandbox.state / "runs" / forged_id
    forged.mkdir(mode=0o700)
    (forged / "scan.ok.json").write_bytes((sandbox.run_dir(real) / "scan.ok.json").read_bytes())
    _forge_scan_manifest(forged / "scan.ok.json", int(tomorrow * 1e9), forged_id)
    sandbox.file("2025/old.log", age_days=400)
    before = sandbox.snapshot()

    res = sandbox.run("scan", env=UTC)
    assert res.returncode == 1, res.stdout + res.stderr
    assert forged_id in res.stderr
    assert sandbox.snapshot() == before
    new = [r for r in sandbox.runs() if r not in (real, forged_id)]
    assert len(new) == 1 and not (sandbox.run_dir(new[0]) / "scan.ok.json").exists()


def test_a_clock_within_the_tolerance_of_the_last_scan_is_not_refused(sandbox):
    sandbox.file("young.log", age_days=1)
    assert sandbox.run("scan", env=UTC).returncode == 0
    [first] = sandbox.runs()
    _forge_scan_manifest(sandbox.run_dir(first) / "scan.ok.json", time.time_ns() + 60 * 10**9)  # 1 minute ahead
    sandbox.file("2025/old.log", age_days=400)
    res = sandbox.run("scan", env=UTC)
    assert res.returncode == 0, res.stdout + res.stderr
    [second] = [r for r in sandbox.runs() if r != first]
    entries = (sandbox.run_dir(second) / "scan.logs.jsonl").read_text().splitlines()
    assert [json.loads(line)["path"] for line in entries] == ["2025/old.log"]


def test_plan_says_the_clock_is_behind_the_last_scan(sandbox):
    sandbox.file("young.log", age_days=1)
    assert sandbox.run("scan", env=UTC).returncode == 0
    [first] = sandbox.runs()
    res = sandbox.run("plan", "--json", env=UTC)
    assert json.loads(res.stdout)["clock_behind"] is None
    _forge_scan_manifest(sandbox.run_dir(first) / "scan.ok.json", time.time_ns() + DAY_NS)
    res = sandbox.run("plan", "--json", env=UTC)
    assert res.returncode == 0, res.stderr
    assert "earlier than run " + first in json.loads(res.stdout)["clock_behind"]
