"""scan: find the files whose retention expired and record them (the run's entry files)."""

import time
from collections import Counter

from ops.errors import StepFailed
from ops.maintenance.retention.brake import describe, weigh
from ops.maintenance.retention.deletable import RULE as UNDELETABLE
from ops.maintenance.retention.evaluate import (
    Freed,
    RootMissing,
    evaluate,
    evaluation_order,
    nested_roots,
    own_places,
    root_identity,
)
from ops.maintenance.retention.policy import FUTURE_TOLERANCE_NS
from ops.maintenance.step import Step, StepContext
from ops.state import restored as restored_files
from ops.state.manifest import Run, entries_name, list_runs
from ops.sys.atomic import atomic_file
from ops.sys.jsonl import HashingLineWriter
from ops.sys.window import WINDOW
from ops.sys.writers import open_for_writing, report_hidden


def clock_behind(state_dir, now_ns: int, this_run: str | None = None) -> str | None:
    """Why the clock cannot be trusted (it reads earlier than the last recorded scan), or None.

    A clock set back (a dead RTC battery, a bad NTP source) makes every age wrong; the
    files are safe only if nothing is decided until an operator has looked.
    """
    for run_id in reversed(list_runs(state_dir)):
        if run_id == this_run:
            continue
        try:
            last = Run(state_dir, run_id).peek("scan")["now_ns"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if now_ns < last - FUTURE_TOLERANCE_NS:
            return (
                f"the clock reads {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(now_ns / 1e9))}, earlier than "
                f"run {run_id} scanned ({time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(last / 1e9))})"
            )
        return None
    return None


def scan_work(ctx: StepContext):
    now_ns = time.time_ns()
    behind = clock_behind(ctx.config.state_dir, now_ns, ctx.run.id)
    if behind:
        raise StepFailed(
            f"{behind}; refusing to expire anything",
            hint="check the system clock (timedatectl, NTP); nothing is expired until it is right",
        )
    policies, files = {}, {}
    totals = Counter()
    freed = Freed()
    restored = restored_files.load(ctx.config, now_ns)
    fenced = own_places(ctx.config)
    writers = open_for_writing()  # once for the scan; clean looks again before each batch
    report_hidden(ctx.log, ctx.ui, writers)
    for policy in evaluation_order(ctx.config.policies):
        try:
            dev, ino = root_identity(policy)
        except RootMissing as exc:
            ctx.log.event("root_missing", str(exc), level="warning", policy=policy.name)
            ctx.ui.warn(str(exc))
            continue

        def on_skip(path: str, why: str, policy=policy) -> None:
            totals["skipped"] += 1
            ctx.log.event("skip", f"{path}: {why}", level="warning", policy=policy.name, path=path, reason=why)

        name = entries_name(policy.name)
        count = size = kept = kept_bytes = 0
        reasons = Counter()
        with atomic_file(ctx.run.path(name)) as f:
            out = HashingLineWriter(f)
            for d in evaluate(policy, now_ns, on_skip, ctx.config.policies, freed, restored, fenced, writers):
                WINDOW.check()
                reasons[d.rule] += 1
                if not d.expire:
                    kept += 1
                    kept_bytes += d.file.size
                    continue
                e = d.file
                out.write(
                    {
                        "path": e.path,
                        "size": e.size,
                        "mtime_ns": e.mtime_ns,
                        "ctime_ns": e.ctime_ns,
                        "dev": e.dev,
                        "ino": e.ino,
                        "reason": d.reason,
                    }
                )
                count += 1
                size += e.size
        held = weigh(policy, count, size, count + kept, size + kept_bytes)
        if held and policy.name in ctx.allow_large_delete:
            ctx.log.event("brake_released", describe(policy.name, held) + "; allowed for this run", policy=policy.name)
            held = None
        elif held:  # nothing of it expires in this run: its entries are written again, empty
            msg = describe(policy.name, held) + "; it expires nothing in this run"
            ctx.log.event("braked", msg, level="error", policy=policy.name, **held)
            ctx.ui.warn(msg)  # the run's end (clean, exit 1) says it under cron
            with atomic_file(ctx.run.path(name)) as f:
                out = HashingLineWriter(f)
            kept, count, size = kept + count, 0, 0
        files[name] = out.sha256
        policies[policy.name] = {
            "root": str(policy.root),
            "root_dev": dev,
            "root_ino": ino,
            "settle_ns": policy.settle.ns,
            "entries": name,
            "expired": count,
            "expired_bytes": size,
            "kept": kept,
            "reasons": dict(reasons),
            "undeletable": reasons[UNDELETABLE],
            # What clean may do to directories it empties, decided now with the rest.
            "prune_empty_dirs": policy.prune_empty_dirs,
            "prune_after_ns": policy.prune_after.ns,
            "nested_roots": sorted(nested_roots(policy, ctx.config.policies)),
            "braked": held,
        }
        ctx.log.event(
            "policy_scanned",
            f"{policy.name}: {count} expired ({size} bytes), {kept} kept",
            policy=policy.name,
            expired=count,
            expired_bytes=size,
            kept=kept,
            reasons=dict(reasons),
        )
        totals["expired"] += count
        totals["bytes"] += size
        totals["kept"] += kept
    ctx.summary.update(totals)
    in_file_order = {p.name: policies[p.name] for p in ctx.config.policies if p.name in policies}
    body = {"now_ns": now_ns, "identity": ctx.config.identity(), "policies": in_file_order}
    return {**body, "writers_hidden": len(writers.hidden)}, files


SCAN = Step("scan", scan_work, creates_run=True)
