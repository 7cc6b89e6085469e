"""plan: what the next run would back up and delete, and why. Writes nothing but log lines."""

import json
import os
import shutil
import sys
import time
from collections import Counter

from ops.config import Config
from ops.console import Console
from ops.logs.steplog import StepLog
from ops.maintenance.retention.brake import allow_hint, describe, weigh
from ops.maintenance.retention.evaluate import (
    Freed,
    RootMissing,
    evaluate,
    evaluation_order,
    own_places,
    root_identity,
)
from ops.maintenance.retention.policy import format_size
from ops.maintenance.retention.scan import clock_behind
from ops.state import restored as restored_files
from ops.sys.writers import hidden_message, open_for_writing

MORE = "scripts/plan.py --json lists every file"


def plan(config: Config, ui: Console, as_json: bool = False, show_files: int = 20) -> int:
    now_ns = time.time_ns()
    for policy in config.policies:  # a root that may not be missing fails before any output (no half JSON)
        try:
            root_identity(policy)
        except RootMissing:
            pass
    behind = clock_behind(config.state_dir, now_ns)
    if behind:
        ui.warn(f"{behind}: scan would refuse to expire anything until the clock is right")
    restored = restored_files.load(config, now_ns)
    fenced = own_places(config)
    writers = open_for_writing()
    if hidden_message(writers) and not as_json:
        ui.report([f"warning: {hidden_message(writers)}"])
    log = StepLog(config.log_dir, "plan")
    out = sys.stdout
    if as_json:
        out.write(f'{{"now_ns": {now_ns}, "clock_behind": {json.dumps(behind)}, "policies": [')
    rows, totals, listed, braked = [], Counter(), [], {}
    freed = Freed()  # what the policies before a min_free one free on its filesystem
    try:
        for i, policy in enumerate(evaluation_order(config.policies)):
            skipped = []
            stats = Counter()
            by_rule: Counter = Counter()
            samples = []
            if as_json:
                out.write(
                    ("," if i else "")
                    + json.dumps({"name": policy.name, "root": str(policy.root)})[:-1]
                    + ', "decisions": ['
                )
            try:
                root_identity(policy)
                missing = False
            except RootMissing:
                missing = True
            first = True
            decisions = (
                []
                if missing
                else evaluate(
                    policy,
                    now_ns,
                    lambda p, why, skipped=skipped: skipped.append((p, why)),
                    config.policies,
                    freed,
                    restored,
                    fenced,
                    writers,
                )
            )
            for d in decisions:
                action = "expire" if d.expire else "keep"
                stats[action] += 1
                stats[action + "_bytes"] += d.file.size
                by_rule[(action, d.rule)] += 1
                if as_json:
                    out.write(
                        ("" if first else ",")
                        + json.dumps(
                            {
                                "path": d.file.path,
                                "action": action,
                                "rule": d.rule,
                                "reason": d.reason,
                                "size": d.file.size,
                                "mtime_ns": d.file.mtime_ns,
                            }
                        )
                    )
                    first = False
                elif d.expire and len(samples) < show_files:
                    samples.append(d)
            held = weigh(
                policy,
                stats["expire"],
                stats["expire_bytes"],
                stats["expire"] + stats["keep"],
                stats["expire_bytes"] + stats["keep_bytes"],
            )
            free = shutil.disk_usage(policy.root).free if not missing else 0
            # After this policy and those before it on the same filesystem (Freed counts them all).
            freed_here = freed.by_device[os.stat(policy.root).st_dev] if not missing else 0
            summary = {
                "missing_root": missing,
                "expire_files": stats["expire"],
                "expire_bytes": stats["expire_bytes"],
                "keep_files": stats["keep"],
                "keep_bytes": stats["keep_bytes"],
                "skipped": len(skipped),
                "free_bytes_now": free,
                "free_bytes_after": free + freed_here,
                "prune_empty_dirs": policy.prune_empty_dirs,
                "braked": held,
            }
            if as_json:
                out.write("], " + json.dumps(summary)[1:])
            log.event(
                "planned",
                f"{policy.name}: would expire {stats['expire']} files ({stats['expire_bytes']} bytes)",
                policy=policy.name,
                **summary,
            )
            why = "; ".join(f"{action} {rule}: {n}" for (action, rule), n in sorted(by_rule.items()))
            if held:
                braked[policy.name] = held
                why = f"BRAKED (max_delete {held['limit']}): expires nothing; " + why
            rows.append(
                [
                    policy.name,
                    stats["expire"],
                    format_size(stats["expire_bytes"]),
                    stats["keep"],
                    "root missing (missing_ok)" if missing else why or "no matching files",
                    "" if missing else format_size(summary["free_bytes_after"]),
                ]
            )
            if held:
                samples = []  # scan would expire none of them
            listed += [f"{policy.name}: would expire {d.file.path} ({d.reason})" for d in samples]
            if stats["expire"] > len(samples) and not held:
                listed.append(f"{policy.name}: … and {stats['expire'] - len(samples)} more ({MORE})")
            if policy.prune_empty_dirs:
                ui.info(
                    f"{policy.name}: would remove the directories it empties that were untouched for "
                    f"{policy.prune_after.text} (prune_empty_dirs)"
                )
            totals.update(stats)
    finally:
        log.close()
    if as_json:
        out.write("]}\n")
        return 0
    ui.table(
        "What the next run would do",
        ["policy", "expire", "frees", "keep", "why", "free after"],
        rows,
        footer=["total", totals["expire"], format_size(totals["expire_bytes"]), totals["keep"], "", ""],
    )
    ui.report(listed)
    if braked:
        ui.report(
            [f"brake: {describe(n, h)}; scan would expire nothing of it" for n, h in braked.items()]
            + [f"brake: {allow_hint(list(braked))}"]
        )
    return 0
