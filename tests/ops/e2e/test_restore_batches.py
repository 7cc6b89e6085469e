"""Restore writes, checks, makes durable and names its files a batch at a time
(ops/restore/batch.py). Killed at each point of that path, no file may ever have its final
name with content that was not checked and made durable first, and the rerun finishes the
restore with every file right and no temporary file left.

What the kernel had made durable at the kill cannot be seen from here (a power cut would
show it); what can be seen is the order: before the batch's sync no final name exists.
"""

import fcntl
import hashlib
import os

import pytest

from ops.restore import batch
from tools.sandbox import Sandbox

BATCH = 8


@pytest.fixture
def restorable(sandbox: Sandbox):
    files = {f"d{i % 3}/f{i:02}.log": os.urandom(1000 + i) for i in range(20)}
    files["big.log"] = os.urandom(3 << 20)  # several chunks
    for rel, data in files.items():
        sandbox.file(rel, data)
    assert sandbox.run("maintenance").returncode == 0
    return sandbox, sandbox.runs()[-1], files


def _named(target) -> dict[str, bytes]:
    return {
        str(p.relative_to(target)): p.read_bytes()
        for p in target.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def _temporaries(target) -> list:
    return [p for p in target.rglob(".*") if ".tmp-restore-" in p.name]


@pytest.mark.parametrize("pace", ["full", "gentle"])
@pytest.mark.parametrize(
    "point",
    ["restore.after_chunk:5", "restore.before_sync:1", "restore.before_sync:2", "restore.after_rename:3"],
)
def test_a_restore_killed_anywhere_names_only_checked_files_and_its_rerun_finishes(restorable, tmp_path, point, pace):
    sandbox, run_id, files = restorable
    target = tmp_path / "to"
    env = {"QTS_OPS_CRASH_AT": point, "QTS_OPS_RESTORE_BATCH": str(BATCH)}
    killed = sandbox.run("restore", "--run", run_id, "--to", str(target), "--pace", pace, env=env)
    assert killed.returncode == -9, killed.stderr
    named = _named(target / "logs") if (target / "logs").exists() else {}
    for rel, data in named.items():
        assert hashlib.sha256(data).digest() == hashlib.sha256(files[rel]).digest(), rel
    if point.startswith("restore.before_sync:1") or point.startswith("restore.after_chunk"):
        assert named == {}, "a file got its name before its batch was made durable"
    if point == "restore.before_sync:2":
        assert len(named) == BATCH, "the first batch was not named, or the second was named before its sync"
    rerun = sandbox.run("restore", "--run", run_id, "--to", str(target), "--pace", pace, "-v")
    assert rerun.returncode == 0, rerun.stderr
    assert _named(target / "logs") == files
    assert _temporaries(target) == []


def test_batches_are_bounded(monkeypatch):
    """The limits a batch commits at: files and bytes (one syncfs per batch of either)."""
    assert batch.BATCH_FILES >= 1024 and batch.BATCH_BYTES >= 64 << 20
    b = batch.Batch(target_fd=-1)
    b.pending = [None] * batch.BATCH_FILES
    assert b.full
    b.pending, b.bytes = [], batch.BATCH_BYTES
    assert b.full


def test_a_file_with_a_name_of_255_bytes_is_restored_and_its_leftovers_found(sandbox, tmp_path):
    long = "L" * 251 + ".log"
    files = {long: b"a long name\n", "short.log": b"short\n"}
    for rel, data in files.items():
        sandbox.file(rel, data)
    assert sandbox.run("maintenance").returncode == 0
    run_id = sandbox.runs()[-1]
    target = tmp_path / "to"
    killed = sandbox.run(
        "restore",
        "--run",
        run_id,
        "--to",
        str(target),
        "--pace",
        "gentle",
        env={"QTS_OPS_CRASH_AT": "restore.after_chunk:2"},
    )
    assert killed.returncode == -9
    r = sandbox.run("restore", "--run", run_id, "--to", str(target), "-v")
    assert r.returncode == 0, r.stderr
    assert _named(target / "logs") == files
    assert _temporaries(target) == []


def test_two_restores_at_once_the_second_is_told_to_wait(restorable, tmp_path):
    sandbox, run_id, _files = restorable
    fd = os.open(sandbox.state, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a restore running now holds it
        r = sandbox.run("restore", "--run", run_id, "--to", str(tmp_path / "to"))
    finally:
        os.close(fd)
    assert r.returncode == 75 and "another restore is running" in r.stderr
    assert not (tmp_path / "to").exists()
