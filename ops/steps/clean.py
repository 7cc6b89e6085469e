"""clean: delete only what verify confirmed, and only if it is provably unchanged since.

Each file is reached beneath its root without following symlinks; just before its unlink
its (device, inode, size, mtime_ns, ctime_ns) must equal what was backed up, else it is
kept. Every decision is one log line and one journal line. The journal is fsynced in
batches: it only lets a rerun skip work already decided; a decision lost in a crash is
simply taken again, and a file already unlinked then reads as "already gone", so no file
is ever deleted twice and none is deleted unverified.
"""

import os
import stat
import time
from collections import Counter

from ops import crashpoints
from ops.errors import Refused, StepFailed
from ops.jsonl import HashingLineWriter, iter_lines
from ops.manifest import sha256_file
from ops.paths import Beneath, RootChanged, describe_oserror, entry_key, stat_key
from ops.steps.backup import records_name
from ops.steps.runner import StepContext

JOURNAL = "clean.journal.jsonl"
JOURNAL_SYNC_EVERY = 512
_FIELDS = ("device", "inode", "size", "mtime", "ctime")


def _changed_fields(st: os.stat_result, entry: dict) -> str:
    return ", ".join(f for f, a, b in zip(_FIELDS, stat_key(st), entry_key(entry)) if a != b)


def _decide_and_act(beneath: Beneath, entry: dict, record: dict) -> tuple[str, str]:
    """('deleted' | 'kept' | 'gone', reason) for one file, unlinking it if safe."""
    if record["status"] != "archived":
        return "kept", f"not verified in an archive: {record.get('reason', record['status'])}"
    path = entry["path"]
    try:
        st = beneath.lstat(path)
    except FileNotFoundError:
        return "gone", "already gone (deleted before, or by someone else)"
    except OSError as exc:
        return "kept", describe_oserror(exc)
    if not stat.S_ISREG(st.st_mode):
        return "kept", "no longer a regular file (a symlink or other file took its place)"
    if stat_key(st) != entry_key(entry):
        return "kept", f"changed since backup ({_changed_fields(st, entry)})"
    try:
        beneath.unlink(path)
    except FileNotFoundError:
        return "gone", "already gone"
    except OSError as exc:
        return "kept", f"unlink failed: {describe_oserror(exc)}"
    return "deleted", "verified copy exists; unchanged since backup"


def _resume_point(path) -> int:
    """Complete journal lines from an earlier attempt; a torn last line is cut off."""
    try:
        with open(path, "rb+") as f:
            data_end = good = count = 0
            for line in f:
                data_end += len(line)
                if line.endswith(b"\n"):
                    good, count = data_end, count + 1
            f.truncate(good)
            return count
    except FileNotFoundError:
        return 0


class _DirTracker:
    """Directories that held deleted files, with their mtime before this clean touched them."""

    def __init__(self, beneath: Beneath):
        self.beneath = beneath
        self.before: dict[str, int] = {}

    def touch(self, path: str) -> None:
        parent = path.rpartition("/")[0]
        while parent and parent not in self.before:
            try:
                self.before[parent] = self.beneath.lstat(parent).st_mtime_ns
            except OSError:
                self.before[parent] = time.time_ns()  # unknown: treat as fresh, never pruned
            parent = parent.rpartition("/")[0]

    def prune(self, settle_ns: int, log, policy: str) -> int:
        """Remove emptied directories (never the root) that the core had not touched within settle."""
        removed = 0
        cutoff = time.time_ns() - settle_ns
        for d in sorted(self.before, key=lambda p: p.count("/"), reverse=True):
            if self.before[d] > cutoff:
                continue
            try:
                dir_fd, name = self.beneath.parent(d)
                os.rmdir(name, dir_fd=dir_fd)
            except OSError:
                continue  # not empty, or not ours to judge: leave it
            removed += 1
            log.event("dir_removed", f"{d}: empty directory removed", policy=policy, path=d)
        return removed


def clean_work(ctx: StepContext):
    scan, backup, verify = ctx.chain["scan"], ctx.chain["backup"], ctx.chain["verify"]
    need = ctx.config.require_verified_copies
    counts = Counter()
    if backup["policies"]:
        verified = verify["verified"]
        if len(verified) < need:
            why = dict(backup.get("failed_destinations", {}))
            why.update({n: r.get("error", "?") for n, r in verify["destinations"].items() if not r.get("verified")})
            missing = [f"{d.name} ({why.get(d.name, 'does not hold this run')})"
                       for d in ctx.config.destinations if d.name not in verified]
            raise Refused(f"run {ctx.run.id}: {len(verified)} verified copies ({', '.join(verified) or 'none'}), "
                          f"{need} required; nothing was deleted. Missing: {'; '.join(missing)}",
                          hint="fix the missing destinations; the next `make maintenance` starts a new run that retries them")
    journal_path = ctx.run.path(JOURNAL)
    done_before = _resume_point(journal_path)
    if done_before:
        ctx.log.event("resume", f"resuming after {done_before} decisions already journaled")
    journal_fd = os.open(journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    with os.fdopen(journal_fd, "ab", buffering=0) as jf:
        journal = HashingLineWriter(jf)
        index = 0
        for policy, info in backup["policies"].items():
            scanned = scan["policies"][policy]
            try:
                beneath = Beneath(scanned["root"], (scanned["root_dev"], scanned["root_ino"]))
            except (RootChanged, OSError) as exc:
                raise StepFailed(f"policy {policy}: cannot open root {scanned['root']}: {exc}") from None
            with beneath:
                dirs = _DirTracker(beneath)
                records = iter_lines(ctx.run.path(records_name(policy)))
                for entry, record in zip(iter_lines(ctx.run.path(scanned["entries"])), records):
                    index += 1
                    if index <= done_before:
                        continue
                    if entry["path"] != record["path"]:
                        raise Refused(f"run {ctx.run.id}: scan entries and backup records disagree at {entry['path']!r}")
                    if record["status"] == "archived":
                        dirs.touch(entry["path"])
                    outcome, reason = _decide_and_act(beneath, entry, record)
                    counts[outcome] += 1
                    if outcome == "deleted":
                        counts["deleted_bytes"] += entry["size"]
                    journal.write({"policy": policy, "path": entry["path"], "outcome": outcome, "reason": reason})
                    ctx.log.event(outcome, f"{entry['path']}: {reason}", level="info" if outcome != "kept" else "warning",
                                  policy=policy, path=entry["path"], reason=reason)
                    if journal.count % JOURNAL_SYNC_EVERY == 0:
                        os.fsync(journal_fd)
                    crashpoints.reach("clean.after_unlink")
                counts["dirs_removed"] += dirs.prune(scanned["settle_ns"], ctx.log, policy)
        os.fsync(journal_fd)
    ctx.summary.update(deleted=counts["deleted"], kept=counts["kept"], gone=counts["gone"])
    return {"deleted": counts["deleted"], "deleted_bytes": counts["deleted_bytes"], "kept": counts["kept"],
            "gone": counts["gone"], "resumed_after": done_before, "dirs_removed": counts["dirs_removed"]}, \
        {JOURNAL: sha256_file(journal_path)}
