"""The four steps by name, which run each acts on, and the chain that runs them in order."""

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

from ops import hooks, metrics
from ops.compaction import compact_finished_runs
from ops.config import Config
from ops.console import Console
from ops.errors import FAILED, LOCKED, LockBusy, Refused, StepFailed
from ops.lock import LOCK_FD_ENV, hold_lock
from ops.logs import StepLog
from ops.manifest import STEPS, Run, list_runs, new_run_id
from ops.steps.backup import backup_work
from ops.steps.clean import clean_work
from ops.steps.runner import run_step
from ops.steps.scan import scan_work
from ops.steps.verify import verify_work
from ops.status import summarize

WORK = {"scan": scan_work, "backup": backup_work, "verify": verify_work, "clean": clean_work}
SCRIPTS = Path(__file__).resolve().parent.parent.parent / "scripts"


def newest_run(config: Config) -> str:
    runs = list_runs(config.state_dir)
    if not runs:
        raise Refused(f"no run exists in {config.state_dir}", hint="start one with: make scan (or make maintenance)")
    return runs[-1]


def step_main(step: str, run_id: str | None, config: Config, ui: Console) -> int:
    """One step alone: scan starts a new run unless given one; the others take the newest."""
    if run_id is None:
        run_id = new_run_id() if step == "scan" else newest_run(config)
    return run_step(step, config, run_id, ui, WORK[step])


def run_to_continue(config: Config) -> str:
    """The newest run if it can still finish (resume it: no second archive), else a new one.

    A run whose backup reached fewer destinations than the quorum can never let clean
    delete anything; its files are still in place, so a new run retries every destination.
    """
    runs = list_runs(config.state_dir)
    if runs:
        run = Run(config.state_dir, runs[-1])
        if not run.ok_path("clean").exists() and _copies(run) >= config.require_verified_copies:
            return run.id
    return new_run_id()


def _copies(run: Run) -> float:
    """How many destinations hold the run (unknown until backup succeeded: not a reason to give up)."""
    try:
        return len(json.loads(run.ok_path("backup").read_bytes())["destinations"])
    except FileNotFoundError:
        return float("inf")
    except (OSError, ValueError, KeyError, TypeError):
        return float("inf")  # a damaged manifest: resume, so the step refuses and says so


def maintenance(config: Config, ui: Console, new_run: bool = False) -> int:
    """scan, backup, verify, clean on one run id under one lock; stop at the first failure.

    Each step is its own process (as cron or an operator would run it) and inherits the
    lock descriptor, so no other chain can slip in between two steps.
    """
    with contextlib.ExitStack() as held:
        try:
            fd = held.enter_context(hold_lock(config.state_dir, {"step": "maintenance"}))
        except LockBusy:  # what cron runs most: its refusal counts as contention, like a step's
            metrics.record_step(config, "maintenance", LOCKED, 0.0)
            raise
        run_id = new_run_id() if new_run else run_to_continue(config)
        log = StepLog(config.log_dir, "maintenance", run_id)
        ui.log_path = log.path  # named in the error paragraph when a step is killed
        log.event("start", f"maintenance of run {run_id}")
        env = dict(os.environ, **{LOCK_FD_ENV: str(fd)})
        env.pop("VERBOSE", None)  # the chain's one summary line is ours; the steps stay quiet under cron
        try:
            for step in STEPS:
                cmd = [sys.executable, str(SCRIPTS / f"{step}.py"), "--config", str(config.path), "--run", run_id]
                code = subprocess.run(cmd, env=env, pass_fds=(fd,)).returncode
                if code < 0:  # killed by a signal: a failed step, reported with a code from the table
                    log.event("stopped", f"{step} was killed by signal {-code}; later steps not run",
                              level="error", exit_code=FAILED, signal=-code)
                    hooks.on_failure(config, log, run_id, step, FAILED)
                    raise StepFailed(f"{step} of run {run_id} was killed by signal {-code}; later steps not run",
                                     hint="run maintenance again: it resumes this run where it stopped")
                if code:
                    log.event("stopped", f"{step} exited {code}; later steps not run", level="error", exit_code=code)
                    hooks.on_failure(config, log, run_id, step, code)
                    return code
            log.event("done", f"maintenance of run {run_id} complete")
            ui.summary(f"maintenance run {run_id}", summarize(config, run_id))
            compact_finished_runs(config, log)
            return 0
        finally:
            log.close()
