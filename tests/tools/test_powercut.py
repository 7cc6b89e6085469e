"""The power-cut layer and its campaign, on a real FUSE mount: the layer forgets what was
not made durable and keeps what was (the self-check), a cut keeps the inodes it did not
touch, and a seeded slice of the campaign loses nothing. Each defect the campaign found
has its regression test here, on the layer that found it (and one without FUSE in
tests/ops/maintenance/test_run_identity.py)."""

import json
import os
import subprocess

import pytest

from ops.restore import batch
from ops.sys.atomic import fsync_dir, syncfs_reaches_disk
from tools.chaos.runner import fork_run
from tools.powercut import campaign, report
from tools.powercut.layer import LOCK, Power, fuse_missing
from tools.powercut.selfcheck import self_check
from tools.powercut.trial import rebased
from tools.sandbox import Sandbox

WHY = fuse_missing()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"the power-cut layer cannot mount here: {WHY}")
OLD = 100  # days


@pytest.fixture
def power(tmp_path):
    with Power(tmp_path / "layer", LOCK, seed=3) as p:
        yield p


def test_the_self_check_passes_every_check(tmp_path):
    checks = self_check(tmp_path / "self-check", LOCK)
    text, ok = report.self_check_lines(checks)
    assert ok, text
    assert len(checks) == 9


def test_unsynced_appends_leave_a_prefix_never_the_whole_and_synced_ones_stay(power):
    pieces = [bytes([65 + i]) * (100 + i) for i in range(6)]
    whole = b"".join(pieces)
    for attempt in range(5):
        name = power.mnt / f"journal-{attempt}"
        with open(name, "wb", buffering=0) as f:
            for piece in pieces[:3]:
                f.write(piece)
            os.fsync(f.fileno())
            for piece in pieces[3:]:
                f.write(piece)
        fsync_dir(power.mnt)
        power.cut()
        got = name.read_bytes()
        assert whole.startswith(got) and len(b"".join(pieces[:3])) <= len(got) < len(whole)


def test_a_cut_keeps_the_inode_and_ctime_of_what_it_did_not_touch(power):
    keep = power.mnt / "kept"
    keep.write_bytes(b"durable\n")
    with open(keep, "rb") as f:
        os.fsync(f.fileno())
    fsync_dir(power.mnt)
    before = os.stat(keep)
    (power.mnt / "lost").write_bytes(b"never synced\n")
    power.cut()
    after = os.stat(keep)
    assert (after.st_ino, after.st_ctime_ns, after.st_size) == (before.st_ino, before.st_ctime_ns, before.st_size)
    assert not (power.mnt / "lost").exists()


def test_syncfs_is_not_trusted_on_the_layer_nor_on_proc_but_is_on_the_local_disk(power, tmp_path):
    for path, trusted in ((power.mnt, False), ("/proc", False), (tmp_path, True)):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert syncfs_reaches_disk(fd) is trusted, path
        finally:
            os.close(fd)


def _sandbox_on(power: Power) -> tuple[Sandbox, Sandbox]:
    """A sandbox written straight to the backing (durable), and the same seen on the mount."""
    sb = Sandbox(power.backing / "sb")
    for i in range(6):
        sb.file(f"d{i % 2}/{i}.log", f"log line {i}\n" * (i + 1), age_days=OLD)
    return sb, rebased(sb, power.mnt / "sb")


def test_a_first_maintenance_leaves_its_state_and_destination_durable(power, tmp_path):
    """var/ (state, log, backups) did not exist: maintenance made it with mkdir -p and
    never synced the new names in their parents. Its archives were all fsynced, its
    deletions durable, and at the next power cut var/ vanished with every copy. The
    month's log file, never synced in its directory, vanished too, with its lines."""
    sb, on = _sandbox_on(power)
    assert not sb.state.exists()
    got = fork_run(on, "maintenance", out_dir=tmp_path)
    assert got.code == 0, got.out
    power.cut()  # at rest: the run finished, and only what it made durable is left
    assert not list((sb.data / "logs").rglob("*.log"))  # the deletions were durable
    (run_id,) = os.listdir(sb.backups)
    sums = subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=sb.backups / run_id, capture_output=True)
    assert sums.returncode == 0, sums.stdout
    assert (sb.state / "runs" / run_id / "clean.ok.json").exists()
    (log,) = sb.logs.iterdir()  # the month's log, created by this run: its name and lines kept
    events = [json.loads(line) for line in log.read_bytes().splitlines()]
    assert sum(e["event"] == "deleted" for e in events) == 6


@pytest.mark.parametrize("pace", ["full", "gentle"])
def test_a_restore_that_exited_0_is_durable_on_a_file_system_whose_syncfs_does_not_reach_the_disk(
    power, tmp_path, pace
):
    """At the full pace restore made its files durable with syncfs, which FUSE passes to no
    server (nor does it reach the disk on every network file system): after a power cut
    the restored names were missing, or present with content lost."""
    sb, on = _sandbox_on(power)
    want = {p.relative_to(sb.data / "logs"): p.read_bytes() for p in (sb.data / "logs").rglob("*.log")}
    assert fork_run(on, "maintenance", out_dir=tmp_path).code == 0
    power.cut()
    to = on.base / "restored"
    args = ("--run", sb.runs()[-1], "--policy", "logs", "--to", str(to), "--pace", pace)
    got = fork_run(on, "restore", *args, out_dir=tmp_path)
    assert got.code == 0, got.out
    power.cut()
    back = sb.base / "restored" / "logs"
    assert {p.relative_to(back): p.read_bytes() for p in back.rglob("*.log")} == want


def test_a_seeded_slice_of_the_campaign_loses_nothing(tmp_path):
    results = campaign.run_campaign(seed=26, trials=16, work=tmp_path / "w", workers=1)
    text, passed = report.table(results)
    assert passed, text + report.failures(results, 26, 16)
    cuts = sum(o.faults for o in results)
    assert cuts >= 16 and sum(o.rest_cuts for o in results) >= 16, text
    assert sum(o.dropped_writes for o in results) > 0 and sum(o.dropped_entries for o in results) > 0, text
    assert not [line for line in open("/proc/self/mounts") if str(tmp_path) in line]


def test_a_file_restored_into_its_root_has_its_mark_durable_before_its_name(power, tmp_path, monkeypatch):
    """Restore marks each file it puts back into a root, so that scan keeps it for
    restore_grace instead of expiring it again. The marks were written but not synced (nor
    was their file's name) before the files got their names: after a power cut, files back
    under their names with no mark, deleted again by the next run. (Found by a durability
    review of the power-cut work.)"""
    sb, on = _sandbox_on(power)
    assert fork_run(on, "maintenance", out_dir=tmp_path).code == 0
    power.cut()
    # A batch a file (set here: the forked restore inherits it, and QTS_OPS_RESTORE_BATCH is
    # read when the module is first imported, which another test may have done already).
    monkeypatch.setattr(batch, "BATCH_FILES", 1)
    env = {"QTS_OPS_CRASH_AT": "restore.after_rename:3"}
    got = fork_run(on, "restore", "--run", sb.runs()[-1], "--pace", "gentle", env=env, out_dir=tmp_path)
    assert got.code == -9, got.out
    power.cut()
    back = {str(p.relative_to(sb.data / "logs")) for p in (sb.data / "logs").rglob("*.log")}
    assert len(back) >= 2
    marks = sb.state / "restored.jsonl"
    marked = {json.loads(line)["path"] for line in marks.read_bytes().splitlines()} if marks.exists() else set()
    assert back <= marked


def test_a_run_directory_a_killed_scan_left_is_made_durable_by_the_run_that_takes_it_up(power, tmp_path):
    """A scan killed between its mkdir of runs/<id> and the sync of runs/ leaves a name that
    is not durable; the maintenance that takes the run up found the directory there and
    synced nothing, so a power cut after the whole run took its directory, manifests and
    all. (Found by a durability review of the power-cut work.)"""
    sb, on = _sandbox_on(power)
    (on.state / "runs").mkdir(parents=True, mode=0o700)
    for d in (on.state / "runs", on.state, on.state.parent, on.base):
        fsync_dir(d)
    run_id = "20991231T235959Z-abcd"  # the newest run: the one maintenance takes up
    (on.state / "runs" / run_id).mkdir(mode=0o700)  # the killed scan's mkdir, not synced
    got = fork_run(on, "maintenance", out_dir=tmp_path)
    assert got.code == 0, got.out
    power.cut()
    assert (sb.state / "runs" / run_id / "clean.ok.json").exists()
