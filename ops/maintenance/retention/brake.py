"""The deletion brake: a run that would expire more of a policy than its ``max_delete``
expires none of it.

A wrong ``path_date`` pattern or a clock jumped forward can expire a whole policy in one
night. Everything would be backed up first, but restoring all of the tick history is an
incident all the same. So scan weighs each policy's expiries against the files the
policy matches: ``max_delete: 25%`` is a share of them, by count or by bytes, whichever
is larger; ``max_delete: 500GiB`` a size. Over it, the policy expires nothing in this
run, the others go on, and the run ends with exit 1 naming the policy, what it would
have deleted and the limit. ALLOW_LARGE_DELETE=<policy> lets one run through.
"""

from ops.config import Policy
from ops.errors import StepFailed
from ops.maintenance.retention.policy import format_size
from ops.state.manifest import Run


def weigh(policy: Policy, expired: int, expired_bytes: int, files: int, total_bytes: int) -> dict | None:
    """What the brake holds back of ``policy`` (the figures for its message), or None."""
    limit = policy.max_delete
    if limit is None or not expired:
        return None
    share = max(expired / files, expired_bytes / total_bytes if total_bytes else 0.0)
    over = share * 100 > limit.percent if limit.percent is not None else expired_bytes > limit.bytes
    if not over:
        return None
    return {
        "files": expired,
        "bytes": expired_bytes,
        "of_files": files,
        "of_bytes": total_bytes,
        "share": round(share, 6),
        "limit": limit.text,
    }


def describe(policy: str, held: dict) -> str:
    return (
        f"policy {policy} would have deleted {held['files']} of its {held['of_files']} files, "
        f"{format_size(held['bytes'])} of {format_size(held['of_bytes'])} ({held['share']:.1%} of the policy), "
        f"over max_delete {held['limit']}"
    )


def allow_hint(policies: list[str]) -> str:
    names = ",".join(policies)
    return (
        f"if that is right, allow it for one run: make maintenance ALLOW_LARGE_DELETE={names} "
        f"(scripts/maintenance.py --allow-large-delete {names}); else fix the policy or the clock"
    )


def braked_in(run: Run) -> StepFailed | None:
    """The failure a run ends with when the brake held a policy in its scan, or None."""
    scanned = run.peek("scan") or {}
    held = {n: p["braked"] for n, p in scanned.get("policies", {}).items() if p.get("braked")}
    if not held:
        return None
    said = "; ".join(describe(n, h) for n, h in held.items())
    return StepFailed(
        f"run {run.id}: the deletion brake held: {said}. Nothing of it was expired; the other policies were cleaned",
        hint=allow_hint(list(held)),
    )
