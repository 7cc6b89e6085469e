"""What every pipeline step shares: lock, precondition, manifest out, failure record.

A step's own module supplies only ``work(ctx) -> (body, files)``; this wraps it so the
order is always the same: lock, chain check (refuse with exit 2), "already done" (exit 0),
work, then ``<step>.ok.json`` as the very last act, or ``<step>.failed.json`` on failure.
"""

import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

from ops.config import Config
from ops.console import Console
from ops.errors import FAILED, OpsError, StepFailed
from ops.lock import hold_lock
from ops.logs import StepLog
from ops.manifest import Run
from ops import crashpoints, metrics


@dataclass
class StepContext:
    config: Config
    run: Run
    log: StepLog
    ui: Console
    chain: dict[str, dict]
    summary: dict = field(default_factory=dict)


Work = Callable[[StepContext], tuple[dict, dict[str, str]]]


def run_step(step: str, config: Config, run_id: str, ui: Console, work: Work) -> int:
    log = StepLog(config.log_dir, step, run_id)
    ui.log_path = log.path
    started = time.monotonic()
    outcome: dict = {}
    try:
        with hold_lock(config.state_dir, {"run": run_id, "step": step}):
            code = _locked(step, config, Run(config.state_dir, run_id), log, ui, work, outcome)
    except OpsError as exc:
        log.event("error", exc.message, level="error", exit_code=exc.code)
        metrics.record_step(config, step, exc.code, time.monotonic() - started)
        raise
    finally:
        log.close()
    if "body" in outcome:  # a step that only found itself already done counts nothing twice
        metrics.record_step(config, step, code, time.monotonic() - started, outcome["body"], outcome["chain"])
    return code


def _locked(step: str, config: Config, run: Run, log: StepLog, ui: Console, work: Work, outcome: dict) -> int:
    if step == "scan":
        run.create()
    if run.completed(step):
        log.event("already_done", f"{step} of run {run.id} already succeeded; nothing to do")
        ui.info(f"{step}: run {run.id} already done")
        return 0
    ctx = StepContext(config, run, log, ui, run.require(step))
    log.event("start", f"{step} of run {run.id}")
    try:
        body, files = work(ctx)
    except OpsError as exc:
        if exc.code == FAILED:
            run.write_failed(step, exc.message, exc.code)
        raise
    except Exception as exc:  # an unforeseen error is still a failed step, never a crash without a record
        log.event("traceback", traceback.format_exc(), level="error")
        run.write_failed(step, f"{type(exc).__name__}: {exc}", FAILED)
        raise StepFailed(f"{step} failed: {type(exc).__name__}: {exc}") from exc
    crashpoints.reach(f"{step}.before_manifest")
    run.write_ok(step, body, files)
    outcome.update(body=body, chain=ctx.chain)
    log.event("done", f"{step} of run {run.id} succeeded", **ctx.summary)
    ui.info(f"{step}: run {run.id} done " + " ".join(f"{k}={v}" for k, v in ctx.summary.items()))
    return 0
