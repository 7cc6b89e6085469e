"""verify: re-read every archive from every destination and check every member.

Nothing written by backup is taken on trust: each archive is streamed back, decompressed
and parsed, every member hashed and compared with the SHA-256 taken from the original
file, in order, against both backup's records and scan's entries (nothing missing, nothing
extra); the ``.sha256`` files, MANIFEST.json and SHA256SUMS must match to the byte.
"""

import os

from ops.archive import ArchiveError, ArchiveReader
from ops.archive.checksums import parse_lines
from ops.destinations import Destination, DestinationError, open_destination
from ops.errors import ConfigError, StepFailed
from ops.maintenance.step import Step, StepContext
from ops.state.manifest import paired
from ops.state.records import ArchivedPolicy, ScannedPolicy, archived_policies
from ops.sys.hashio import HashingReader, sha256_bytes
from ops.sys.pace import PACE
from ops.sys.window import WINDOW


class Mismatch(Exception):
    pass


def _archived_records(ctx: StepContext, policy: str, scanned: ScannedPolicy):
    """Backup's records that have a member, checked one-to-one against scan's entries."""
    for _entry, record in paired(ctx.run, policy, scanned.entries):
        if record["status"] != "skipped":
            yield record


def _verify_policy(ctx: StepContext, dest: Destination, policy: str, info: ArchivedPolicy, advance) -> None:
    compression = info.compression
    scanned = ScannedPolicy.of(policy, ctx.chain["scan"]["policies"][policy])
    with (
        dest.open_read(ctx.run.id, info.archive) as raw,
        ArchiveReader(raw, compression) as reader,
        dest.open_read(ctx.run.id, info.sums) as sums_raw,
    ):
        sums_file = HashingReader(sums_raw)
        members = reader.members()
        sums = parse_lines(sums_file)
        for record in _archived_records(ctx, policy, scanned):
            name = os.fsencode(record["path"])
            member = next(members, None)
            if member is None:
                raise Mismatch(f"{info.archive}: member {record['path']!r} is missing")
            if not member.is_regular or member.name != name or member.size != record["size"]:
                raise Mismatch(
                    f"{info.archive}: expected {record['path']!r} ({record['size']} bytes), "
                    f"found {member.name!r} ({member.size} bytes, type {member.typeflag!r})"
                )
            for chunk in reader.chunks(member):
                advance(len(chunk))
                WINDOW.check()
            if member.sha256 != record["sha256"]:
                raise Mismatch(f"{info.archive}: {record['path']!r} does not match the SHA-256 of the original")
            if next(sums, None) != (record["sha256"], name):
                raise Mismatch(f"{info.sums}: line for {record['path']!r} is missing or differs")
        extra = next(members, None)
        if extra is not None:
            raise Mismatch(f"{info.archive}: unexpected extra member {extra.name!r}")
        if next(sums, None) is not None:
            raise Mismatch(f"{info.sums}: unexpected extra line")
        archive_sha, _ = reader.finish()
        if archive_sha != info.archive_sha256:
            raise Mismatch(f"{info.archive}: archive bytes differ from what backup wrote")
        if sums_file.sha256 != info.sums_sha256:
            raise Mismatch(f"{info.sums}: differs from what backup wrote")
        PACE.done_with(raw)  # read once more only by a restore, if ever


def check_run_files(dest: Destination, run_id: str, backup: dict) -> None:
    """MANIFEST.json and SHA256SUMS on ``dest`` are, to the byte, what backup wrote; else Mismatch."""
    if sha256_bytes(dest.read_bytes(run_id, "MANIFEST.json")) != backup["manifest_sha256"]:
        raise Mismatch("MANIFEST.json differs from what backup wrote")
    if sha256_bytes(dest.read_bytes(run_id, "SHA256SUMS")) != backup["sha256sums_sha256"]:
        raise Mismatch("SHA256SUMS differs from what backup wrote")


def _verify_destination(ctx: StepContext, dest: Destination, advance) -> None:
    backup = ctx.chain["backup"]
    check_run_files(dest, ctx.run.id, backup)
    names = ["MANIFEST.json", "SHA256SUMS"] + [
        n for p in backup["policies"].values() for n in (p["archive"], p["sums"])
    ]
    dest.check_objects(ctx.run.id, names)  # a copy without its lock or encryption counts for nothing
    for policy, info in archived_policies(backup).items():
        _verify_policy(ctx, dest, policy, info, advance)


def verify_work(ctx: StepContext):
    backup = ctx.chain["backup"]
    total = sum(p["member_bytes"] for p in backup["policies"].values())
    results = {}
    for name in backup["destinations"]:
        try:
            dest = open_destination(ctx.config.destination(name))
        except ConfigError as exc:
            results[name] = {"verified": False, "error": f"destination no longer configured: {exc.message}"}
            continue
        try:
            with ctx.ui.progress(f"verify {name}", total) as advance:
                _verify_destination(ctx, dest, advance)
            results[name] = {"verified": True}
            ctx.log.event("destination_verified", f"{dest.describe()}: every member matches", destination=name)
        except (Mismatch, ArchiveError, DestinationError, OSError, ValueError) as exc:
            results[name] = {"verified": False, "error": str(exc)}
            ctx.log.event("verify_failed", f"{dest.describe()}: {exc}", level="error", destination=name)
    failed = {n: r["error"] for n, r in results.items() if not r["verified"]}
    if failed:
        raise StepFailed(
            "verification failed: " + "; ".join(f"{n}: {e}" for n, e in failed.items()),
            hint="the archive on the destination is not a faithful copy; inspect it before anything else",
        )
    ctx.summary.update(destinations=len(results), bytes=total)
    return {"destinations": results, "verified": sorted(results)}, {}


VERIFY = Step("verify", verify_work, checked_alongside=True)
