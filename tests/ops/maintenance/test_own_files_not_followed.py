"""The toolkit's own files and directories (the lock, the log, the metrics state, runs/,
a run's directory, the catalogue, a run being compacted) are never reached through a
symlink, and a FIFO in their place never hangs a run.

Each is put there by hand, as a careless operator or another program would: a symlink to
a file outside (which writing through it would destroy), to /dev/zero (which reading
through it would never finish), or a FIFO (which opening would block a run holding the
lock, and every cron tick after it). The oracle: the thing pointed at is unchanged, the
data is unchanged unless the run could rightly finish, and no run takes longer than the
timeout.
"""

import json
import os
import stat
import subprocess
import time

import pytest

from ops.destinations import DestinationError
from ops.destinations.local import LocalDestination
from ops.logs.steplog import log_file

from ._operator_support import aged, compact_years_later, maintenance_script, read_metrics, sample
from ._support import RUN_B, chain_to, files_of, log_records, run_ok, tree, tree_diff

TIMEOUT = 60  # a hang is a failure, not a wait: each run here takes a second or two


@pytest.fixture
def victim(sandbox):
    """A file outside every location the toolkit may write, that a symlink will point at."""
    path = sandbox.base / "operator-notes.yaml"
    path.write_bytes(b"precious: operator's own file\n" * 80)
    return path


def _expired(sandbox) -> dict:
    for i in range(3):
        aged(sandbox, f"d/f{i}.log", b"line %d\n" % i * 50)
    return sandbox.snapshot()


def _link(path, target) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


def _fifo(path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)


@pytest.mark.parametrize("plant", ["link", "fifo"])
@pytest.mark.parametrize("which", ["lock", "log"])
def test_a_link_or_fifo_for_the_lock_or_the_log_fails_the_run_at_once_and_changes_nothing(
    sandbox, victim, which, plant
):
    data = _expired(sandbox)
    # The log's name has the month in it: should one begin meanwhile, its file is planted too.
    paths = {sandbox.state / "lock"} if which == "lock" else {log_file(sandbox.logs, time.time() + s) for s in (0, 60)}
    for path in paths:
        _link(path, victim) if plant == "link" else _fifo(path)
    before = victim.read_bytes()

    got = maintenance_script(sandbox, timeout=TIMEOUT)

    assert got.returncode == 1, got.stderr
    said = f"{'is a symbolic link' if plant == 'link' else 'is not a regular file'}; the {which} must be a regular file"
    assert any(f"{path} {said}" in got.stderr for path in paths), got.stderr
    assert victim.read_bytes() == before
    assert sandbox.snapshot() == data, "nothing was deleted"
    assert sandbox.runs() == [], "no run started"
    if which == "lock":
        status = run_ok(sandbox, "status")  # must not block on a FIFO either
        assert f"problem: {sandbox.state / 'lock'} {said}" in status.stdout

    for path in paths:
        path.unlink()
    run_ok(sandbox, "maintenance")
    assert sandbox.snapshot() == {}


@pytest.mark.parametrize("plant", ["fifo", "/dev/zero", "victim"])
def test_a_link_or_fifo_for_the_metrics_state_neither_hangs_nor_fails_the_run(sandbox, victim, plant):
    sandbox.config["metrics_file"] = "var/metrics/qts_ops.prom"
    sandbox.write_config()
    _expired(sandbox)
    state = sandbox.state / "metrics.json"
    if plant == "fifo":
        _fifo(state)
    else:
        _link(state, victim if plant == "victim" else plant)
    before = victim.read_bytes()

    run_ok(sandbox, "maintenance")  # metrics never fail a run; a hang would time out

    assert sandbox.snapshot() == {}
    assert victim.read_bytes() == before
    assert stat.S_ISREG(state.lstat().st_mode), "replaced by the toolkit's own file, as a damaged one is"
    counted = read_metrics(sandbox.base / "var/metrics/qts_ops.prom")
    assert sample(counted, "qts_ops_deleted_files_total", policy="logs") == 3, "and counting goes on"


def test_a_link_in_place_of_the_metrics_lock_is_not_opened_through(sandbox):
    sandbox.config["metrics_file"] = "var/metrics/qts_ops.prom"
    sandbox.write_config()
    _expired(sandbox)
    _link(sandbox.state / "metrics.lock", sandbox.base / "created-through-a-link")

    run_ok(sandbox, "maintenance")  # metrics never fail a run

    assert sandbox.snapshot() == {}
    assert not (sandbox.base / "created-through-a-link").exists()


def _foreign_dir(sandbox):
    """Somebody else's directory, mode 0755, with one file in it."""
    foreign = sandbox.base / "elsewhere"
    foreign.mkdir(mode=0o755)
    foreign.chmod(0o755)
    (foreign / "theirs.txt").write_bytes(b"not the toolkit's\n")
    return foreign


def test_runs_dir_as_a_symlink_makes_scan_fail_and_nothing_is_written_through_it(sandbox):
    data = _expired(sandbox)
    foreign = _foreign_dir(sandbox)
    _link(sandbox.state / "runs", foreign)

    got = sandbox.run("scan", "--run", RUN_B, timeout=TIMEOUT)

    assert got.returncode == 1, got.stderr
    assert f"{sandbox.state / 'runs'} is a symbolic link" in got.stderr
    assert os.listdir(foreign) == ["theirs.txt"] and stat.S_IMODE(foreign.stat().st_mode) == 0o755
    assert sandbox.snapshot() == data


def test_runs_dir_swapped_for_a_symlink_to_old_finished_runs_is_neither_compacted_nor_resumed(sandbox):
    for name in ("first", "second"):
        aged(sandbox, f"{name}.log", b"%s\n" % name.encode())
        run_ok(sandbox, "maintenance")
    os.rename(sandbox.state / "runs", sandbox.base / "moved-runs")
    os.symlink(sandbox.base / "moved-runs", sandbox.state / "runs")
    moved = tree(sandbox.base / "moved-runs")
    data = _expired(sandbox)

    # Compaction runs after a maintenance that succeeded: here, as if runs/ had been swapped during one.
    assert compact_years_later(sandbox) == 0
    got = maintenance_script(sandbox, timeout=TIMEOUT)

    assert got.returncode == 1, got.stderr
    assert f"{sandbox.state / 'runs'} is a symbolic link" in got.stderr
    assert tree_diff(moved, tree(sandbox.base / "moved-runs")) == []
    assert not (sandbox.state / "compacted").exists()
    assert sandbox.snapshot() == data


def test_compaction_removes_no_leftover_through_a_runs_dir_swapped_for_a_symlink(sandbox):
    """Compaction removes what an earlier removal of a packed run left (``.<id>.removing``).
    Through a runs/ that is a link, such a name is somebody else's: it stays."""
    aged(sandbox, "a.log", b"a\n")
    run_ok(sandbox, "maintenance")
    elsewhere = sandbox.base / "elsewhere"
    os.rename(sandbox.state / "runs", elsewhere)
    os.symlink(elsewhere, sandbox.state / "runs")
    theirs = elsewhere / f".{RUN_B}.removing"
    theirs.mkdir()
    (theirs / "keep.me").write_bytes(b"not the toolkit's\n")
    assert compact_years_later(sandbox) == 0
    assert (theirs / "keep.me").read_bytes() == b"not the toolkit's\n"


@pytest.mark.parametrize("step", ["backup", "verify", "clean"])
def test_a_run_directory_swapped_for_a_symlink_to_its_copy_is_refused(sandbox, step):
    """The manifests through the link are the run's own, to the byte, so only the link
    itself tells: the step would read its chain, and write its manifest, elsewhere."""
    data = _expired(sandbox)
    prev = {"backup": "scan", "verify": "backup", "clean": "verify"}[step]
    chain_to(sandbox, prev, RUN_B)
    run_dir = sandbox.run_dir(RUN_B)
    moved = sandbox.base / "moved-run"
    os.rename(run_dir, moved)
    moved.chmod(0o755)
    os.symlink(moved, run_dir)
    state = files_of(moved)
    before = tree(sandbox.base)

    got = sandbox.run(step, "--run", RUN_B, timeout=TIMEOUT)

    assert got.returncode == 2, got.stderr
    assert f"{run_dir} is a symbolic link" in got.stderr
    assert files_of(moved) == state and stat.S_IMODE(moved.stat().st_mode) == 0o755
    assert tree_diff(before, tree(sandbox.base)) == []
    assert sandbox.snapshot() == data


def test_catalogue_as_a_symlink_makes_clean_fail_before_it_deletes_anything(sandbox):
    data = _expired(sandbox)
    chain_to(sandbox, "verify", RUN_B)
    foreign = _foreign_dir(sandbox)
    _link(sandbox.state / "catalogue", foreign)

    got = sandbox.run("clean", "--run", RUN_B, timeout=TIMEOUT)

    assert got.returncode == 1, got.stderr
    assert f"{sandbox.state / 'catalogue'} is a symbolic link" in got.stderr
    assert sandbox.snapshot() == data
    assert os.listdir(foreign) == ["theirs.txt"] and stat.S_IMODE(foreign.stat().st_mode) == 0o755

    os.unlink(sandbox.state / "catalogue")
    run_ok(sandbox, "clean", "--run", RUN_B)
    assert sandbox.snapshot() == {}


def test_compaction_packs_no_file_through_a_link_and_leaves_a_linked_run_alone(sandbox, victim):
    sandbox.config["compact_runs_after"] = "1s"
    sandbox.write_config()
    aged(sandbox, "a.log", b"first\n")
    run_ok(sandbox, "maintenance")
    (first,) = sandbox.runs()
    os.symlink(victim, sandbox.run_dir(first) / "notes.json")
    aged(sandbox, "b.log", b"second\n")
    run_ok(sandbox, "maintenance")
    second = sandbox.runs()[-1]
    moved = sandbox.base / "moved-run"
    os.rename(sandbox.run_dir(second), moved)
    os.symlink(moved, sandbox.run_dir(second))
    time.sleep(1.1)
    aged(sandbox, "c.log", b"third\n")

    run_ok(sandbox, "maintenance")

    packed = sandbox.state / "compacted" / f"{first}.tar.zst"
    listed = subprocess.run(["tar", "-tf", str(packed)], capture_output=True, text=True, check=True).stdout.split()
    assert f"{first}/clean.ok.json" in listed and f"{first}/notes.json" not in listed
    assert victim.exists(), "the link's target is not touched when the run's directory goes"
    assert sandbox.run_dir(second).is_symlink() and (moved / "clean.ok.json").exists()
    assert not (sandbox.state / "compacted" / f"{second}.tar.zst").exists()
    assert any(
        r["event"] == "compaction_skipped" and str(sandbox.run_dir(second)) in r["msg"] for r in log_records(sandbox)
    )


def test_a_symlink_named_as_a_run_on_the_destination_is_neither_published_over_nor_counted(sandbox):
    data = _expired(sandbox)
    chain_to(sandbox, "scan", RUN_B)
    foreign = _foreign_dir(sandbox)
    sandbox.backups.mkdir(parents=True)
    _link(sandbox.backups / RUN_B, foreign)

    got = sandbox.run("backup", "--run", RUN_B, timeout=TIMEOUT)

    assert got.returncode == 1, got.stderr
    assert f"{sandbox.backups / RUN_B} already exists; refusing to overwrite a published run" in got.stderr
    assert os.listdir(foreign) == ["theirs.txt"] and stat.S_IMODE(foreign.stat().st_mode) == 0o755
    assert sorted(os.listdir(sandbox.backups)) == [RUN_B], "no staging left either"
    status = json.loads(run_ok(sandbox, "status", "--json").stdout)
    assert status["destinations"]["local"] == {"runs": 0, "bytes": 0}
    assert sandbox.snapshot() == data


def test_restore_passes_over_a_destination_whose_run_directory_is_a_symlink(sandbox, tmp_path):
    sandbox.config["backup"]["destinations"].append({"name": "second", "type": "local", "path": "var/second"})
    sandbox.write_config()
    data = _expired(sandbox)
    run_ok(sandbox, "maintenance")
    (run_id,) = sandbox.runs()
    os.rename(sandbox.backups / run_id, sandbox.base / "moved-run")
    os.symlink(sandbox.base / "moved-run", sandbox.backups / run_id)  # the first destination tried

    run_ok(sandbox, "restore", "--run", run_id, "--to", str(tmp_path / "back"))  # read through the link: refused

    back = tmp_path / "back"
    assert {str(p.relative_to(back)): p.read_bytes() for p in back.rglob("*") if p.is_file()} == data


def test_publish_never_renames_over_a_dangling_link_that_took_the_run_s_name_meanwhile(tmp_path):
    """In-process, on the real class: the link appears between begin_run and publish."""
    dest = LocalDestination("local", tmp_path / "backups")
    staging = dest.begin_run(RUN_B)
    staging.create("a.tar").write(b"archive bytes")
    os.symlink(tmp_path / "nowhere", tmp_path / "backups" / RUN_B)

    with pytest.raises(DestinationError, match="already exists; refusing to overwrite"):
        staging.publish()
    staging.abort()

    assert os.readlink(tmp_path / "backups" / RUN_B) == str(tmp_path / "nowhere")
    assert os.listdir(tmp_path / "backups") == [RUN_B] and not (tmp_path / "nowhere").exists()


def test_a_staging_directory_swapped_for_a_link_mid_backup_gets_no_file_and_publishes_nothing(tmp_path):
    """In-process, on the real class: the swap happens between two files of the run."""
    dest = LocalDestination("local", tmp_path / "backups")
    staging = dest.begin_run(RUN_B)
    staging.create("a.tar").write(b"archive bytes")
    (foreign := tmp_path / "foreign").mkdir()
    os.rename(staging.dir, tmp_path / "moved-staging")
    os.symlink(foreign, staging.dir)

    staging.create("SHA256SUMS").write(b"sums")  # still made in the staging directory, wherever it went
    with pytest.raises(DestinationError, match="was replaced during the backup; nothing was published"):
        staging.publish()
    staging.abort()

    assert os.listdir(foreign) == []
    assert sorted(os.listdir(tmp_path / "moved-staging")) == ["SHA256SUMS", "a.tar"]
    assert not os.path.lexists(tmp_path / "backups" / RUN_B)


def test_a_staging_directory_swapped_for_a_link_just_before_the_rename_is_not_published(tmp_path, monkeypatch):
    """The last moment before publish renames by name (its crash point): the run's name
    must not end up a link to someone else's directory."""
    from ops.destinations import local

    dest = LocalDestination("local", tmp_path / "backups")
    staging = dest.begin_run(RUN_B)
    staging.create("a.tar").write(b"archive bytes")
    (foreign := tmp_path / "foreign").mkdir()

    def swap(point: str) -> None:
        if point == "publish.before_rename":
            os.rename(staging.dir, tmp_path / "moved-staging")
            os.symlink(foreign, staging.dir)

    monkeypatch.setattr(local.crashpoints, "reach", swap)
    with pytest.raises(DestinationError, match="was replaced during the backup; nothing was published"):
        staging.publish()
    staging.abort()

    assert not os.path.lexists(tmp_path / "backups" / RUN_B)
    assert os.listdir(foreign) == []
    assert os.listdir(tmp_path / "moved-staging") == ["a.tar"]
