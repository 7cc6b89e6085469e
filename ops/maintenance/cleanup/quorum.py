"""The copy quorum: enough verified copies, and still in place when clean starts."""

from ops.destinations import DestinationError, open_destination
from ops.errors import ConfigError, StepFailed
from ops.maintenance.backup.verify import Mismatch, check_run_files
from ops.maintenance.step import StepContext
from ops.state.manifest import JOURNAL
from ops.state.records import archived_policies


def check_quorum(ctx: StepContext) -> None:
    backup, verify = ctx.chain["backup"], ctx.chain["verify"]
    need = ctx.config.require_verified_copies
    verified = verify["verified"]
    if not backup["policies"] or len(verified) >= need:
        return
    why = dict(backup.get("failed_destinations", {}))
    why.update({n: r.get("error", "?") for n, r in verify["destinations"].items() if not r.get("verified")})
    missing = [
        f"{d.name} ({why.get(d.name, 'does not hold this run')})"
        for d in ctx.config.destinations
        if d.name not in verified
    ]
    # A step that failed (exit 1), not a refusal (2): the chain is intact, the copies are too few.
    raise StepFailed(
        f"run {ctx.run.id}: {len(verified)} verified copies ({', '.join(verified) or 'none'}), "
        f"{need} required; nothing was deleted. Missing: {'; '.join(missing)}",
        hint="fix the missing destinations; the next `make maintenance` starts a new run that retries them",
    )


def _why_not_held(ctx: StepContext, name: str) -> str | None:
    """Why destination ``name`` no longer holds the run that verify checked there, or None.
    A destination that cannot be asked right now (unreachable, no credentials) counts as
    not holding it: clean deletes on copies it has just seen, never on an old answer."""
    backup = ctx.chain["backup"]
    try:
        dest = open_destination(ctx.config.destination(name))
    except ConfigError as exc:
        return f"{name}: no longer configured: {exc.message}"
    try:
        check_run_files(dest, ctx.run.id, backup)
        for info in archived_policies(backup).values():
            # A run backed up before sums_bytes was recorded: its .sha256 file only has to be there.
            for file, wrote in ((info.archive, info.archive_bytes), (info.sums, info.sums_bytes)):
                size = dest.size(ctx.run.id, file)
                if wrote is not None and size != wrote:
                    return f"{dest.describe()}: {file} is {size} bytes, backup wrote {wrote}"
    except Mismatch as exc:
        return f"{dest.describe()}: {exc}"
    except DestinationError as exc:
        return str(exc)  # it names the destination itself
    except (OSError, ValueError) as exc:  # unreadable, or a client that cannot be built (bad endpoint)
        return f"{dest.describe()}: {exc}"
    return None


def copies_held(ctx: StepContext, done_before: int) -> tuple[list[str], dict[str, str]]:
    """(the verified destinations that still hold the run, why each other one does not);
    StepFailed if fewer than the quorum still hold it.

    clean may run long after verify (by hand, or resumed the next night): a copy
    unmounted, wiped or pruned since then must not count. This is a look, not a re-read:
    the run's MANIFEST.json and SHA256SUMS by their SHA-256, each archive and ``.sha256``
    file by its size; verify's check of every byte stands for the rest.
    """
    verified = ctx.chain["verify"]["verified"]
    if not ctx.chain["backup"]["policies"]:
        return verified, {}
    held, lost = [], {}
    for name in verified:
        why = _why_not_held(ctx, name)
        if why is None:
            held.append(name)
        else:
            lost[name] = why
            ctx.log.event("copy_missing", why, level="error", destination=name)
    need = ctx.config.require_verified_copies
    if len(held) >= need:
        return held, lost
    if done_before:
        outcome = (
            f"nothing more was deleted; the {done_before} decisions of an earlier attempt "
            f"({JOURNAL}) stand and are catalogued once clean finishes"
        )
        hint = f"bring the destination back (mounted, reachable) and rerun `make clean RUN={ctx.run.id}`"
    else:
        outcome = "nothing was deleted"
        hint = (
            f"bring the destination back (mounted, reachable) and rerun `make clean RUN={ctx.run.id}`; "
            "if the copy is gone for good, start a new run: scripts/maintenance.py --new-run"
        )
    raise StepFailed(
        f"run {ctx.run.id}: {len(held)} of {len(verified)} verified copies still in place, "
        f"{need} required; {outcome}. Not in place: {'; '.join(lost.values())}",
        hint=hint,
    )
