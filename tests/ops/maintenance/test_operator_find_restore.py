"""Getting one deleted file back by its path, months later: the catalogue clean writes,
scripts/find.py, scripts/restore.py --file, their make targets, compaction of old run state
(which must not break either), and status --json.

The shared sandbox ran maintenance twice: the first run deleted every expired file, then
twice.log was written again (new content, older mtime) and the second run deleted it too.
Each restore test takes a different file, so the tests do not depend on their order.
"""

import hashlib
import json
import os
import stat
import subprocess
import time

import pytest

from tools.sandbox import Sandbox

from ._operator_support import aged, compact_years_later, make
from ._support import archive_members, extract, files_of, run_ok

FIRST = {
    "a.log": b"alpha\n" * 40,
    "sub/b.log": b"bravo\n" * 30,
    "sub/deep/c.log": b"charlie\n" * 20,
    "d.log": b"delta\n" * 10,
    "e.log": b"echo\n" * 5,
    "twice.log": b"first copy\n",
}
SECOND = b"second copy, written after the first run deleted the first\n"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    sandbox = Sandbox(tmp_path_factory.mktemp("two_runs"))
    original = {}
    for rel, content in FIRST.items():
        p = aged(sandbox, rel, content)
        original[rel] = (content, p.stat().st_mtime_ns, stat.S_IMODE(p.stat().st_mode))
    aged(sandbox, "recent.log", b"young\n", age_days=1)
    run_ok(sandbox, "maintenance")
    p = aged(sandbox, "twice.log", SECOND, age_days=35)
    second = (SECOND, p.stat().st_mtime_ns, stat.S_IMODE(p.stat().st_mode))
    run_ok(sandbox, "maintenance")
    first_run, second_run = sandbox.runs()
    assert set(sandbox.snapshot()) == {"logs/recent.log"}
    return sandbox, first_run, second_run, original, second


def _path(sandbox, rel: str) -> str:
    return str(sandbox.data / "logs" / rel)


def _found(sandbox, pattern: str) -> list[dict]:
    result = run_ok(sandbox, "find", "--file", pattern, "--json")
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_find_lists_run_destination_archive_and_sha256_of_a_deleted_file(two_runs):
    sandbox, first_run, _second_run, original, _ = two_runs
    target = _path(sandbox, "a.log")
    table = run_ok(sandbox, "find", "--file", target)
    row = next(line for line in table.stdout.splitlines() if line.startswith(target + "\t"))
    want = hashlib.sha256(original["a.log"][0]).hexdigest()
    assert row.split("\t")[1:5] == [first_run, "local", "logs.tar.zst", want[:16]], row
    (entry,) = _found(sandbox, target)
    assert (entry["run"], entry["destinations"], entry["archive"], entry["sha256"], entry["policy"], entry["rel"]) == (
        first_run,
        ["local"],
        "logs.tar.zst",
        want,
        "logs",
        "a.log",
    )
    # where it says the copy lives, the copy is
    assert b"a.log" in archive_members(sandbox.backups / first_run / "logs.tar.zst")


def test_find_lists_every_run_that_deleted_the_same_path(two_runs):
    sandbox, first_run, second_run, original, second = two_runs
    entries = _found(sandbox, _path(sandbox, "twice.log"))
    assert [(e["run"], e["sha256"]) for e in entries] == [
        (first_run, hashlib.sha256(original["twice.log"][0]).hexdigest()),
        (second_run, hashlib.sha256(second[0]).hexdigest()),
    ]


def test_find_with_a_glob_lists_several_deleted_files(two_runs):
    sandbox, *_ = two_runs
    under_sub = _found(sandbox, _path(sandbox, "sub/*"))
    assert sorted(e["rel"] for e in under_sub) == ["sub/b.log", "sub/deep/c.log"], "a glob's * spans directories"
    everything = _found(sandbox, str(sandbox.data / "*.log"))
    assert sorted(e["rel"] for e in everything) == sorted([*FIRST, "twice.log"])


def test_find_exits_1_when_nothing_matches(two_runs):
    sandbox, *_ = two_runs
    for pattern in (_path(sandbox, "recent.log"), _path(sandbox, "never-existed.log"), "*/no-such-*.log"):
        result = sandbox.run("find", "--file", pattern)
        assert result.returncode == 1, (pattern, result.stdout, result.stderr)
        assert result.stdout == ""
        assert "nothing deleted by this toolkit matches" in result.stderr


def test_make_find_from_the_repo_root_lists_the_file(two_runs):
    sandbox, first_run, *_ = two_runs
    target = _path(sandbox, "d.log")
    result = make("find", f"CONFIG={sandbox.config_path}", f"FILE={target}")
    assert result.returncode == 0, result.stderr
    assert any(line.startswith(f"{target}\t{first_run}\tlocal\t") for line in result.stdout.splitlines()), result.stdout


def test_restore_file_puts_back_exactly_that_file_and_never_overwrites(two_runs):
    sandbox, _first, _second, original, _ = two_runs
    before = sandbox.snapshot()
    result = sandbox.run("restore", "--file", _path(sandbox, "a.log"))
    assert result.returncode == 0, result.stderr
    assert sandbox.snapshot() == {**before, "logs/a.log": original["a.log"][0]}, "exactly that one file came back"
    st = os.stat(_path(sandbox, "a.log"))
    assert (st.st_mtime_ns, stat.S_IMODE(st.st_mode)) == original["a.log"][1:]

    restored = sandbox.data / "logs" / "a.log"
    restored.write_bytes(b"the operator edited the restored file\n")
    again = sandbox.run("restore", "--file", _path(sandbox, "a.log"))
    assert again.returncode == 1, again.stderr
    assert "already exists" in again.stderr
    assert restored.read_bytes() == b"the operator edited the restored file\n", "an existing file was overwritten"


def test_restore_file_to_a_directory_puts_it_under_dir_policy_rel(two_runs, tmp_path):
    sandbox, _first, _second, original, _ = two_runs
    before = sandbox.snapshot()
    out = tmp_path / "out"
    result = sandbox.run("restore", "--file", _path(sandbox, "sub/deep/c.log"), "--to", str(out))
    assert result.returncode == 0, result.stderr
    restored = [os.path.relpath(os.path.join(d, n), out) for d, _dirs, files in os.walk(out) for n in files]
    assert restored == ["logs/sub/deep/c.log"]
    got = out / "logs" / "sub" / "deep" / "c.log"
    assert got.read_bytes() == original["sub/deep/c.log"][0]
    assert got.stat().st_mtime_ns == original["sub/deep/c.log"][1]
    assert sandbox.snapshot() == before, "--to wrote nothing at the original place"


def test_restore_file_takes_the_copy_of_the_newest_run_that_deleted_it(two_runs):
    sandbox, _first, _second, _original, second = two_runs
    result = sandbox.run("restore", "--file", _path(sandbox, "twice.log"))
    assert result.returncode == 0, result.stderr
    back = sandbox.data / "logs" / "twice.log"
    assert back.read_bytes() == SECOND
    assert back.stat().st_mtime_ns == second[1]


def test_make_restore_file_from_the_repo_root(two_runs):
    sandbox, _first, _second, original, _ = two_runs
    before = sandbox.snapshot()
    result = make("restore", f"CONFIG={sandbox.config_path}", f"FILE={_path(sandbox, 'e.log')}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert sandbox.snapshot() == {**before, "logs/e.log": original["e.log"][0]}


def test_status_json_reports_age_policies_on_disk_and_destination_usage(two_runs):
    sandbox, _first, second_run, *_ = two_runs
    result = run_ok(sandbox, "status", "--json")
    info = json.loads(result.stdout)
    assert info["last_complete_run"] == second_run
    age = info["last_complete_age_seconds"]
    finished = os.stat(sandbox.run_dir(second_run) / "clean.ok.json").st_mtime
    assert isinstance(age, int) and abs(age - (time.time() - finished)) <= 3, age
    on_disk = [p for p in (sandbox.data / "logs").rglob("*.log") if p.is_file()]  # other tests may have restored some
    oldest = min(p.stat().st_mtime_ns for p in on_disk)
    assert info["policies"] == {
        "logs": {
            "files": len(on_disk),
            "bytes": sum(p.stat().st_size for p in on_disk),
            "oldest": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(oldest // 10**9)),
        }
    }
    published = sorted(os.listdir(sandbox.backups))
    assert len(published) == 2
    used = sum(f.stat().st_size for run in published for f in (sandbox.backups / run).iterdir())
    assert {k: info["destinations"]["local"][k] for k in ("runs", "bytes")} == {"runs": 2, "bytes": used}


# -- compaction -------------------------------------------------------------------------------


@pytest.mark.parametrize("left", [["clean.journal.jsonl", "clean.ok.json"], ["scan.ok.json", "scan.logs.jsonl"]])
def test_a_compaction_cut_short_never_replaces_the_pack_nor_leaves_a_stuck_run(sandbox, left):
    """rmtree removes a packed run's directory file by file: a kill or a power cut part-way
    left some of its files. With clean.ok.json among them the next compaction packed the
    run again, replacing the whole pack with those files; without it the run was never
    compacted, and restore and scrub refused it every night. The pack now stands, and what
    is left of the directory goes (found by a durability review of the power-cut work)."""
    aged(sandbox, "a.log", b"first a\n")
    run_ok(sandbox, "maintenance")
    (first,) = sandbox.runs()
    aged(sandbox, "b.log", b"then b\n")
    run_ok(sandbox, "maintenance")
    assert compact_years_later(sandbox) == 1
    packed = sandbox.state / "compacted" / f"{first}.tar.zst"
    members = subprocess.run(["tar", "-tf", str(packed)], capture_output=True, text=True, check=True).stdout
    whole = packed.read_bytes()
    # What a removal cut short left of the run's directory: these files, back from the pack.
    (sandbox.state / "runs" / first).mkdir(mode=0o700)
    subprocess.run(
        ["tar", "-xf", str(packed), "-C", str(sandbox.state / "runs"), *[f"{first}/{n}" for n in left]], check=True
    )
    removing = sandbox.state / "runs" / f".{first}.removing"  # a rename done, its rmtree cut short
    removing.mkdir(mode=0o700)
    (removing / "scan.ok.json").write_bytes(b"{}")
    assert compact_years_later(sandbox) == 0
    assert packed.read_bytes() == whole and members.count(".json") >= 4
    assert first not in sandbox.runs() and not (sandbox.state / "runs" / first).exists()
    assert not [n for n in os.listdir(sandbox.state / "runs") if n.startswith(".")]


def test_compaction_packs_old_finished_runs_and_find_and_restore_still_work(sandbox, tmp_path):
    sandbox.config["compact_runs_after"] = "1s"
    sandbox.write_config()
    aged(sandbox, "a.log", b"first a\n")
    aged(sandbox, "b.log", b"only b\n")
    run_ok(sandbox, "maintenance")
    (first,) = sandbox.runs()
    first_state = files_of(sandbox.run_dir(first))
    time.sleep(1.1)
    aged(sandbox, "a.log", b"second a, newer copy\n", age_days=35)
    run_ok(sandbox, "maintenance")
    second = sandbox.runs()[-1]
    second_state = files_of(sandbox.run_dir(second))
    time.sleep(1.1)
    aged(sandbox, "c.log", b"third\n")
    run_ok(sandbox, "maintenance")
    third = sandbox.runs()[-1]

    compacted = sandbox.state / "compacted"
    assert sorted(os.listdir(compacted)) == [f"{first}.tar.zst", f"{second}.tar.zst"]
    assert sandbox.runs() == [third], "compacted runs' directories are gone, the newest stays"
    assert stat.S_IMODE(compacted.stat().st_mode) == 0o700
    for run_id, state in ((first, first_state), (second, second_state)):
        packed = compacted / f"{run_id}.tar.zst"
        assert stat.S_IMODE(packed.stat().st_mode) == 0o600
        listed = subprocess.run(["tar", "-tf", str(packed)], capture_output=True, text=True, check=True).stdout.split()
        for step in ("scan", "backup", "verify", "clean"):
            assert f"{run_id}/{step}.ok.json" in listed, listed
        extract(packed, tmp_path / run_id)
        assert files_of(tmp_path / run_id / run_id) == state, "compaction kept every byte of the run's state"

    # the newest run is never packed, however old it is
    assert compact_years_later(sandbox) == 0
    assert sandbox.runs() == [third]

    a_log = str(sandbox.data / "logs" / "a.log")
    assert [
        e["run"]
        for e in (json.loads(line) for line in run_ok(sandbox, "find", "--file", a_log, "--json").stdout.splitlines())
    ] == [first, second]
    run_ok(sandbox, "restore", "--file", a_log)
    run_ok(sandbox, "restore", "--file", str(sandbox.data / "logs" / "b.log"))
    assert sandbox.snapshot() == {"logs/a.log": b"second a, newer copy\n", "logs/b.log": b"only b\n"}


def test_a_file_unlinked_just_before_a_crash_is_still_in_the_catalogue(sandbox):
    """SIGKILL between an unlink and its journal line: the rerun sees the file gone, and
    the catalogue must still say where its verified copy is."""
    for name in ("a.log", "b.log", "c.log"):
        sandbox.file(name, f"content of {name}\n")
    crashed = sandbox.run("maintenance", env={"QTS_OPS_CRASH_AT": "clean.before_journal:2"})
    assert crashed.returncode == 1, crashed.stderr
    rerun = sandbox.run("maintenance")
    assert rerun.returncode == 0, rerun.stderr
    assert sandbox.snapshot() == {}
    for name in ("a.log", "b.log", "c.log"):
        found = sandbox.run("find", "--file", str(sandbox.data / "logs" / name), "--json")
        assert found.returncode == 0, (name, found.stderr)
        assert json.loads(found.stdout.splitlines()[-1])["run"] == sandbox.runs()[-1]
