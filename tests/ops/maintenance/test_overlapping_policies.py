"""Policies that overlap, share a filesystem, or empty a directory the core writes into.

- A file is decided by one policy: the deepest root holding it; of equal roots, the first
  in retention.yaml whose include/exclude match it.
- min_free counts what the other policies of the same run free on that filesystem.
- Emptied directories are removed only with ``prune_empty_dirs: true``, never a policy
  root, never one touched within the policy's horizon.
"""

import json
import os
import subprocess
import time

import pytest

from ._support import log_records, run_ok

DAY = 86400
MiB = 1 << 20


def _age(path, days: float) -> None:
    when = time.time() - days * DAY
    os.utime(path, (when, when))


def _catalogue(sandbox) -> dict[str, str]:
    out = {}
    for name in (n for n in os.listdir(sandbox.state / "catalogue") if n.endswith(".jsonl")):
        for line in (sandbox.state / "catalogue" / name).read_text().splitlines():
            entry = json.loads(line)
            out[entry["path"]] = entry["policy"]
    return out


def _plan(sandbox) -> dict[str, list[str]]:
    r = sandbox.run("plan", "--json")
    assert r.returncode == 0, r.stderr
    return {p["name"]: [d["path"] for d in p["decisions"]] for p in json.loads(r.stdout)["policies"]}


def _nested(sandbox) -> None:
    """The issue's shape: logs at data/logs, archive-all over the whole of data/."""
    sandbox.config["policies"] = [
        {"name": "logs", "root": "data/logs", "include": ["**/*.log"], "older_than": "30d", "settle": "1m"},
        {
            "name": "archive-all",
            "root": "data",
            "include": ["**"],
            "older_than": "60d",
            "settle": "1m",
            "prune_empty_dirs": True,
        },
    ]
    sandbox.write_config()
    for i in range(3):
        sandbox.file(f"{i}.log", f"log {i}\n", age_days=100)
    sandbox.file("other.csv", "csv\n", age_days=100, root="")
    for d in (sandbox.data / "logs", sandbox.data):
        _age(d, 100)


def test_a_nested_root_is_decided_by_its_own_policy_and_survives_the_outer_one(sandbox):
    _nested(sandbox)
    assert _plan(sandbox) == {"logs": ["0.log", "1.log", "2.log"], "archive-all": ["other.csv"]}

    run_ok(sandbox, "maintenance")
    run_ok(sandbox, "maintenance")  # the next night: nothing stuck, nothing to do

    assert (sandbox.data / "logs").is_dir(), "another policy's root is never removed"
    assert sandbox.snapshot() == {}
    data = str(sandbox.data)
    assert _catalogue(sandbox) == {f"{data}/logs/{i}.log": "logs" for i in range(3)} | {
        f"{data}/other.csv": "archive-all"
    }
    found = sandbox.run("find", "--file", f"{data}/logs/0.log")
    assert found.returncode == 0 and "logs" in found.stdout


def test_of_two_policies_with_one_root_the_first_that_matches_decides(sandbox):
    sandbox.config["policies"] = [
        {"name": "recent", "root": "data/logs", "include": ["**/*.log"], "older_than": "30d", "settle": "1m"},
        {"name": "everything", "root": "data/logs", "include": ["**"], "older_than": "90d", "settle": "1m"},
    ]
    sandbox.write_config()
    sandbox.file("a.log", "a\n", age_days=40)
    sandbox.file("b.bin", "b\n", age_days=100)
    sandbox.file("c.bin", "c\n", age_days=40)

    plan = sandbox.run("plan", "--json")
    policies = {p["name"]: p for p in json.loads(plan.stdout)["policies"]}
    assert [d["path"] for d in policies["recent"]["decisions"]] == ["a.log"]
    assert [d["path"] for d in policies["everything"]["decisions"]] == ["b.bin", "c.bin"]
    assert policies["recent"]["expire_files"] + policies["everything"]["expire_files"] == 2

    run_ok(sandbox, "maintenance")
    assert sandbox.snapshot() == {"logs/c.bin": b"c\n"}
    assert set(_catalogue(sandbox).values()) == {"recent", "everything"}


def test_a_step_that_fails_at_a_later_policy_still_catalogues_what_it_deleted(sandbox):
    sandbox.config["policies"].append(
        {"name": "tapes", "root": "data/tapes", "include": ["**"], "older_than": "30d", "settle": "1m"}
    )
    sandbox.write_config()
    sandbox.file("a.log", "a\n", age_days=100)
    sandbox.file("x.dump", "x\n", age_days=100, root="tapes")
    for step in ("scan", "backup", "verify"):
        run_ok(sandbox, step)
    os.rename(sandbox.data / "tapes", sandbox.data / "tapes.moved")  # the second root is not the one scanned
    (sandbox.data / "tapes").mkdir()

    clean = sandbox.run("clean")
    assert clean.returncode == 1, clean.stderr
    assert not (sandbox.data / "logs" / "a.log").exists()
    assert _catalogue(sandbox) == {f"{sandbox.data}/logs/a.log": "logs"}
    assert (sandbox.data / "tapes.moved" / "x.dump").read_bytes() == b"x\n"


@pytest.fixture
def small_fs(sandbox):
    """A real 10 MiB tmpfs under the sandbox, holding two policies' roots."""
    mnt = sandbox.base / "fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=10m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_min_free_counts_what_an_earlier_policy_frees_on_the_same_filesystem(sandbox, small_fs):
    """ticks (4 x 1 MiB, 100 days old) alone bring free space over the 50% target: the
    pressure policy (listed first) must expire none of its young files for it."""
    sandbox.config["policies"] = [
        {"name": "pressure", "root": "fs", "include": ["**"], "min_free": "50%", "min_age": "2d", "settle": "1m"},
        {"name": "ticks", "root": "fs/ticks", "include": ["**"], "older_than": "30d", "settle": "1m"},
    ]
    sandbox.write_config()
    (small_fs / "ticks").mkdir()
    for i in range(4):
        for root, days in (("ticks", 100), ("young", 5 + i)):
            (small_fs / root).mkdir(exist_ok=True)
            path = small_fs / root / f"{i}.bin"
            path.write_bytes(os.urandom(MiB))
            _age(path, days)
    st = os.statvfs(small_fs)
    assert st.f_bavail * st.f_frsize < 5 * MiB, "the filesystem must start short of its 50% target"

    plan = {p["name"]: p for p in json.loads(sandbox.run("plan", "--json").stdout)["policies"]}
    assert plan["ticks"]["expire_files"] == 4 and plan["pressure"]["expire_files"] == 0
    # "free after" counts what ticks frees on the same filesystem too
    assert plan["pressure"]["free_bytes_after"] == plan["pressure"]["free_bytes_now"] + 4 * MiB

    run_ok(sandbox, "maintenance")
    assert sorted(os.listdir(small_fs / "young")) == ["0.bin", "1.bin", "2.bin", "3.bin"]
    assert os.listdir(small_fs / "ticks") == []


def _emptied_dir(sandbox, **policy) -> object:
    sandbox.config["policies"][0].update(policy)
    sandbox.write_config()
    exports = sandbox.data / "logs" / "eod-exports"
    sandbox.file("eod-exports/day.log", "x\n", age_days=100)
    os.chmod(exports, 0o2775)
    return exports


def test_an_emptied_directory_stays_by_default(sandbox):
    exports = _emptied_dir(sandbox)
    _age(exports, 100)
    run_ok(sandbox, "maintenance")
    assert exports.is_dir() and os.stat(exports).st_mode & 0o7777 == 0o2775
    assert "prune_empty_dirs" not in sandbox.run("plan", "-v").stderr


def test_prune_empty_dirs_removes_only_directories_untouched_within_older_than(sandbox):
    exports = _emptied_dir(sandbox, prune_empty_dirs=True)
    sandbox.file("fresh/old.log", "y\n", age_days=100)
    _age(exports, 100)
    _age(sandbox.data / "logs" / "fresh", 10)  # past settle, within older_than: the core still uses it
    assert "untouched for 30d (prune_empty_dirs)" in sandbox.run("plan", "-v").stderr

    run_ok(sandbox, "maintenance")
    assert not exports.exists()
    assert (sandbox.data / "logs" / "fresh").is_dir()
    assert (sandbox.data / "logs").is_dir()


def test_a_destination_bind_mounted_inside_a_root_is_never_archived_or_deleted(sandbox):
    """The config's check compares paths; a bind mount brings the backups into the root
    where no path says so. The walk knows them by (device, inode) and never enters them."""
    sandbox.config["policies"][0].update(include=["**"])
    sandbox.write_config()
    sandbox.file("a.log", "a\n", age_days=100)
    run_ok(sandbox, "maintenance")
    first = sandbox.runs()[-1]
    mnt = sandbox.data / "logs" / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "--bind", str(sandbox.backups), str(mnt)], check=True)
    try:
        for path in sandbox.backups.rglob("*"):
            _age(path, 100)
        plan = sandbox.run("plan", "--json")
        assert [d["path"] for p in json.loads(plan.stdout)["policies"] for d in p["decisions"]] == []
        run_ok(sandbox, "maintenance")
        held = sorted(p.name for p in (sandbox.backups / first).iterdir())
        assert held == ["MANIFEST.json", "SHA256SUMS", "logs.sha256", "logs.tar.zst"]
        skips = [r for r in log_records(sandbox) if r["event"] == "skip" and r.get("path") == "mnt"]
        assert skips and "the toolkit's own destination local" in skips[-1]["reason"]
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)
