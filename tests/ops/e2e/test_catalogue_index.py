"""The catalogue's index (ops/state/catindex.py) and restore by path pattern, through the
real scripts: find answers from the index, brought up to date from the JSON-lines blocks
(the durable record) whatever state the index is in; restore FILE='<glob>' brings back
every match from its newest copy, one archive read per run, and writes nothing on a conflict."""

import fnmatch
import json
import os
import shutil
import sqlite3
import subprocess

from ops.state.catalogue import DIR
from ops.state.catindex import INDEX
from tools.sandbox import DAY, SCRIPTS


def _two_runs(sandbox):
    """Run 1 deletes two January ticks and a February one; run 2 a third January one and a
    second version of a path run 1 deleted. Returns {relative path: newest content}."""
    first = {"2026/01/a.log": b"a1\n", "2026/01/b.log": b"b1\n", "2026/02/x.log": b"x1\n"}
    for rel, data in first.items():
        sandbox.file(rel, data)
    assert sandbox.run("maintenance").returncode == 0
    second = {"2026/01/c.log": b"c2\n", "2026/01/a.log": b"a2, written again\n"}
    for rel, data in second.items():
        sandbox.file(rel, data)
    assert sandbox.run("maintenance").returncode == 0
    assert len(sandbox.runs()) == 2
    return {**first, **second}


def _find(sandbox, pattern: str) -> list[dict]:
    r = sandbox.run("find", "--file", pattern, "--json")
    assert r.returncode in (0, 1), r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_restore_by_glob_brings_back_every_match_from_its_newest_copy(sandbox):
    files = _two_runs(sandbox)
    logs = sandbox.data / "logs"
    r = sandbox.run("restore", "--file", str(logs / "2026/01/*"), "-v")
    assert r.returncode == 0, r.stderr
    back = {str(p.relative_to(logs)): p.read_bytes() for p in logs.rglob("*.log")}
    assert back == {k: v for k, v in files.items() if k.startswith("2026/01/")}
    assert back["2026/01/a.log"] == b"a2, written again\n"
    runs = sandbox.runs()
    assert "3 files (" in r.stderr and f"{runs[0]} (1)" in r.stderr and f"{runs[1]} (2)" in r.stderr


def test_restore_by_glob_to_another_place_through_make(sandbox, tmp_path):
    files = _two_runs(sandbox)
    out = tmp_path / "look"
    pattern = str(sandbox.data / "logs" / "2026" / "*")
    r = subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(SCRIPTS.parent),
            "restore",
            f"CONFIG={sandbox.config_path}",
            f"FILE={pattern}",
            f"TO={out}",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "QTS_OPS_PRIORITY": "normal"},
    )
    assert r.returncode == 0, r.stderr
    assert {str(p.relative_to(out / "logs")): p.read_bytes() for p in out.rglob("*.log")} == files
    assert not any((sandbox.data / "logs").rglob("*.log")), "TO= restored into the root too"


def test_a_conflict_on_a_glob_restore_writes_nothing(sandbox):
    _two_runs(sandbox)
    logs = sandbox.data / "logs"
    sandbox.file("2026/01/b.log", "the core wrote this since\n", age_days=0)
    r = sandbox.run("restore", "--file", str(logs / "2026/01/*"))
    assert r.returncode == 1
    assert "1 file(s) already exist at the restore target; nothing was restored" in r.stderr
    assert str(logs / "2026/01/b.log") in r.stderr
    assert sorted(p.name for p in logs.rglob("*") if p.is_file()) == ["b.log"]


def test_a_glob_restore_killed_part_way_is_finished_by_its_rerun(sandbox):
    files = _two_runs(sandbox)
    logs = sandbox.data / "logs"
    killed = sandbox.run("restore", "--file", str(logs / "*"), env={"QTS_OPS_CRASH_AT": "restore.after_rename:1"})
    assert killed.returncode == -9
    r = sandbox.run("restore", "--file", str(logs / "*"))
    assert r.returncode == 0, r.stderr
    assert {str(p.relative_to(logs)): p.read_bytes() for p in logs.rglob("*.log")} == files


def test_a_catalogue_written_before_the_index_is_found_after_the_upgrade(sandbox):
    _two_runs(sandbox)
    catalogue = sandbox.state / DIR
    for name in os.listdir(catalogue):
        if name.startswith(INDEX):
            os.unlink(catalogue / name)  # as a catalogue of the previous version: blocks only
    found = _find(sandbox, str(sandbox.data / "logs/2026/01/a.log"))
    assert [(e["run"], e["rel"]) for e in found] == [(r, "2026/01/a.log") for r in sandbox.runs()]
    assert (catalogue / INDEX).exists()
    (catalogue / INDEX).write_bytes(b"not a database at all" * 100)  # damaged: a cache, made anew
    for name in os.listdir(catalogue):
        if name.startswith(INDEX + "-"):
            os.unlink(catalogue / name)
    assert len(_find(sandbox, str(sandbox.data / "logs/*"))) == 5


def test_find_by_the_index_answers_as_a_scan_of_every_line_would(sandbox):
    for i in range(60):
        sandbox.file(f"{2026 + i % 2}/{i % 12 + 1:02}/t{i}.log", f"{i}\n")
    sandbox.file("odd [name]?.log", "odd\n")
    sandbox.file(os.fsdecode(b"caf\xe9.log"), "not utf-8\n")
    assert sandbox.run("maintenance").returncode == 0
    every = [json.loads(line) for p in sorted((sandbox.state / DIR).glob("*.jsonl")) for line in p.open()]
    root = str(sandbox.data / "logs")
    for pattern in (f"{root}/2026/0*", f"{root}/*/1?/*", f"{root}/*", "*/t1*.log", f"{root}/odd*"):
        want = sorted(e["path"] for e in every if fnmatch.fnmatchcase(e["path"], pattern))
        assert sorted(e["path"] for e in _find(sandbox, pattern)) == want, pattern
    exact = os.fsdecode(os.fsencode(root) + b"/caf\xe9.log")
    assert [e["path"] for e in _find(sandbox, exact)] == [exact]


def test_clean_indexes_its_run_and_says_what_it_cost(sandbox):
    for i in range(50):
        sandbox.file(f"d/{i}.log", f"{i}\n", age_days=40 + i / DAY)
    assert sandbox.run("maintenance").returncode == 0
    clean = json.loads((sandbox.run_dir() / "clean.ok.json").read_text())
    assert 0 <= clean["indexed_s"] < 5
    db = sqlite3.connect(sandbox.state / DIR / INDEX)
    assert db.execute("SELECT count(*) FROM files").fetchone() == (50,)


# --- rebuilding the catalogue from a destination --------------------------------------------


def _lose_the_state(sandbox) -> None:
    shutil.rmtree(sandbox.state)


def test_a_host_that_lost_its_state_rebuilds_its_catalogue_from_a_local_destination(sandbox):
    files = _two_runs(sandbox)
    _lose_the_state(sandbox)
    r = sandbox.run("catalogue_rebuild", "--dest", "local", "-v")
    assert r.returncode == 0, r.stderr
    assert "2 runs (5 files) added" in r.stderr  # three of run 1, two of run 2
    found = _find(sandbox, str(sandbox.data / "logs/2026/01/a.log"))
    assert [e["deleted_at"] for e in found] == [None, None] and found[-1]["rebuilt_from"] == "local"
    shown = sandbox.run("find", "--file", str(sandbox.data / "logs/2026/01/a.log"), env={"COLUMNS": "250"})
    assert "unknown" in shown.stdout
    r = sandbox.run("restore", "--file", str(sandbox.data / "logs/2026/*"))
    assert r.returncode == 0, r.stderr
    logs = sandbox.data / "logs"
    assert {str(p.relative_to(logs)): p.read_bytes() for p in logs.rglob("*.log")} == files
    again = sandbox.run("catalogue_rebuild", "--dest", "local", "-v")
    assert again.returncode == 0 and "0 runs (0 files) added, 2 already catalogued and kept" in again.stderr


def test_catalogue_rebuild_needs_a_destination_it_knows(sandbox):
    r = sandbox.run("catalogue_rebuild", "--dest", "nowhere")
    assert r.returncode == 78 and "no destination named 'nowhere'" in r.stderr


def test_an_index_that_is_a_link_is_never_followed(sandbox, tmp_path):
    _two_runs(sandbox)
    catalogue = sandbox.state / DIR
    for name in os.listdir(catalogue):
        if name.startswith(INDEX):
            os.unlink(catalogue / name)
    elsewhere = tmp_path / "elsewhere.db"
    os.symlink(elsewhere, catalogue / INDEX)
    r = sandbox.run("find", "--file", str(sandbox.data / "logs/*"))
    assert r.returncode == 1 and "is a symbolic link" in r.stderr
    assert not elsewhere.exists()


def test_a_file_goes_back_only_into_its_policy_root_of_this_config(sandbox, tmp_path):
    _two_runs(sandbox)
    moved = sandbox.data / "moved"
    sandbox.config["policies"][0]["root"] = "data/moved"  # the policy's root has moved since
    moved.mkdir()
    sandbox.write_config()
    old = sandbox.data / "logs/2026/01/a.log"
    for args in (["--file", str(old)], ["--file", str(sandbox.data / "logs/2026/*")]):
        r = sandbox.run("restore", *args)
        assert r.returncode == 1 and "which is not the root of policy logs" in r.stderr, r.stderr
        assert "FROM_OTHER_HOST=1" in r.stderr
    assert not old.exists()
    r = sandbox.run("restore", "--file", str(old), "--to", str(tmp_path / "look"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "look/logs/2026/01/a.log").read_bytes() == b"a2, written again\n"


def test_two_matches_bound_for_one_place_write_nothing(sandbox, tmp_path):
    sandbox.file("d0/f1.log", b"first root\n")
    assert sandbox.run("maintenance").returncode == 0
    sandbox.config["policies"][0]["root"] = "data/logs2"  # the same policy, a root of its own since
    (sandbox.data / "logs2/d0").mkdir(parents=True)
    sandbox.write_config()
    sandbox.file("d0/f1.log", b"second root\n", root="logs2")
    assert sandbox.run("maintenance").returncode == 0
    r = sandbox.run("restore", "--file", str(sandbox.data / "*" / "d0/f1.log"), "--to", str(tmp_path / "out"))
    assert r.returncode == 1 and "would receive more than one match; nothing was restored" in r.stderr
    assert not (tmp_path / "out").exists()


def test_a_single_file_already_back_is_kept_not_a_failure(sandbox):
    _two_runs(sandbox)
    path = str(sandbox.data / "logs/2026/02/x.log")
    assert sandbox.run("restore", "--file", path).returncode == 0
    r = sandbox.run("restore", "--file", path, "-v")
    assert r.returncode == 0 and "already back with its recorded content; kept" in r.stderr


def test_an_index_of_another_schema_is_made_anew(sandbox):
    _two_runs(sandbox)
    catalogue = sandbox.state / DIR
    for name in os.listdir(catalogue):
        if name.startswith(INDEX):
            os.unlink(catalogue / name)
    db = sqlite3.connect(catalogue / INDEX)
    db.execute("CREATE TABLE blocks (x)")
    db.commit()
    db.close()
    assert len(_find(sandbox, str(sandbox.data / "logs/*"))) == 5


def test_a_damaged_block_is_said_and_the_others_still_answer(sandbox):
    _two_runs(sandbox)
    first = sandbox.state / DIR / f"{sandbox.runs()[0]}.jsonl"
    lines = first.read_bytes().splitlines(keepends=True)
    first.write_bytes(lines[0] + b"not json at all\n" + b"".join(lines[1:]))
    r = sandbox.run("find", "--file", str(sandbox.data / "logs/*"), "--json")
    assert r.returncode == 0
    assert f"catalogue file {first} is damaged at line 2" in r.stderr
    found = [json.loads(line)["run"] for line in r.stdout.splitlines()]
    assert found.count(sandbox.runs()[1]) == 2 and found.count(sandbox.runs()[0]) == 1
