"""backup: stream every expired file into one archive per policy on every destination.

Each source file is read once: hashed while it is archived. A file whose stat no longer
matches the scan is not archived; one that changes while being read is archived but
marked "changed" so clean keeps it. The run appears on a destination only whole.
"""

import os
import socket
import time

from ops.archive import EXTENSIONS, ArchiveWriter
from ops.archive.checksums import sum_line
from ops.config import NAME_RE
from ops.destinations import DestinationError, open_destination
from ops.destinations.hosts import known_runs, other_hosts
from ops.errors import Refused, StepFailed
from ops.maintenance.backup.fanout import Fanout
from ops.maintenance.backup.member import archive_one
from ops.maintenance.step import Step, StepContext
from ops.state.manifest import open_sealed, records_name, seal_document
from ops.state.records import ScannedPolicy, scanned_policies
from ops.sys import crashpoints
from ops.sys.atomic import atomic_file, atomic_write
from ops.sys.hashio import HashingWriter, sha256_bytes
from ops.sys.jsonl import HashingLineWriter, dumps_document, iter_lines
from ops.sys.paths import Beneath, RootChanged, read_plain_file
from ops.sys.sizes import CHUNK
from ops.sys.window import WINDOW

PENDING = "backup.pending.json"
# What MANIFEST.json tells a restore that has no local state.
RESTORE_KEYS = (
    "root",
    "compression",
    "archive",
    "archive_sha256",
    "archive_bytes",
    "sums",
    "sums_sha256",
    "members",
    "member_bytes",
)


def _write_policy(
    ctx: StepContext, name: str, scanned: ScannedPolicy, fanout: Fanout, compression: str
) -> tuple[dict, str]:
    archive = name + EXTENSIONS[compression]
    sums_name = f"{name}.sha256"
    writer = ArchiveWriter(fanout.create(archive), compression)
    # One short line per member, passed on in 1 MiB writes rather than one trip per line
    # through every destination's file (about 0.25 s of backup on 200,000 small files).
    sums = HashingWriter(fanout.create(sums_name), gather=CHUNK)
    counts = {"archived": 0, "changed": 0, "skipped": 0}
    archived_bytes = 0
    try:
        beneath = Beneath(scanned.root, scanned.root_id)
    except (RootChanged, OSError) as exc:
        raise StepFailed(f"policy {name}: cannot open root {scanned.root}: {exc}") from None
    with (
        beneath,
        atomic_file(ctx.run.path(records_name(name))) as rf,
        ctx.ui.progress(f"backup {name}", scanned.expired_bytes) as advance,
    ):
        records = HashingLineWriter(rf)
        for entry in iter_lines(ctx.run.path(scanned.entries)):
            WINDOW.check()  # closed: every staging is aborted on the way out, and the next run starts over
            raw_path = os.fsencode(entry["path"])
            record = archive_one(beneath, writer, entry, raw_path)
            records.write(record)
            counts[record["status"]] += 1
            if record["status"] != "archived":  # skipped: not in the archive; changed: in it, not to be deleted
                event = "not_archived" if record["status"] == "skipped" else "changed"
                why = record["reason"]
                ctx.log.event(
                    event, f"{record['path']}: {why}", level="warning", policy=name, path=record["path"], reason=why
                )
                if record["status"] == "skipped":
                    continue
            sums.write(sum_line(record["sha256"], raw_path))
            archived_bytes += record["size"]
            advance(record["size"])
            crashpoints.reach("backup.after_member")
        archive_sha, archive_bytes = writer.close()
        sums.flush()
    info = {
        "root": scanned.root,
        "compression": compression,
        "archive": archive,
        "archive_sha256": archive_sha,
        "archive_bytes": archive_bytes,
        "sums": sums_name,
        "sums_sha256": sums.sha256,
        "sums_bytes": sums.size,
        "members": counts["archived"] + counts["changed"],
        "member_bytes": archived_bytes,
        **counts,
    }
    return info, records.sha256


def _sha256sums(files: dict[str, str]) -> bytes:
    return b"".join(sum_line(sha, name.encode()) for name, sha in sorted(files.items()))


def _adopt(ctx: StepContext, published: list, others: list, failed: dict[str, str]) -> tuple[dict, dict]:
    """A crash after publishing, before backup.ok.json: finish from what was published.

    The run is copied, byte for byte, to destinations that did not get it (a crash
    between two publishes); verify then re-reads every copy against the checksums
    taken from the original files.
    """
    try:
        pending = open_sealed(read_plain_file(ctx.run.path(PENDING)), f"run {ctx.run.id}: {PENDING}")
    except (OSError, Refused):  # missing, or not a file this step wrote: no proof of what was published
        pending = None
    for dest in published:
        try:
            same = (
                pending
                and sha256_bytes(dest.read_bytes(ctx.run.id, "MANIFEST.json")) == pending["body"]["manifest_sha256"]
            )
        except (DestinationError, OSError):
            same = False
        if not same:
            raise StepFailed(
                f"destination {dest.describe()} already holds run {ctx.run.id}, but not the one this state describes; "
                "refusing to overwrite it",
                hint=f"inspect that run directory and move it aside, then rerun: make backup RUN={ctx.run.id}",
            )
    ctx.log.event("adopted", f"run {ctx.run.id} was already published on {', '.join(d.name for d in published)}")
    done = list(published)
    for dest in others:
        try:
            copy_run(ctx.run.id, published[0], dest.begin_run(ctx.run.id), pending["body"]["policies"])
        except (DestinationError, OSError) as exc:
            failed[dest.name] = f"{type(exc).__name__}: {exc}"
            ctx.log.event(
                "destination_failed", f"{dest.name}: copy failed: {exc}", level="error", destination=dest.name
            )
            continue
        done.append(dest)
        ctx.log.event("copied", f"run {ctx.run.id} copied from {published[0].name} to {dest.name}")
    body = dict(pending["body"], destinations=[d.name for d in done], failed_destinations=failed)
    return body, pending["files"]


def copy_run(run_id: str, source, staging, policies: dict) -> None:
    """The run's files, byte for byte, from ``source`` into ``staging``, then published
    (as backup publishes); the staging is thrown away if anything fails."""
    names = ["MANIFEST.json", "SHA256SUMS"] + [n for p in policies.values() for n in (p["archive"], p["sums"])]
    try:
        for name in names:
            source.copy_into(run_id, name, staging.create(name))
        staging.publish()
    except BaseException:
        staging.abort()
        raise


def _reachable(ctx: StepContext, failed: dict[str, str]) -> tuple[list, list]:
    """(destinations already holding this run, the others that answer); the rest fail now."""
    published, others = [], []
    for cfg in ctx.config.destinations:
        dest = open_destination(cfg)
        try:
            (published if dest.has_run(ctx.run.id) else others).append(dest)
        except (DestinationError, OSError) as exc:
            failed[dest.name] = f"{type(exc).__name__}: {exc}"
            ctx.log.event("destination_failed", f"{dest.name}: {exc}", level="error", destination=dest.name)
    return published, others


def _warn_other_hosts(ctx: StepContext, dests: list) -> None:
    """Say (a log line, one plain line on stderr) when a destination also holds runs of
    another host: two hosts given one prefix see each other's runs as their own. A look
    only; a destination that cannot answer it leaves the backup as it is."""
    known = known_runs(ctx.config)
    for dest in dests:
        try:
            found = other_hosts(dest, known, first_only=True)
        except (DestinationError, OSError) as exc:
            ctx.log.event(
                "other_hosts_unknown",
                f"{dest.name}: cannot look for runs of other hosts: {exc}",
                level="warning",
                destination=dest.name,
            )
            continue
        for run_id, host in found.items():
            msg = (
                f"destination {dest.describe()} also holds runs of another host ({host}, e.g. run {run_id}); "
                f"give each host a prefix or directory of its own (make status DEST={dest.name} lists them)"
            )
            ctx.log.event("other_host_runs", msg, level="warning", destination=dest.name, host=host, run_example=run_id)
            ctx.ui.problem(msg)


def _compression(ctx: StepContext, policy: str) -> str:
    """The policy's own ``compression`` (parquet is already compressed), else the global one."""
    for p in ctx.config.policies:
        if p.name == policy and p.compression:
            return p.compression
    return ctx.config.compression


def backup_work(ctx: StepContext):
    body, files = _backup(ctx)
    if body["failed_destinations"]:
        # The run succeeded on the others (exit 0) and cron shows nothing of a success:
        # without this line a missing bucket would go unnoticed night after night.
        failed = "; ".join(f"{n}: {' '.join(str(e).split())}" for n, e in sorted(body["failed_destinations"].items()))
        held = f"is on {', '.join(body['destinations'])} only" if body["destinations"] else "had nothing to archive"
        ctx.ui.problem(
            f"backup of run {ctx.run.id}: destination failed ({failed}); the run {held}. Look closer: make status"
        )
    return body, files


def _backup(ctx: StepContext):
    run_id = ctx.run.id
    compression = ctx.config.compression
    scanned = {n: p for n, p in scanned_policies(ctx.chain["scan"]).items() if p.expired > 0}
    for name in scanned:
        if not NAME_RE.match(name):
            raise Refused(f"run {run_id}: scan.ok.json names a policy {name!r} that is not a valid name")
    failed: dict[str, str] = {}
    published, others = _reachable(ctx, failed)
    if published:
        return _adopt(ctx, published, others, failed)
    if not scanned:
        ctx.summary.update(archived=0)
        return {"compression": compression, "destinations": [], "failed_destinations": failed, "policies": {}}, {}

    stagings = {}
    for dest in others:
        try:
            stagings[dest.name] = dest.begin_run(run_id)
            if stagings[dest.name].leftovers:
                ctx.log.event(
                    "replacing_leftovers",
                    f"{dest.name}: {len(stagings[dest.name].leftovers)} objects of an "
                    "interrupted, never-published attempt at this run are replaced",
                    level="warning",
                    destination=dest.name,
                    objects=stagings[dest.name].leftovers[:20],
                )
        except (DestinationError, OSError) as exc:
            failed[dest.name] = f"{type(exc).__name__}: {exc}"
            ctx.log.event("destination_failed", f"{dest.name}: {exc}", level="error", destination=dest.name)
    if not stagings:
        raise StepFailed(f"no destination can take run {run_id}: " + "; ".join(f"{n}: {e}" for n, e in failed.items()))
    fanout = Fanout(ctx, stagings, failed)
    try:
        policies, files = {}, {}
        for name, info in scanned.items():
            policies[name], files[records_name(name)] = _write_policy(ctx, name, info, fanout, _compression(ctx, name))
            crashpoints.reach("backup.after_archive")
        manifest = dumps_document(
            {
                "format": "qts-ops-run",
                "schema": 1,
                "run_id": run_id,
                "host": socket.gethostname(),
                # Whose run this is, for restore (another host's run never goes into this one's
                # roots unasked) and for any host that shares the destination.
                "identity": ctx.config.identity(),
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "compression": compression,
                "policies": {n: {k: p[k] for k in RESTORE_KEYS} for n, p in policies.items()},
            }
        )
        listed = {"MANIFEST.json": sha256_bytes(manifest)}
        for p in policies.values():
            listed[p["archive"]] = p["archive_sha256"]
            listed[p["sums"]] = p["sums_sha256"]
        sums = _sha256sums(listed)
        fanout.create("SHA256SUMS").write(sums)
        fanout.create("MANIFEST.json").write(manifest)
        body = {
            "compression": compression,
            "destinations": sorted(fanout.stagings),
            "failed_destinations": failed,
            "policies": policies,
            "manifest_sha256": listed["MANIFEST.json"],
            "sha256sums_sha256": sha256_bytes(sums),
        }
        # Written before publishing: a crash between publish and backup.ok.json leaves
        # proof of what was published, so the rerun adopts it instead of writing it twice.
        atomic_write(ctx.run.path(PENDING), seal_document({"body": body, "files": files}))
        crashpoints.reach("backup.before_publish")
        fanout.each(lambda name, staging: staging.publish())
        crashpoints.reach("backup.after_publish")
    except BaseException:
        for staging in fanout.stagings.values():
            staging.abort()
        raise
    body["destinations"] = sorted(fanout.stagings)
    _warn_other_hosts(ctx, [d for d in others if d.name in fanout.stagings])
    ctx.summary.update(
        archived=sum(p["archived"] for p in policies.values()), bytes=sum(p["member_bytes"] for p in policies.values())
    )
    return body, files


BACKUP = Step("backup", backup_work)
