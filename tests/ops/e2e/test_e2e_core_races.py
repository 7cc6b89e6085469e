"""The trading core keeps writing while a run is under way: a file it touches between two
steps is never deleted, and a directory it swaps for a symlink leads nowhere outside."""

import json
import os
import shutil

import pytest
from e2e_support import assert_nothing_lost, events_for

from tools.sandbox import tar_members


def _steps(sandbox, *steps: str) -> None:
    for step in steps:
        done = sandbox.run(step)
        assert done.returncode == 0, f"{step}: {done.stderr}"


def _records(sandbox, policy: str = "logs") -> dict[str, dict]:
    lines = sandbox.run_dir().joinpath(f"backup.{policy}.jsonl").read_bytes().splitlines()
    return {r["path"]: r for r in map(json.loads, lines)}


def test_file_appended_after_scan_is_not_archived_as_ok_and_not_deleted(sandbox, tmp_path):
    grows = sandbox.file("orders/2026-10-01.log", "fill 1\n" * 50)
    sandbox.file("orders/2026-10-02.log", "fill 2\n" * 50)
    _steps(sandbox, "scan")
    with open(grows, "ab") as f:  # the core reopens an old journal and appends to it
        f.write(b"late fill\n")
    grown = grows.read_bytes()
    before = sandbox.snapshot()

    _steps(sandbox, "backup", "verify", "clean")

    assert grows.read_bytes() == grown
    record = _records(sandbox)["orders/2026-10-01.log"]
    assert record["status"] != "archived", record
    assert "orders/2026-10-01.log" not in tar_members(sandbox.backups / sandbox.runs()[-1] / "logs.tar.zst")
    assert not events_for(sandbox, "orders/2026-10-01.log", "deleted")
    assert assert_nothing_lost(sandbox, before, tmp_path / "restored") == {"logs/orders/2026-10-02.log"}


def _append(path) -> None:
    with open(path, "ab") as f:
        f.write(b"one more line\n")


def _rewrite_in_place_keeping_size_and_mtime(path) -> None:
    st = os.stat(path)
    data = path.read_bytes()
    with open(path, "r+b") as f:
        f.write(bytes([data[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # only ctime tells


def _replace_with_same_size_and_mtime(path) -> None:
    st = os.stat(path)
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(path.read_bytes().upper())
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)  # another inode under the same name


@pytest.mark.parametrize(
    "change",
    [_append, _rewrite_in_place_keeping_size_and_mtime, _replace_with_same_size_and_mtime],
    ids=["appended", "rewritten_same_size_and_mtime", "replaced_same_size_and_mtime"],
)
def test_clean_keeps_file_changed_after_backup(sandbox, tmp_path, change):
    changed = sandbox.file("bars/2026-09-30.log", "bar 100.5 101.0\n" * 40)
    sandbox.file("bars/2026-09-29.log", "bar 99.5 100.0\n" * 40)
    _steps(sandbox, "scan", "backup", "verify")
    change(changed)
    now = changed.read_bytes()
    before = sandbox.snapshot()

    _steps(sandbox, "clean")

    assert changed.read_bytes() == now, "a file changed after backup was deleted or altered"
    [kept] = events_for(sandbox, "bars/2026-09-30.log")
    assert kept["event"] == "kept" and kept["reason"].startswith("changed since backup"), kept
    assert assert_nothing_lost(sandbox, before, tmp_path / "restored") == {"logs/bars/2026-09-29.log"}


def test_parent_swapped_for_symlink_outside_root_touches_nothing_outside(sandbox, tmp_path):
    root = sandbox.data / "logs"
    for name in ("a.log", "b.log"):
        sandbox.file(f"moved/{name}", f"moved {name}\n" * 30)
        sandbox.file(f"decoyed/{name}", f"decoyed {name}\n" * 30)
    sandbox.file("stays.log", "stays\n" * 30)
    _steps(sandbox, "scan", "backup", "verify")

    # moved/: the core moves the directory out of the root and leaves a symlink to it, so
    # outside are the very inodes that were backed up (identical device, inode, size, times).
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.move(root / "moved", outside / "moved")
    os.symlink(outside / "moved", root / "moved")
    # decoyed/: renamed inside the root; in its place a symlink to other files of the same names.
    os.rename(root / "decoyed", root / "decoyed.orig")
    (outside / "decoy").mkdir()
    for name in ("a.log", "b.log"):
        (outside / "decoy" / name).write_text(f"not ours {name}\n" * 30)
    os.symlink(outside / "decoy", root / "decoyed")
    outside_before = {p: p.read_bytes() for p in outside.rglob("*.log")}
    inside_before = {p: p.read_bytes() for p in (root / "decoyed.orig").glob("*.log")}

    _steps(sandbox, "clean")

    assert {p: p.read_bytes() for p in outside.rglob("*.log") if p.exists()} == outside_before, (
        "clean followed a symlink out of the policy root"
    )
    assert {p: p.read_bytes() for p in (root / "decoyed.orig").glob("*.log")} == inside_before
    assert (root / "moved").is_symlink() and (root / "decoyed").is_symlink(), "a symlink was deleted as data"
    for d in ("moved", "decoyed"):
        for name in ("a.log", "b.log"):
            [decision] = events_for(sandbox, f"{d}/{name}")
            assert decision["event"] == "kept", decision
    assert not (root / "stays.log").exists(), "the file outside the swapped directories was not cleaned"
