"""Regressions for the bugs the fault campaign found, each as the smallest real reproduction:
the real scripts, real files, the fault-injecting destination or a dropped uid where the
fault needs one."""

import errno
import json
import os
import signal
import subprocess
import sys

import pytest

from ops.maintenance.cleanup.step import UNLINK_WORKERS
from tools.chaos.files import put_file, remove_tree
from tools.chaos.inject import faultdest
from tools.chaos.trials.hostile import NOBODY, blocked_ancestor, drop_to_nobody
from tools.sandbox import SCRIPTS, log_events, popen, published_runs, tar_members


def _fault_env(n: int) -> dict:
    """The n-th fsync of publishing on "local" fails with EIO: injected by the destination
    subclass in tools/chaos/inject/faultdest.py (no device-mapper here for a disk that really fails)."""
    return {"QTS_CHAOS_FAULT": f"fsync-eio;dest=local;n={n}", "PYTHONPATH": str(faultdest.INJECT)}


def test_backup_whose_fsync_fails_at_any_point_of_publish_fails_and_leaves_nothing_to_adopt(sandbox):
    # Found by io-fsync-eio: the fsync of the destination's directory after the rename
    # failed, backup exited 1, yet the run stayed published; the rerun then adopted it as
    # if it were durable. Every fsync of publish is failed in turn, the last one included.
    for i in range(3):
        sandbox.file(f"2026/ticks-{i}.log", os.urandom(3000))
    assert sandbox.run("scan").returncode == 0
    [run_id] = sandbox.runs()
    failed_at = []
    for n in range(1, 20):
        got = sandbox.run("backup", env=_fault_env(n))
        if got.returncode == 0:
            break  # n is past the last fsync publish makes
        assert got.returncode == 1, got.stderr
        assert "Input/output error" in got.stderr
        assert published_runs(sandbox.backups) == [], f"fsync #{n} failed, yet the run is published"
        assert not [e for e in os.listdir(sandbox.backups) if e.startswith(".")], f"staging left after fsync #{n}"
        assert not sandbox.run_dir(run_id).joinpath("backup.ok.json").exists()
        failed_at.append(n)
    assert len(failed_at) >= 6, f"publish made fewer fsyncs than files + 2 directories: {failed_at}"
    assert published_runs(sandbox.backups) == [run_id], "the first fault-free backup did not publish"
    assert not [e for e in log_events(sandbox) if e["event"] == "adopted"], "a run whose fsync had failed was adopted"
    assert sorted(tar_members(sandbox.backups / run_id / "logs.tar.zst")) == [f"2026/ticks-{i}.log" for i in range(3)]


@pytest.fixture
def deep_dir(sandbox):
    """data/logs/d, removed with rm -rf afterwards: pytest's own clean-up of old temporary
    directories (shutil.rmtree) recurses and dies on a tree this deep."""
    yield sandbox.data / "logs" / "d"
    remove_tree(sandbox.data / "logs" / "d")


def test_scan_finds_a_file_whose_absolute_path_is_longer_than_path_max(sandbox, deep_dir):
    # Found by hostile-deep: the walk opened directories by their full path, so beneath
    # 4096 bytes from / it silently found nothing (no file, no log line: kept forever).
    depth = 2100  # "d/" per level: the bottom is ~4.2 KB below the root, whatever tmp_path is
    rel = b"d/" * depth + b"bottom.log"
    put_file(os.fsencode(sandbox.data / "logs"), rel, b"deep tick\n", 1_000_000_000)
    assert len(os.fsencode(sandbox.data / "logs")) + 1 + len(rel) > os.pathconf("/", "PC_PATH_MAX")

    for step in ("scan", "backup"):
        got = sandbox.run(step)
        assert got.returncode == 0, got.stderr
    scan = json.loads(sandbox.run_dir().joinpath("scan.ok.json").read_text())
    assert scan["policies"]["logs"]["expired"] == 1, "the file below PATH_MAX was not found"
    [run_id] = sandbox.runs()
    assert tar_members(sandbox.backups / run_id / "logs.tar.zst") == [os.fsdecode(rel)]


def test_scan_reports_a_directory_it_cannot_list(sandbox):
    # Found by hostile-uid: a directory the toolkit's user cannot read hid its expired
    # files without a word (the skip was reported only for names matching the include).
    sandbox.file("open/fills.log", "fill\n")
    sandbox.file("vault/orders.log", "order\n")
    for dirpath, dirs, files in os.walk(sandbox.base):
        for name in dirs + files:
            os.lchown(os.path.join(dirpath, name), NOBODY, NOBODY)
    os.chown(sandbox.base, NOBODY, NOBODY)
    os.chmod(sandbox.base, 0o755)
    vault = sandbox.data / "logs" / "vault"
    os.chown(vault, 0, 0)
    os.chmod(vault, 0o700)
    blocked = blocked_ancestor(sandbox.base, NOBODY, NOBODY)
    config = (blocked / sandbox.config_path.name) if blocked else sandbox.config_path
    env = dict(os.environ, QTS_OPS_PRIORITY="normal")
    env.pop("QTS_OPS_LOCK_FD", None)
    got = subprocess.run(
        [sys.executable, str(SCRIPTS / "scan.py"), "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        timeout=60,
        preexec_fn=drop_to_nobody(sandbox.base if blocked else None, blocked),
    )
    assert got.returncode == 0, got.stderr
    skips = [e for e in log_events(sandbox) if e["event"] == "skip"]
    assert [(e["path"], e["reason"]) for e in skips] == [("vault", "cannot read directory: Permission denied")]
    scan = json.loads(sandbox.run_dir().joinpath("scan.ok.json").read_text())
    assert scan["policies"]["logs"]["expired"] == 1


def test_clean_deletes_nothing_in_a_directory_the_core_moves_out_of_the_root_while_it_runs(sandbox, tmp_path):
    # Found by core-race, confirmed by hand: clean reused the descriptor of the previous
    # file's directory, so once the core had moved that directory out of the root (a
    # symlink left in its place) clean went on deleting in it, outside the root.
    root = sandbox.data / "logs"
    for i in range(2000):
        sandbox.file(f"ticks/f{i:04d}.log", f"tick {i}\n")
    for step in ("scan", "backup", "verify"):
        assert sandbox.run(step).returncode == 0
    clean = popen(sandbox, "clean")
    while len(os.listdir(root / "ticks")) > 1990:  # let it delete a few, then freeze it
        assert clean.poll() is None, "clean ended before it could be stopped"
    os.killpg(clean.pid, signal.SIGSTOP)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.rename(root / "ticks", outside / "ticks")
    os.symlink(outside / "ticks", root / "ticks")
    moved = set(os.listdir(outside / "ticks"))
    os.killpg(clean.pid, signal.SIGCONT)
    clean.communicate(timeout=60)

    assert clean.returncode == 0
    deleted_outside = moved - set(os.listdir(outside / "ticks"))
    # At most the files whose check and unlink the move fell between, one per unlink worker
    # (no system call deletes "this name only if its directory is still there"), each of
    # them the very file that was verified; before the fix, all.
    assert len(deleted_outside) <= UNLINK_WORKERS, f"clean deleted {len(deleted_outside)} files outside the root"
    assert (root / "ticks").is_symlink()


def test_a_failed_directory_fsync_takes_the_new_file_away(tmp_path, monkeypatch):
    """An fsync error after the rename must not leave a file a rerun would trust.

    The directory fsync is faked to fail: a real EIO from a disk cannot be made here
    (no device-mapper on this kernel)."""
    from ops.sys import atomic

    def failing_fsync_dir(path):
        raise OSError(errno.EIO, "injected: directory fsync failed")

    monkeypatch.setattr(atomic, "fsync_dir", failing_fsync_dir)
    target = tmp_path / "backup.ok.json"
    with pytest.raises(OSError):
        atomic.atomic_write(target, b"{}")
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir()] == []
