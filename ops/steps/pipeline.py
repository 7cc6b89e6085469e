"""The four steps by name, which run each acts on, and the chain that runs them in order."""

import contextlib
import json
import os

from ops import child, cli, hooks, metrics
from ops.compaction import compact_finished_runs
from ops.config import Config
from ops.console import Console
from ops.errors import FAILED, LOCKED, LockBusy, Refused, StepFailed
from ops.lock import LOCK_FD_ENV, hold_lock, record_run
from ops.logs import StepLog
from ops.manifest import STEPS, Run, list_runs, new_run_id
from ops.paths import read_plain_file
from ops.steps.backup import backup_work
from ops.steps.clean import clean_work
from ops.steps.runner import run_step
from ops.steps.scan import scan_work
from ops.steps.verify import verify_work
from ops.status import summarize

WORK = {"scan": scan_work, "backup": backup_work, "verify": verify_work, "clean": clean_work}


def newest_run(config: Config) -> str:
    runs = list_runs(config.state_dir)
    if not runs:
        raise Refused(f"no run exists in {config.state_dir}", hint="start one with: make scan (or make maintenance)")
    return runs[-1]


def step_main(step: str, run_id: str | None, config: Config, ui: Console) -> int:
    """One step alone: scan starts a new run unless given one; the others take the newest."""
    if run_id is None:
        run_id = new_run_id(config.state_dir) if step == "scan" else newest_run(config)
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
    return new_run_id(config.state_dir)


def _copies(run: Run) -> float:
    """How many destinations hold the run (unknown until backup succeeded: not a reason to give up)."""
    try:
        return len(json.loads(read_plain_file(run.ok_path("backup")))["destinations"])
    except (OSError, ValueError, KeyError, TypeError):
        return float("inf")  # not written yet, or damaged: resume, so the step refuses and says so


def _step_process(step: str, config: Config, run_id: str, lock_fd: int) -> int:
    """``scripts/<step>.py --config ... --run run_id`` in a forked child (ops.child): it
    re-reads the config and re-checks the chain as the script does, and inherits the lock."""

    def main() -> int:
        os.environ[LOCK_FD_ENV] = str(lock_fd)
        os.environ.pop("VERBOSE", None)  # the chain's one summary line is ours; the steps stay quiet under cron
        return cli.main(step, cli.parser(step, ""), ["--config", str(config.path), "--run", run_id],
                        lambda args, cfg, ui: step_main(step, args.run, cfg, ui))

    return child.run(main)


def maintenance(config: Config, ui: Console, new_run: bool = False) -> int:
    """scan, backup, verify, clean on one run id under one lock; stop at the first failure.

    Each step is its own process and inherits the lock descriptor, so no other chain can
    slip in between two steps.
    """
    with contextlib.ExitStack() as held:
        try:
            fd = held.enter_context(hold_lock(config.state_dir, {"step": "maintenance"}))
        except LockBusy:  # what cron runs most: its refusal counts as contention, like a step's
            metrics.record_step(config, "maintenance", LOCKED, 0.0)
            raise
        run_id = new_run_id(config.state_dir) if new_run else run_to_continue(config)
        record_run(fd, run_id)  # status then names the run this chain works on, not only "maintenance"
        log = StepLog(config.log_dir, "maintenance", run_id)
        ui.log_path = log.path  # named in the error paragraph when a step is killed
        log.event("start", f"maintenance of run {run_id}")
        try:
            for step in STEPS:
                code = _step_process(step, config, run_id, fd)
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
