"""clean: delete only what verify confirmed, and only if it is provably unchanged since.

Each file is reached beneath its root without following symlinks; just before its unlink
its (device, inode, size, mtime_ns, ctime_ns) must equal what was backed up, else it is
kept. Every decision is one log line and one journal line, both written a batch at a
time; the journal is fsynced every JOURNAL_SYNC_EVERY lines. It only lets a rerun skip
work already decided: a decision lost in a crash is simply taken again, and a file
already unlinked then reads as "already gone" (and is catalogued as such), so no file is
ever deleted twice and none is deleted unverified.
"""

import itertools
import os
import stat
import time
from collections import Counter, deque

from ops.destinations import DestinationError, open_destination
from ops.errors import ConfigError, Refused, StepFailed
from ops.logs.steplog import utc_seconds
from ops.maintenance.backup.verify import Mismatch, check_run_files
from ops.maintenance.retention.deletable import UNLINK_FAILED
from ops.maintenance.retention.policy import MARKER
from ops.maintenance.step import Step, StepContext
from ops.state import catalogue
from ops.state.manifest import JOURNAL, paired, sha256_file
from ops.sys import crashpoints
from ops.sys.jsonl import HashingLineWriter, decode_line, iter_lines
from ops.sys.paths import Beneath, RootChanged, describe_oserror, entry_key, open_plain_file, stat_key
from ops.sys.workers import ForkedWorkers, WorkerError

JOURNAL_SYNC_EVERY = 512  # lines; written out after every batch, fsynced after this many
# Unlinks in flight: one batch per worker process. On 200,000 small files on this 2-core
# ext4 host clean took 26 s with 16 workers, 29 s with 8, 44 s with 4 threads; a worker
# costs about 3.4 MiB of memory of its own (PSS) and 2 ms to fork.
UNLINK_WORKERS = 16
UNLINK_BATCH = 256  # files of one directory handed to a worker at once
_FIELDS = ("device", "inode", "size", "mtime", "ctime")


def _changed_fields(st: os.stat_result, key: tuple) -> str:
    return ", ".join(f for f, a, b in zip(_FIELDS, stat_key(st), key, strict=True) if a != b)


def _decide_and_act(beneath: Beneath, path: str, key: tuple) -> tuple[str, str]:
    """('deleted' | 'kept' | 'gone', reason) for one verified file, unlinking it if it is
    still the file with ``key`` (see ``entry_key``).

    Runs in the unlink workers: it touches nothing but the file system, through a walk
    from the root that it owns.
    """
    try:
        with beneath.fresh_parent(path) as (dir_fd, name):  # the unlink below uses the directory checked here
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                return "kept", "no longer a regular file (a symlink or other file took its place)"
            if stat_key(st) != key:
                return "kept", f"changed since backup ({_changed_fields(st, key)})"
            try:
                os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                return "gone", "already gone"
            except OSError as exc:
                return "kept", f"unlink failed: {describe_oserror(exc)}"
    except FileNotFoundError:
        return "gone", "already gone (deleted before, or by someone else)"
    except OSError as exc:
        return "kept", describe_oserror(exc)
    return "deleted", "verified copy exists; unchanged since backup"


def _marker_above(beneath: Beneath, directory: str, known: dict[str, str | None]) -> str | None:
    """The ``.ops-keep`` in ``directory`` or above it (up to the root), or None. Scan
    marked the files beneath one; this catches a marker an operator put down since, so
    "protection beats every other rule" holds up to the unlink. ``known`` caches answers
    per directory for the worker's life (one lstat per directory level). Iterative: a
    tree may be thousands of directories deep."""
    unknown = []
    d: str | None = directory
    while d is not None and d not in known:
        unknown.append(d)
        d = d.rpartition("/")[0] if d else None
    found = known[d] if d is not None else None
    for d in reversed(unknown):  # from the top down: a marker above decides for all beneath
        if found is None:
            marker = f"{d}/{MARKER}" if d else MARKER
            try:
                found = marker if stat.S_ISREG(beneath.lstat(marker).st_mode) else None
            except OSError:
                found = None
        known[d] = found
    return found


def _task_item(entry: dict, record: dict) -> tuple[str, tuple | None, str | None]:
    """What a worker needs of one file: its path, and the key to compare before unlinking,
    or why it is kept without a look (its member was not verified)."""
    if record["status"] != "archived":
        return entry["path"], None, f"not verified in an archive: {record.get('reason', record['status'])}"
    return entry["path"], entry_key(entry), None


def _resume_point(path) -> int:
    """Complete journal lines from an earlier attempt; a torn last line is cut off."""
    try:
        with open_plain_file(path, writable=True) as f:
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
    """Directories that held deleted files, with their mtime before this clean touched them.

    ``before`` is shared by the policies of one root, so a directory emptied by two of them
    keeps the mtime from before the first one's unlinks, and the last one prunes it.
    """

    def __init__(self, beneath: Beneath, before: dict[str, int]):
        self.beneath = beneath
        self.before = before

    def touch(self, path: str) -> None:
        parent = path.rpartition("/")[0]
        while parent and parent not in self.before:
            try:
                self.before[parent] = self.beneath.lstat(parent).st_mtime_ns
            except OSError:
                self.before[parent] = time.time_ns()  # unknown: treat as fresh, never pruned
            parent = parent.rpartition("/")[0]

    def prune(self, scanned: dict, log, policy: str) -> int:
        """Remove the directories this clean emptied, if the policy asked for it
        (``prune_empty_dirs``): never its root, never another policy's root, never one the
        core touched within the policy's horizon (``prune_after_ns``: a directory the core
        writes into must still be there for its next write)."""
        if not scanned.get("prune_empty_dirs"):  # absent in a run scanned before the key: off, as the default
            return 0
        removed = 0
        cutoff = time.time_ns() - scanned["prune_after_ns"]
        roots = set(scanned.get("nested_roots", ()))
        for d in sorted(self.before, key=lambda p: p.count("/"), reverse=True):
            if self.before[d] > cutoff or d in roots:
                continue
            try:
                with self.beneath.fresh_parent(d) as (dir_fd, name):
                    os.rmdir(name, dir_fd=dir_fd)
            except OSError:
                continue  # not empty, or not ours to judge: leave it
            removed += 1
            log.event("dir_removed", f"{d}: empty directory removed (prune_empty_dirs)", policy=policy, path=d)
        return removed


def _check_quorum(ctx: StepContext) -> None:
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
        for info in backup["policies"].values():
            # A run backed up before sums_bytes was recorded: its .sha256 file only has to be there.
            for file, wrote in ((info["archive"], info["archive_bytes"]), (info["sums"], info.get("sums_bytes"))):
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


def _copies_held(ctx: StepContext, done_before: int) -> tuple[list[str], dict[str, str]]:
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


def _by_policy(ctx: StepContext):
    """(policy, scanned, pairs) per policy, pairs being its (entry, record) in the one fixed order."""
    scan = ctx.chain["scan"]
    for policy in ctx.chain["backup"]["policies"]:
        scanned = scan["policies"][policy]
        yield policy, scanned, paired(ctx.run, policy, scanned["entries"])


def _catalogue_line(
    ctx: StepContext, policy: str, scanned: dict, entry: dict, record: dict, decided: dict, held: list[str]
):
    """What the catalogue keeps of a deletion, or None for a file that stays.

    "gone" with a verified member counts too: after a crash, a file unlinked before its
    journal line reached the disk reads as gone on the rerun, and must still be findable.
    Its copy is verified either way.
    """
    if decided["outcome"] not in ("deleted", "gone") or record["status"] != "archived":
        return None
    return {
        "path": os.path.join(scanned["root"], entry["path"]),
        "policy": policy,
        "rel": entry["path"],
        "run": ctx.run.id,
        "destinations": held,
        "archive": ctx.chain["backup"]["policies"][policy]["archive"],
        "sha256": record["sha256"],
        "size": entry["size"],
        "mtime_ns": entry["mtime_ns"],
        "deleted_at": decided.get("at"),
    }


def catalogue_left(config, run, log, ui) -> int:
    """Catalogue what the clean of a run that is left unfinished already deleted (killed
    part-way, then the config changed or a new run was asked for): its deletions must stay
    findable by ``make find`` and ``restore FILE=``. Nothing is deleted here. The files its
    journal records as deleted are catalogued, and so is every other verified file of the
    run that is no longer at its path (unlinked just before the kill, ahead of its journal
    line), as a rerun of clean would. Returns how many; 0 when clean never started.
    """
    journal_path = run.path(JOURNAL)
    if run.ok_path("clean").exists() or not journal_path.exists():
        return 0
    try:
        chain = run.require("clean")
    except Refused as exc:  # its state cannot be trusted: nothing is said in its name
        log.event("catalogue_left_refused", f"run {run.id}: {exc.message}", level="error")
        return 0
    ctx = StepContext(config, run, log, ui, chain)
    held = chain["verify"]["verified"]
    with open_plain_file(journal_path) as f:
        decided = [decode_line(line) for line in f if line.endswith(b"\n")]  # a torn last line: not decided

    def lines():
        earlier = iter(decided)
        for policy, scanned, pairs in _by_policy(ctx):
            for entry, record in pairs:
                done = next(earlier, None)
                if done is not None and done.get("path") != entry["path"]:
                    raise Refused(f"run {run.id}: {JOURNAL} does not match the run's entries at {entry['path']!r}")
                if done is None:
                    if record["status"] != "archived" or os.path.lexists(os.path.join(scanned["root"], entry["path"])):
                        continue
                    done = {"outcome": "gone", "at": None}
                line = _catalogue_line(ctx, policy, scanned, entry, record, done, held)
                if line:
                    yield line

    try:
        count = catalogue.write_run(config.state_dir, run.id, lines())
    except (Refused, OSError) as exc:  # said, and the new run goes on: this look must not stop maintenance
        log.event("catalogue_left_failed", f"run {run.id}: {getattr(exc, 'message', exc)}", level="error")
        return 0
    log.event("catalogued_left", f"run {run.id}: {count} deletions of its unfinished clean catalogued", run_left=run.id)
    return count


def clean_work(ctx: StepContext):
    _check_quorum(ctx)
    per_policy: dict[str, Counter] = {p: Counter() for p in ctx.chain["backup"]["policies"]}
    journal_path = ctx.run.path(JOURNAL)
    done_before = _resume_point(journal_path)
    held, lost = _copies_held(ctx, done_before)
    if done_before:
        ctx.log.event("resume", f"resuming after {done_before} decisions already journaled")
    # The decisions of an earlier attempt are read back from its journal, in entry order.
    earlier = itertools.islice(iter_lines(journal_path), done_before) if done_before else iter(())
    archived = sum(p["archived"] for p in ctx.chain["backup"]["policies"].values())
    journal_fd = os.open(journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    # The workers are forked before anything else of the pass starts (a fork copies only
    # the calling thread, so no other may be half-way through anything at that moment).
    with (
        catalogue.RunBlock(ctx.config.state_dir, ctx.run.id) as sink,
        os.fdopen(journal_fd, "ab") as journal,
        ForkedWorkers(max(1, min(UNLINK_WORKERS, archived)), _Unlinker(ctx.log)) as workers,
        ctx.ui.live_counts(f"clean {ctx.run.id}", ["deleted", "kept", "gone", "deleted_bytes"]) as show,
    ):
        CleanPass(ctx, workers, journal, sink, show, held, per_policy).run(done_before, earlier)
    catalogued = sink.count
    totals = sum(per_policy.values(), Counter())
    ctx.summary.update(deleted=totals["deleted"], kept=totals["kept"], gone=totals["gone"])
    body = {k: totals[k] for k in ("deleted", "deleted_bytes", "kept", "kept_changed", "gone", "dirs_removed")}
    body.update(
        resumed_after=done_before,
        catalogued=catalogued,
        copies_missing=lost,
        policies={
            p: {k: c[k] for k in ("deleted", "deleted_bytes", "kept", "kept_changed", "gone", "undeletable")}
            for p, c in per_policy.items()
        },
    )
    return body, {JOURNAL: sha256_file(journal_path)}


class _Unlinker:
    """What an unlink worker runs on one batch (files of one directory): each one decided
    and, if still the file that was backed up, unlinked; its log lines written when the
    batch is done. Runs in the forked workers; keeps per worker the roots it has opened
    and the ``.ops-keep`` answers per directory."""

    def __init__(self, log):
        self.log = log
        self.opened: dict[str, Beneath] = {}
        self.markers: dict[str, dict[str, str | None]] = {}

    def __call__(self, task) -> list[tuple[str, str]]:
        policy, root, root_id, items = task
        beneath = self.opened.get(root)
        if beneath is None:
            beneath = self.opened[root] = Beneath(root, root_id)
        results, lines = [], []
        for path, key, unverified in items:
            outcome, reason = self._decide(beneath, root, path, key, unverified)
            level = "info" if outcome != "kept" else "warning"
            lines.append(
                self.log.line(outcome, f"{path}: {reason}", policy=policy, path=path, reason=reason, level=level)
            )
            results.append((outcome, reason))
        self.log.write(b"".join(lines))
        return results

    def _decide(self, beneath: Beneath, root: str, path: str, key, unverified) -> tuple[str, str]:
        if unverified:
            return "kept", unverified
        marker = _marker_above(beneath, path.rpartition("/")[0], self.markers.setdefault(root, {}))
        if marker:
            return "kept", f"protected by {marker} (put there since scan)"
        return _decide_and_act(beneath, path, key)


class CleanPass:
    """One clean of a run: decide (and unlink) every file, journal every decision, and hand
    every deletion to the catalogue ``sink``.

    ``run`` walks the run's entries in their one fixed order and submits them, a batch of
    files of one directory at a time, to up to UNLINK_WORKERS forked worker processes
    (ops/sys/workers.py says why not threads), one batch per worker: an unlink mostly waits
    for the disk to discard its blocks (ext4 mounted with ``discard``), and several in
    flight finish sooner than one after another (``rm``'s way). ``collect`` takes the
    answers back strictly in submission order, so the journal and the catalogue read
    exactly as a sequential pass would. A crash can leave files unlinked ahead of their
    journal lines (at most the batches in flight, up to UNLINK_WORKERS x UNLINK_BATCH
    files): the rerun finds them gone, logs them so and catalogues them, which the batched
    journal already handles. A worker writes its batch's log lines when the batch is done,
    so a crash usually cuts those off. After an error the batches already in workers are
    finished, nothing new is started.
    """

    def __init__(self, ctx: StepContext, workers, journal, sink, show, held: list[str], per_policy: dict):
        self.ctx, self.workers, self.sink, self.show, self.held = ctx, workers, sink, show, held
        self.per_policy = per_policy
        self.file = journal
        self.journal = HashingLineWriter(journal)
        self.synced = self.journal.count
        self.in_flight = deque()  # (policy, scanned, batch), oldest first, at most one per worker

    def run(self, done_before: int, earlier) -> None:
        index, befores = 0, {}
        for policy, scanned, pairs in _by_policy(self.ctx):
            try:
                beneath = Beneath(scanned["root"], (scanned["root_dev"], scanned["root_ino"]))
            except (RootChanged, OSError) as exc:
                raise StepFailed(f"policy {policy}: cannot open root {scanned['root']}: {exc}") from None
            with beneath:
                dirs = _DirTracker(beneath, befores.setdefault(scanned["root"], {}))
                batch, batch_dir = [], None
                for entry, record in pairs:
                    index += 1
                    if index <= done_before:  # decided by an earlier attempt: catalogued, not looked at again
                        decided = next(earlier)
                        if decided["path"] != entry["path"]:
                            raise Refused(f"run {self.ctx.run.id}: {JOURNAL} line {index} does not match the entries")
                        self._catalogue(policy, scanned, entry, record, decided)
                        continue
                    if record["status"] == "archived":
                        dirs.touch(entry["path"])  # before any unlink in its directory is under way
                    directory = entry["path"].rpartition("/")[0]
                    if batch and (directory != batch_dir or len(batch) >= UNLINK_BATCH):
                        self.submit(policy, scanned, batch)
                        batch = []
                    batch_dir = directory
                    batch.append((entry, record))
                if batch:
                    self.submit(policy, scanned, batch)
                while self.in_flight:
                    self.collect()
                self.per_policy[policy]["dirs_removed"] += dirs.prune(scanned, self.ctx.log, policy)
        self.file.flush()
        os.fsync(self.file.fileno())

    def submit(self, policy: str, scanned: dict, batch: list) -> None:
        """Hand ``batch`` to a worker, first taking back the oldest answer if all are busy."""
        if len(self.in_flight) == self.workers.count:
            self.collect()
        root_id = (scanned["root_dev"], scanned["root_ino"])
        items = [_task_item(entry, record) for entry, record in batch]
        self.workers.submit((policy, scanned["root"], root_id, items))
        self.in_flight.append((policy, scanned, batch))

    def collect(self) -> None:
        """The oldest batch's answers: counted, journaled, and each deletion catalogued."""
        policy, scanned, batch = self.in_flight.popleft()
        try:
            results = self.workers.result()
        except WorkerError as exc:
            raise StepFailed(f"policy {policy}: {exc}") from None
        counts = self.per_policy[policy]
        for (entry, record), (outcome, reason) in zip(batch, results, strict=True):
            crashpoints.reach("clean.before_journal")
            counts[outcome] += 1
            if outcome == "deleted":
                counts["deleted_bytes"] += entry["size"]
            elif reason.startswith("changed since backup"):
                counts["kept_changed"] += 1
            elif reason.startswith(UNLINK_FAILED):
                counts["undeletable"] += 1
            decided = {"policy": policy, "path": entry["path"], "outcome": outcome, "reason": reason}
            decided["at"] = utc_seconds() + "Z"
            self.journal.write(decided)
            crashpoints.reach("clean.after_unlink")
            self._catalogue(policy, scanned, entry, record, decided)
        self.show(policy, counts)
        self.file.flush()
        if self.journal.count - self.synced >= JOURNAL_SYNC_EVERY:
            os.fsync(self.file.fileno())
            self.synced = self.journal.count

    def _catalogue(self, policy: str, scanned: dict, entry: dict, record: dict, decided: dict) -> None:
        line = _catalogue_line(self.ctx, policy, scanned, entry, record, decided, self.held)
        if line:
            self.sink.add(line)


CLEAN = Step("clean", clean_work)
