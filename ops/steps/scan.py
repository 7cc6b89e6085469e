"""scan: find the files whose retention expired and record them (the run's entry files)."""

import time
from collections import Counter

from ops.atomic import atomic_file
from ops.jsonl import HashingLineWriter
from ops.retention.evaluate import RootMissing, evaluate, root_identity
from ops.steps.runner import StepContext


def entries_name(policy: str) -> str:
    return f"scan.{policy}.jsonl"


def scan_work(ctx: StepContext):
    now_ns = time.time_ns()
    policies, files = {}, {}
    totals = Counter()
    for policy in ctx.config.policies:
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
        count = size = kept = 0
        reasons = Counter()
        with atomic_file(ctx.run.path(name)) as f:
            out = HashingLineWriter(f)
            for d in evaluate(policy, now_ns, on_skip):
                reasons[d.rule] += 1
                if not d.expire:
                    kept += 1
                    continue
                e = d.file
                out.write({"path": e.path, "size": e.size, "mtime_ns": e.mtime_ns, "ctime_ns": e.ctime_ns,
                           "dev": e.dev, "ino": e.ino, "reason": d.reason})
                count += 1
                size += e.size
        files[name] = out.sha256
        policies[policy.name] = {
            "root": str(policy.root), "root_dev": dev, "root_ino": ino, "settle_ns": policy.settle.ns, "entries": name,
            "expired": count, "expired_bytes": size, "kept": kept, "reasons": dict(reasons),
        }
        ctx.log.event("policy_scanned", f"{policy.name}: {count} expired ({size} bytes), {kept} kept",
                      policy=policy.name, expired=count, expired_bytes=size, kept=kept, reasons=dict(reasons))
        totals["expired"] += count
        totals["bytes"] += size
        totals["kept"] += kept
    ctx.summary.update(totals)
    return {"now_ns": now_ns, "policies": policies}, files
