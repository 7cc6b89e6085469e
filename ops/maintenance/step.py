"""What every pipeline step shares: lock, precondition, manifest out, failure record.

A step's module declares it (``Step``: its name, its ``work(ctx) -> (body, files)``, and
what it needs); ``run_step`` wraps the work so the order is always the same: lock, chain
check (refuse with exit 2), "already done" (exit 0), work, then ``<step>.ok.json`` as the
very last act, or ``<step>.failed.json`` on failure.
"""

import contextlib
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from ops.config import Config
from ops.console import Console
from ops.errors import FAILED, OpsError, OutsideWindow, Refused, StepFailed, as_failure, failure_of, refusal_of
from ops.logs import metrics
from ops.logs.steplog import StepLog
from ops.state.lock import hold_lock
from ops.state.manifest import Run
from ops.state.records import scanned_policies
from ops.sys import crashpoints
from ops.sys.pace import PACE
from ops.sys.workers import ForkedWorkers, WorkerError


@dataclass
class StepContext:
    config: Config
    run: Run
    log: StepLog
    ui: Console
    chain: dict[str, dict]
    summary: dict = field(default_factory=dict)
    allow_large_delete: frozenset[str] = frozenset()  # policies this run may expire past max_delete (scan)


Work = Callable[[StepContext], tuple[dict, dict[str, str]]]


@dataclass(frozen=True)
class Step:
    """A step as its module declares it.

    ``creates_run``: it starts a run (makes the run's directory) rather than requiring one.
    ``checked_alongside``: its work starts while its chain's entry files are still being
    checked, in a forked process on the other core. Only for a step that reads and
    compares, and records nothing (no manifest, no failure) before the check has passed:
    verify (on 200,000 files the check is 1.4 s of its 8). backup and clean act on the
    paths: they check first.
    """

    name: str
    work: Work
    creates_run: bool = False
    checked_alongside: bool = False


@dataclass(frozen=True)
class Outcome:
    """What ``run_step`` returns: the exit code, and the manifest body it wrote with the
    chain it checked (None when the step found itself already done: nothing new to count)."""

    code: int
    body: dict | None = None
    chain: dict | None = None


@contextlib.contextmanager
def _entry_files_checked(run: Run, chain: dict[str, dict], alongside: bool):
    """Yield ``intact()``, which returns once every entry file of ``chain`` is checked and
    raises Refused if one is not intact. Without ``alongside`` they were checked already."""
    if not alongside:
        yield lambda: None
        return
    answer = []

    # side_by_side=False: this checker already runs beside the work.
    with ForkedWorkers(1, lambda _: refusal_of(run.check_entry_files, chain, side_by_side=False)) as checker:
        checker.submit(None)

        def intact() -> None:
            if not answer:
                try:
                    answer.append(checker.result())
                except WorkerError as exc:
                    answer.append((f"run {run.id}: its entry files could not be checked: {exc}", None))
            if answer[0]:
                raise Refused(*answer[0])

        try:
            yield intact
        finally:
            if not answer:  # the work was cut short: its answer no longer matters
                checker.kill()


def other_rules(scanned: dict, config: Config) -> str | None:
    """Why ``config`` may not finish a run whose scan manifest is ``scanned``, or None.

    A run is finished only under the rules it was scanned and copied under: another
    config file sharing the state, or this one with a policy, destination or quorum
    changed since, could otherwise delete what the scanning rules never allowed.
    """
    recorded, current = scanned.get("identity"), config.identity()
    if not isinstance(recorded, dict):
        return "it was scanned by an earlier version of the toolkit, which did not record its configuration"
    if recorded.get("config") != current["config"]:
        return f"it was scanned under another config file, {recorded.get('config')}"
    if recorded.get("digest") != current["digest"]:
        return (
            f"{current['config']} has changed since it was scanned (its policies, destinations or "
            "require_verified_copies differ)"
        )
    return None


def moved_roots(scanned: dict) -> str | None:
    """Why a run can never finish because a policy root is no longer the directory it
    scanned, or None. Backup and clean refuse such a root (``Beneath``), so resuming the run
    would fail every night: a root replaced, remounted, or given another device number by a
    reboot (device-mapper numbers its devices in the order they come up)."""
    try:
        policies = scanned_policies(scanned)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None  # a damaged manifest: the step refuses it and says so
    for name, policy in policies.items():
        try:
            st = os.stat(policy.root)
        except OSError:
            continue  # missing or unreadable: the step says so
        if (st.st_dev, st.st_ino) != tuple(policy.root_id):
            return (
                f"policy {name}'s root {policy.root} is not the directory it scanned (its device or inode "
                "changed: replaced, remounted, or renumbered at a reboot)"
            )
    return None


def run_step(
    step: Step, config: Config, run_id: str, ui: Console, allow_large_delete: frozenset[str] = frozenset()
) -> Outcome:
    log = StepLog(config.log_dir, step.name, run_id)
    ui.log_path = log.path
    started = time.monotonic()
    try:
        with hold_lock(config.state_dir, {"run": run_id, "step": step.name}):
            outcome = _locked(step, config, Run(config.state_dir, run_id), log, ui, allow_large_delete)
    except (OpsError, OSError) as exc:  # counted in the metrics by the shell (cli.main), with every failure
        failure = as_failure(exc)
        log.event("error", failure.message, level="error", exit_code=failure.code)
        if failure is exc:
            raise
        raise failure from exc
    finally:
        log.close()
    if outcome.body is not None:  # a step that only found itself already done counts nothing twice
        metrics.record_step(config, step.name, outcome.code, time.monotonic() - started, outcome.body, outcome.chain)
    return outcome


def _locked(spec: Step, config: Config, run: Run, log: StepLog, ui: Console, allow: frozenset[str]) -> Outcome:
    step, alongside = spec.name, spec.checked_alongside
    if spec.creates_run:
        run.create()
    if run.completed(step):
        log.event("already_done", f"{step} of run {run.id} already succeeded; nothing to do")
        ui.info(f"{step}: run {run.id} already done")
        return Outcome(0)
    ctx = StepContext(config, run, log, ui, run.require(step, entry_files=not alongside), allow_large_delete=allow)
    if not spec.creates_run:
        why = other_rules(ctx.chain["scan"], config)
        if why:
            raise Refused(
                f"run {run.id} is not continued under {config.path}: {why}; nothing was done",
                hint=f"finish it with the config that scanned it, or start a new run: "
                f"scripts/maintenance.py --config {config.path} --new-run",
            )
    log.event("start", f"{step} of run {run.id}", pace=PACE.name)
    rested_before = PACE.throttled_s
    with _entry_files_checked(run, ctx.chain, alongside) as intact:
        try:
            body, files = spec.work(ctx)
        except OutsideWindow as exc:  # stopped at a safe point; the run is left as a crash there leaves it
            intact()
            run.write_paused(step, exc.message)
            log.event("outside_window", f"{step} of run {run.id} paused: {exc.message}", paused=True)
            ui.info(f"{step}: run {run.id} paused: {exc.message}; the next run inside the window resumes it")
            return Outcome(0, {"paused": exc.message}, ctx.chain)
        except OpsError as exc:
            intact()  # a broken chain, not what the work ran into, is then the cause: refused
            if exc.code == FAILED:
                run.write_failed(step, exc.message, exc.code)
            raise
        except OSError as exc:  # what the host refused (read-only, full, not permitted): said plainly
            intact()
            failure = failure_of(exc)
            run.write_failed(step, failure.message, failure.code)
            raise failure from exc
        except Exception as exc:  # an unforeseen error is still a failed step, never a crash without a record
            intact()
            log.event("traceback", traceback.format_exc(), level="error")
            run.write_failed(step, f"{type(exc).__name__}: {exc}", FAILED)
            raise StepFailed(f"{step} failed: {type(exc).__name__}: {exc}") from exc
        intact()
    # What being gentle cost the step: status and the metrics report it per step.
    body = {**body, "pace": PACE.name, "throttled_s": round(PACE.throttled_s - rested_before, 3)}
    crashpoints.reach(f"{step}.before_manifest")
    run.write_ok(step, body, files)
    log.event("done", f"{step} of run {run.id} succeeded", **ctx.summary)
    ui.info(f"{step}: run {run.id} done " + " ".join(f"{k}={v}" for k, v in ctx.summary.items()))
    return Outcome(0, body, ctx.chain)
