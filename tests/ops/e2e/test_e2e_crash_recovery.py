"""SIGKILL at every crash point of the chain, then rerun: the work completes, nothing is
lost, nothing is deleted twice, and the destination holds the run exactly once."""

import json
import os
import signal
import time

import pytest
from e2e_support import assert_nothing_lost, deleted_counts

from tools.sandbox import add_policy, group_pids, lock_is_free, log_events, popen, published_runs, tar_members

# (crash point, the step that dies there): that step's success manifest must be missing
# after the crash, proof that the process really died at the point.
CRASH_POINTS = [
    ("scan.before_manifest", "scan"),
    ("backup.after_member", "backup"),
    ("backup.after_archive", "backup"),
    ("backup.before_publish", "backup"),
    ("publish.before_rename", "backup"),
    ("backup.after_publish", "backup"),
    ("backup.before_manifest", "backup"),
    ("verify.before_manifest", "verify"),
    ("clean.after_unlink", "clean"),
    ("clean.after_unlink:2", "clean"),
    ("clean.before_manifest", "clean"),
]

EXPIRED = {
    "logs": ["a/one.log", "a/two.log", "b/three.log", "b/deep/four.log", "five.log"],
    "journals": ["2026/orders.jsonl", "2026/fills.jsonl"],
}
YOUNG = {"logs": ["a/recent.log"], "journals": ["2026/today.jsonl"]}


def _populate(sandbox) -> set[str]:
    add_policy(sandbox, "journals", "journals", ["**/*.jsonl"], older_than="90d")
    for policy, paths in EXPIRED.items():
        for i, rel in enumerate(paths):
            sandbox.file(rel, os.urandom(700 + 97 * i) + rel.encode(), age_days=120, root=policy)
    for policy, paths in YOUNG.items():
        for rel in paths:
            sandbox.file(rel, f"young {rel}\n" * 20, age_days=1, root=policy)
    return {f"{policy}/{rel}" for policy, paths in EXPIRED.items() for rel in paths}


@pytest.mark.parametrize("point,step", CRASH_POINTS, ids=[p for p, _ in CRASH_POINTS])
def test_rerun_after_sigkill_completes_without_loss_or_double_work(sandbox, tmp_path, point, step):
    expired = _populate(sandbox)
    before = sandbox.snapshot()

    crashed = sandbox.run("maintenance", env={"QTS_OPS_CRASH_AT": point})
    assert crashed.returncode == 1, (
        f"a step killed by SIGKILL is a failed step (exit 1): {crashed.returncode}\n{crashed.stderr}"
    )
    [run_id] = sandbox.runs()
    assert not sandbox.run_dir(run_id).joinpath(f"{step}.ok.json").exists(), f"{point} was never reached"
    assert lock_is_free(sandbox.state), "the lock outlived the killed step"

    rerun = sandbox.run("maintenance")
    assert rerun.returncode == 0, rerun.stderr
    assert sandbox.runs() == [run_id], "the unfinished run was not resumed but started again"
    assert sandbox.run_dir(run_id).joinpath("clean.ok.json").exists()

    gone = assert_nothing_lost(sandbox, before, tmp_path / "restored")
    assert gone == expired, "the rerun did not finish deleting what expired (or deleted more)"

    # Exactly one published copy of the run, no staging left behind, no member twice.
    assert published_runs(sandbox.backups) == [run_id]
    run_dir = sandbox.backups / run_id
    assert sorted(os.listdir(run_dir)) == sorted(
        ["MANIFEST.json", "SHA256SUMS", "journals.sha256", "journals.tar.zst", "logs.sha256", "logs.tar.zst"]
    )
    for policy, paths in EXPIRED.items():
        assert sorted(tar_members(run_dir / f"{policy}.tar.zst")) == sorted(paths)

    # No file deleted twice: at most one "deleted" event per path over both attempts, and
    # a path without one was unlinked by the killed attempt (a batch whose log lines the
    # kill cut off), so the rerun found it gone and catalogued it.
    counts = deleted_counts(sandbox)
    deleted = {f"{policy}/{path}": n for (policy, path), n in counts.items()}
    assert set(deleted) <= expired and all(n == 1 for n in deleted.values()), deleted
    gone = {f"{e['policy']}/{e['path']}" for e in log_events(sandbox) if e["event"] == "gone"}
    assert expired - set(deleted) <= gone, "a deleted file has neither a deleted nor a gone line"
    lines = (sandbox.state / "catalogue" / f"{run_id}.jsonl").read_text().splitlines()
    catalogued = {f"{e['policy']}/{e['rel']}" for e in map(json.loads, lines)}
    assert catalogued == expired, "every deletion, logged or cut off, is in the catalogue"

    assert lock_is_free(sandbox.state)


def test_rerun_after_crash_between_two_destinations_publishes_the_run_on_both(sandbox, tmp_path):
    sandbox.config["backup"]["destinations"].append({"name": "offsite", "type": "local", "path": "var/offsite"})
    sandbox.config["backup"]["require_verified_copies"] = 2
    sandbox.write_config()
    expired = _populate(sandbox)
    before = sandbox.snapshot()
    offsite = sandbox.base / "var" / "offsite"

    # Killed after the first destination published the run, before the second did.
    crashed = sandbox.run("maintenance", env={"QTS_OPS_CRASH_AT": "publish.before_rename:2"})
    assert crashed.returncode == 1, crashed.stderr
    [run_id] = sandbox.runs()
    assert (sandbox.backups / run_id).is_dir() and not (offsite / run_id).exists(), "the crash missed its point"

    rerun = sandbox.run("maintenance")
    assert rerun.returncode == 0, rerun.stderr
    assert sandbox.runs() == [run_id]
    for dest in (sandbox.backups, offsite):
        assert published_runs(dest) == [run_id], f"{dest} does not hold exactly the run"
        assert assert_nothing_lost(sandbox, before, tmp_path / dest.name, backups=dest) == expired
    verify = json.loads(sandbox.run_dir(run_id).joinpath("verify.ok.json").read_text())
    assert verify["verified"] == ["local", "offsite"]


def _clean_caught_mid_pass(sandbox, files: int = 5000):
    """(clean's process, its expired files, the snapshot before) with clean frozen (SIGSTOP on
    its process group) after its first deletions, while its workers still have batches to do."""
    names = [f"ticks/f{i:05d}.log" for i in range(files)]
    for name in names:
        sandbox.file(name, f"tick {name}\n")
    before = sandbox.snapshot()
    for step in ("scan", "backup", "verify"):
        assert sandbox.run(step).returncode == 0
    ticks = sandbox.data / "logs" / "ticks"
    clean = popen(sandbox, "clean")
    while len(os.listdir(ticks)) > files - 10:
        assert clean.poll() is None, "clean ended before it could be stopped"
    os.killpg(clean.pid, signal.SIGSTOP)
    return clean, {f"logs/{n}" for n in names}, before


def _assert_the_rerun_finishes(sandbox, tmp_path, expired: set[str], before: dict) -> None:
    assert lock_is_free(sandbox.state), "the lock outlived the failed clean"
    [run_id] = sandbox.runs()
    assert not sandbox.run_dir(run_id).joinpath("clean.ok.json").exists()
    rerun = sandbox.run("clean")
    assert rerun.returncode == 0, rerun.stderr
    assert assert_nothing_lost(sandbox, before, tmp_path / "restored") == expired
    counts = deleted_counts(sandbox)
    assert all(n == 1 for n in counts.values()), "a file was deleted twice"
    lines = (sandbox.state / "catalogue" / f"{run_id}.jsonl").read_text().splitlines()
    assert {f"{e['policy']}/{e['rel']}" for e in map(json.loads, lines)} == expired


def test_a_clean_whose_unlink_workers_are_killed_fails_and_its_rerun_finishes(sandbox, tmp_path):
    """Every worker is killed mid-pass (any one of them might already have answered its
    last batch): clean fails closed, naming a worker, and the rerun finishes the job."""
    clean, expired, before = _clean_caught_mid_pass(sandbox)
    workers = [pid for pid in group_pids(clean.pid) if pid != clean.pid]
    assert workers, "clean had no worker processes to kill"
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    os.killpg(clean.pid, signal.SIGCONT)
    _, stderr = clean.communicate(timeout=60)
    assert clean.returncode == 1, stderr
    assert any(f"worker process {pid}" in stderr for pid in workers), stderr
    _wait_until_gone(clean.pid)
    _assert_the_rerun_finishes(sandbox, tmp_path, expired, before)


def test_no_unlink_worker_outlives_a_sigkilled_clean(sandbox, tmp_path):
    """Only clean's own process is killed, its workers frozen mid-batch: they die with it,
    so none goes on deleting. (That a worker never holds the lock is test_forked_workers'.)"""
    clean, expired, before = _clean_caught_mid_pass(sandbox)
    assert len(group_pids(clean.pid)) > 1, "clean had no worker processes"
    clean.kill()
    clean.communicate(timeout=60)
    _wait_until_gone(clean.pid)
    _assert_the_rerun_finishes(sandbox, tmp_path, expired, before)


def _wait_until_gone(pgid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while group_pids(pgid):
        assert time.monotonic() < deadline, f"processes of clean still alive: {group_pids(pgid)}"
        time.sleep(0.01)
