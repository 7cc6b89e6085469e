"""The four steps by name, which run each acts on, and the chain that runs them in order."""

import contextlib
import os

from ops.config import Config, load_config
from ops.console import Console
from ops.errors import FAILED, LockBusy, OpsError, OutsideWindow, Refused, StepFailed, UsageError
from ops.logs import hooks, metrics
from ops.logs.guard import Guard
from ops.logs.steplog import StepLog
from ops.maintenance.backup.step import BACKUP
from ops.maintenance.backup.verify import VERIFY
from ops.maintenance.cleanup.compaction import compact_finished_runs
from ops.maintenance.cleanup.step import CLEAN, catalogue_left
from ops.maintenance.retention.brake import braked_in
from ops.maintenance.retention.scan import SCAN
from ops.maintenance.step import moved_roots, other_rules, run_step
from ops.state.lock import LOCK_FD_ENV, hold_lock, record_run
from ops.state.manifest import STEPS, Run, list_runs, new_run_id
from ops.state.summary import summarize
from ops.sys import child
from ops.sys.window import WINDOW

DECLARED = {step.name: step for step in (SCAN, BACKUP, VERIFY, CLEAN)}
assert tuple(DECLARED) == STEPS  # the order the manifests chain in


def _scanned_here(run: Run, config_file: str, newest: bool) -> dict | None:
    """The run's scan manifest if this config file scanned it. A run whose scan has not
    finished (or whose manifest cannot be read) is nobody's yet: it counts as this
    config's only when it is the newest run of all, so a crashed scan is taken up again
    and a damaged manifest is met by the step, which refuses and says why."""
    scanned = run.peek("scan")
    if scanned is None:
        return {} if newest else None
    identity = scanned.get("identity")
    return scanned if isinstance(identity, dict) and identity.get("config") == config_file else None


def _newest_of(config: Config) -> tuple[Run, dict] | None:
    """This config file's newest run and its scan manifest ({} if not scanned yet).

    Configs that share a state directory keep their runs apart: each continues and acts
    on its own runs only (one lock still serialises them).
    """
    runs = list_runs(config.state_dir)
    config_file = config.identity()["config"]  # as scan records it
    for i, run_id in enumerate(reversed(runs)):
        run = Run(config.state_dir, run_id)
        scanned = _scanned_here(run, config_file, newest=i == 0)
        if scanned is not None:
            return run, scanned
    return None


def newest_run(config: Config) -> str:
    """This config's newest run (runs of other config files sharing the state are theirs)."""
    mine = _newest_of(config)
    if mine is None:
        others = " (the runs there were scanned under other config files)" if list_runs(config.state_dir) else ""
        raise Refused(
            f"no run of {config.path} exists in {config.state_dir}{others}",
            hint="start one with: make scan (or make maintenance), or name a run with RUN=",
        )
    return mine[0].id


def outside_window(config: Config, step: str, ui: Console) -> bool:
    """Whether the maintenance window is closed now; if so it is logged (outside_window)
    and said on a terminal or with VERBOSE=1, and the caller does nothing and exits 0."""
    try:
        WINDOW.require()
    except OutsideWindow as exc:
        log = StepLog(config.log_dir, step)
        try:
            log.event("outside_window", f"{step}: {exc.message}; nothing done")
        finally:
            log.close()
        ui.info(f"{step}: {exc.message}; nothing done ({exc.hint})")
        return True
    return False


def allowed_large_delete(config: Config, names: frozenset[str]) -> frozenset[str]:
    """The policies ALLOW_LARGE_DELETE names, each one of the config's (else a usage error)."""
    unknown = sorted(names - {p.name for p in config.policies})
    if unknown:
        raise UsageError(
            f"--allow-large-delete: {config.path} has no policy named {', '.join(unknown)}",
            hint=f"its policies: {', '.join(p.name for p in config.policies) or 'none'}",
        )
    return names


def step_main(
    step: str, run_id: str | None, config: Config, ui: Console, allow_large_delete: frozenset[str] = frozenset()
) -> int:
    """One step alone: scan starts a new run unless given one; the others take the newest.
    Outside the maintenance window it does nothing. clean ends the run: a policy the brake
    held (scan, max_delete) makes it exit 1, naming the policy and how to let it through."""
    allow = allowed_large_delete(config, allow_large_delete)
    if outside_window(config, step, ui):
        return 0
    if run_id is None:
        run_id = new_run_id(config.state_dir) if step == "scan" else newest_run(config)
    code = run_step(DECLARED[step], config, run_id, ui, allow).code
    run = Run(config.state_dir, run_id)
    if step == "clean" and code == 0 and run.ok_path("clean").exists():  # finished, not paused by the window
        held = braked_in(run)
        if held:
            raise held
    return code


def run_to_continue(config: Config, new_run: bool = False) -> tuple[str, Run | None, str | None]:
    """(the run to work on, the unfinished run left behind or None, why it was left).

    This config's newest run is resumed if it can still finish (no second archive), else
    a new run starts: when it is finished; when its backup reached fewer destinations
    than the quorum (it can never let clean delete anything, and its files are still in
    place, so a new run retries every destination); when the config's deciding settings
    changed since it was scanned (it is never finished under other rules); when a policy
    root is no longer the directory it scanned (backup and clean refuse it); or when the
    operator asked for a new run (``--new-run``).
    """
    mine = _newest_of(config)
    if mine is None:
        return new_run_id(config.state_dir), None, None
    run, scanned = mine
    if run.ok_path("clean").exists():
        return new_run_id(config.state_dir), None, None
    if new_run:
        return new_run_id(config.state_dir), run, "--new-run was asked for"
    if _copies(run) < config.require_verified_copies:
        return new_run_id(config.state_dir), run, None
    why = (other_rules(scanned, config) or moved_roots(scanned)) if scanned else None
    if why:
        return new_run_id(config.state_dir), run, why
    return run.id, None, None


def _copies(run: Run) -> float:
    """How many destinations hold the run (unknown until backup succeeded: not a reason to give up)."""
    try:
        return len(run.peek("backup")["destinations"])
    except (OSError, ValueError, KeyError, TypeError):
        return float("inf")  # not written yet, or damaged: resume, so the step refuses and says so


def _step_process(step: str, config: Config, run_id: str, lock_fd: int, allow: frozenset[str]) -> int:
    """The step as ``scripts/<step>.py --config ... --run run_id`` would run it, in a forked
    child (ops.sys.child): it re-reads the config and re-checks the chain as the script
    does, reports and counts its failure the same way (Guard), and inherits the lock."""

    def main() -> int:
        os.environ[LOCK_FD_ENV] = str(lock_fd)
        os.environ.pop("VERBOSE", None)  # the chain's one summary line is ours; the steps stay quiet under cron
        guard = Guard(step)

        def body() -> int:
            guard.config = load_config(config.path)
            return step_main(step, run_id, guard.config, guard.ui, allow)

        return guard.run(body)

    return child.run(main)


def maintenance(
    config: Config, ui: Console, new_run: bool = False, allow_large_delete: frozenset[str] = frozenset()
) -> int:
    """scan, backup, verify, clean on one run id under one lock; stop at the first failure.

    Each step is its own process and inherits the lock descriptor, so no other chain can
    slip in between two steps. Every failure, a step's or the chain's own (its state or
    log directory unusable, a step killed), calls the on_failure hook once, here; another
    run holding the lock does not (exit 75: cron retries). Outside the maintenance window
    it does nothing; a step the window stopped ends the chain with exit 0.
    """
    allow = allowed_large_delete(config, allow_large_delete)
    if outside_window(config, "maintenance", ui):
        return 0
    at = {"run": "", "step": "maintenance"}  # where the chain stopped, for the hook
    log = None
    with contextlib.ExitStack() as held:
        try:
            fd = held.enter_context(hold_lock(config.state_dir, {"step": "maintenance"}))
            run_id, left, why = run_to_continue(config, new_run)
            at["run"] = run_id
            record_run(fd, run_id)  # status then names the run this chain works on, not only "maintenance"
            log = StepLog(config.log_dir, "maintenance", run_id)
            held.callback(log.close)
            ui.log_path = log.path  # named in the error paragraph when a step is killed
            if left is not None and why:
                log.event(
                    "not_continued", f"run {left.id} is left unfinished: {why}; a new run starts", level="warning"
                )
                ui.warn(f"run {left.id} is left unfinished: {why}; a new run starts")
            if left is not None:
                catalogue_left(config, left, log, ui)
            if allow and Run(config.state_dir, run_id).peek("scan") is not None:
                msg = (
                    f"ALLOW_LARGE_DELETE={','.join(sorted(allow))} is not used: run {run_id}, resumed, was "
                    "scanned already; it applies to the scan of the next run"
                )
                log.event("allow_unused", msg, level="warning")
                ui.problem(msg)
            code = _chain(config, ui, run_id, fd, log, at, allow)
        except LockBusy:
            raise
        except Exception as exc:
            code = exc.code if isinstance(exc, OpsError) else FAILED  # an OSError is a failed step (cli.main)
            if log is None:
                log = _log_for_hook(config, at["run"], ui, f"{exc}", code)
                if log is not None:
                    held.callback(log.close)
            hooks.on_failure(config, log, at["run"], at["step"], code)
            raise
        if code:
            hooks.on_failure(config, log, run_id, at["step"], code)
        return code


def _log_for_hook(config: Config, run_id: str, ui: Console, why: str, code: int) -> StepLog | None:
    """The chain's log when it failed before opening it (the state directory read-only, or
    not ours), with why: the hook's outcome is recorded there too, if the log can be written."""
    try:
        log = StepLog(config.log_dir, "maintenance", run_id or None)
    except (OpsError, OSError):
        return None
    try:
        log.event("error", why, level="error", exit_code=code)
    except OSError:
        pass
    ui.log_path = log.path
    return log


def _chain(config: Config, ui: Console, run_id: str, fd: int, log: StepLog, at: dict, allow: frozenset[str]) -> int:
    log.event("start", f"maintenance of run {run_id}")
    run = Run(config.state_dir, run_id)
    for step in STEPS:
        at["step"] = step
        code = _step_process(step, config, run_id, fd, allow)
        if code < 0:  # killed by a signal: a failed step, reported with a code from the table
            log.event(
                "stopped",
                f"{step} was killed by signal {-code}; later steps not run",
                level="error",
                exit_code=FAILED,
                signal=-code,
            )
            raise StepFailed(
                f"{step} of run {run_id} was killed by signal {-code}; later steps not run",
                hint="run maintenance again: it resumes this run where it stopped",
            )
        if code:
            log.event("stopped", f"{step} exited {code}; later steps not run", level="error", exit_code=code)
            return code
        if not run.ok_path(step).exists():  # exit 0 without its manifest: the window closed
            msg = f"{step} of run {run_id} paused by the maintenance window; the next run inside it resumes the run"
            if not run.paused_path(step).exists():  # closed before the step began: said here
                run.write_paused(step, "the maintenance window closed before the step began")
                metrics.record_step(config, step, 0, 0.0, {"paused": msg})
            log.event("outside_window", msg)
            ui.info(msg)
            return 0
    at["step"] = "maintenance"
    log.event("done", f"maintenance of run {run_id} complete")
    ui.summary(f"maintenance run {run_id}", summarize(config, run_id))
    try:
        compact_finished_runs(config, log)
    except OutsideWindow as exc:  # the run is complete; what is left to pack waits for the next one
        log.event("outside_window", f"compaction stopped: {exc.message}")
    return 0
