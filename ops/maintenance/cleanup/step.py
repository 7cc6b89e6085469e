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
import sqlite3
import time
from collections import Counter, deque

from ops.errors import OpsError, OutsideWindow, Refused, StepFailed
from ops.logs.steplog import utc_seconds
from ops.maintenance.cleanup.journal import JOURNAL_SYNC_EVERY, resume_point
from ops.maintenance.cleanup.prune import DirTracker
from ops.maintenance.cleanup.quorum import check_quorum, copies_held
from ops.maintenance.cleanup.unlink import Unlinker
from ops.maintenance.retention.deletable import UNLINK_FAILED
from ops.maintenance.step import Step, StepContext
from ops.state import catalogue
from ops.state.manifest import JOURNAL, paired, sha256_file
from ops.state.records import ScannedPolicy, scanned_policies
from ops.sys import crashpoints
from ops.sys.jsonl import HashingLineWriter, decode_line, iter_lines
from ops.sys.pace import PACE
from ops.sys.paths import Beneath, RootChanged, entry_key, open_plain_file
from ops.sys.window import WINDOW
from ops.sys.workers import ForkedWorkers, WorkerError
from ops.sys.writers import open_for_writing, report_hidden

# Unlinks in flight: one batch per worker process. On 200,000 small files on this 2-core
# ext4 host clean took 26 s with 16 workers, 29 s with 8, 44 s with 4 threads; a worker
# costs about 3.4 MiB of memory of its own (PSS) and 2 ms to fork.
# At the gentle pace (ops/sys/pace.py) one worker unlinks small batches, each committed
# on its own and followed by a rest: the core's fdatasync never waits behind thousands.
UNLINK_WORKERS = 16
UNLINK_BATCH = 256  # files of one directory handed to a worker at once
GENTLE_UNLINK_WORKERS = 1  # one batch at a time: each batch's commit is waited for
GENTLE_UNLINK_BATCH = 32


def unlink_workers() -> int:
    return GENTLE_UNLINK_WORKERS if PACE.gentle else UNLINK_WORKERS


def unlink_batch() -> int:
    return GENTLE_UNLINK_BATCH if PACE.gentle else UNLINK_BATCH


def _task_item(entry: dict, record: dict) -> tuple[str, tuple | None, str | None]:
    """What a worker needs of one file: its path, and the key to compare before unlinking,
    or why it is kept without a look (its member was not verified)."""
    if record["status"] != "archived":
        return entry["path"], None, f"not verified in an archive: {record.get('reason', record['status'])}"
    return entry["path"], entry_key(entry), None


def _by_policy(ctx: StepContext):
    """(policy, scanned, pairs) per policy, pairs being its (entry, record) in the one fixed order."""
    scanned = scanned_policies(ctx.chain["scan"])
    for policy in ctx.chain["backup"]["policies"]:
        yield policy, scanned[policy], paired(ctx.run, policy, scanned[policy].entries)


def _catalogue_line(
    ctx: StepContext, policy: str, scanned: ScannedPolicy, entry: dict, record: dict, decided: dict, held: list[str]
):
    """What the catalogue keeps of a deletion, or None for a file that stays.

    "gone" with a verified member counts too: after a crash, a file unlinked before its
    journal line reached the disk reads as gone on the rerun, and must still be findable.
    Its copy is verified either way.
    """
    if decided["outcome"] not in ("deleted", "gone") or record["status"] != "archived":
        return None
    return {
        "path": os.path.join(scanned.root, entry["path"]),
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

    def journaled():
        with open_plain_file(journal_path) as f:  # streamed: a journal has a line per file of the run
            yield from (decode_line(line) for line in f if line.endswith(b"\n"))  # a torn last line: not decided

    def lines():
        earlier = journaled()
        for policy, scanned, pairs in _by_policy(ctx):
            for entry, record in pairs:
                done = next(earlier, None)
                if done is not None and done.get("path") != entry["path"]:
                    raise Refused(f"run {run.id}: {JOURNAL} does not match the run's entries at {entry['path']!r}")
                if done is None:
                    if record["status"] != "archived" or os.path.lexists(os.path.join(scanned.root, entry["path"])):
                        continue
                    done = {"outcome": "gone", "at": None}
                line = _catalogue_line(ctx, policy, scanned, entry, record, done, held)
                if line:
                    yield line

    try:
        count = catalogue.write_run(config.state_dir, run.id, lines())
    except (Refused, OSError, ValueError) as exc:  # said, and the new run goes on: it must not stop maintenance
        log.event("catalogue_left_failed", f"run {run.id}: {getattr(exc, 'message', exc)}", level="error")
        return 0
    log.event("catalogued_left", f"run {run.id}: {count} deletions of its unfinished clean catalogued", run_left=run.id)
    return count


def clean_work(ctx: StepContext):
    check_quorum(ctx)
    per_policy: dict[str, Counter] = {p: Counter() for p in ctx.chain["backup"]["policies"]}
    journal_path = ctx.run.path(JOURNAL)
    done_before = resume_point(journal_path)
    held, lost = copies_held(ctx, done_before)
    if done_before:
        ctx.log.event("resume", f"resuming after {done_before} decisions already journaled")
    # The decisions of an earlier attempt are read back from its journal, in entry order.
    earlier = itertools.islice(iter_lines(journal_path), done_before) if done_before else iter(())
    archived = sum(p["archived"] for p in ctx.chain["backup"]["policies"].values())
    report_hidden(ctx.log, ctx.ui, open_for_writing())  # said once; the workers sweep again before each batch
    worker_count = max(1, min(unlink_workers(), archived))
    journal_fd = os.open(journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    # The workers are forked before anything else of the pass starts (a fork copies only
    # the calling thread, so no other may be half-way through anything at that moment).
    with (
        catalogue.RunBlock(ctx.config.state_dir, ctx.run.id) as sink,
        os.fdopen(journal_fd, "ab") as journal,
        ForkedWorkers(worker_count, Unlinker(ctx.log)) as workers,
        ctx.ui.live_counts(f"clean {ctx.run.id}", ["deleted", "kept", "gone", "deleted_bytes"]) as show,
    ):
        clean_pass = CleanPass(ctx, workers, journal, sink, show, held, per_policy)
        clean_pass.run(done_before, earlier)
    catalogued = sink.count
    started = time.monotonic()
    try:
        catalogue.index_run(ctx.config.state_dir, ctx.run.id)
    except (OpsError, OSError, ValueError, sqlite3.Error) as exc:  # a cache: find indexes the block later
        ctx.log.event("index_failed", f"the catalogue index was not updated: {exc}", level="warning")
    indexed_s = time.monotonic() - started
    totals = sum(per_policy.values(), Counter())
    ctx.summary.update(deleted=totals["deleted"], kept=totals["kept"], gone=totals["gone"])
    body = {k: totals[k] for k in ("deleted", "deleted_bytes", "kept", "kept_changed", "gone", "dirs_removed")}
    body.update(
        resumed_after=done_before,
        catalogued=catalogued,
        unlink_workers=worker_count,
        unlink_batches=clean_pass.batches,
        indexed_s=round(indexed_s, 3),
        copies_missing=lost,
        policies={
            p: {k: c[k] for k in ("deleted", "deleted_bytes", "kept", "kept_changed", "gone", "undeletable")}
            for p, c in per_policy.items()
        },
    )
    return body, {JOURNAL: sha256_file(journal_path)}


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
        self.batches = 0

    def run(self, done_before: int, earlier) -> None:
        index, befores = 0, {}
        for policy, scanned, pairs in _by_policy(self.ctx):
            try:
                beneath = Beneath(scanned.root, scanned.root_id)
            except (RootChanged, OSError) as exc:
                raise StepFailed(f"policy {policy}: cannot open root {scanned.root}: {exc}") from None
            with beneath:
                dirs = DirTracker(beneath, befores.setdefault(scanned.root, {}))
                batch, batch_dir, batch_size = [], None, unlink_batch()
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
                    if batch and (directory != batch_dir or len(batch) >= batch_size):
                        self.submit(policy, scanned, batch)
                        batch = []
                        self.pause_if_closed()
                    batch_dir = directory
                    batch.append((entry, record))
                if batch:
                    self.submit(policy, scanned, batch)
                while self.in_flight:
                    self.collect()
                self.per_policy[policy]["dirs_removed"] += dirs.prune(scanned, self.ctx.log, policy)
        self.file.flush()
        os.fsync(self.file.fileno())

    def pause_if_closed(self) -> None:
        """Between batches: when the maintenance window has closed, take back and journal
        the batches in flight, make the journal durable, and stop (OutsideWindow). The
        rerun inside the window resumes after the last decision journaled."""
        try:
            WINDOW.check()
        except OutsideWindow:
            while self.in_flight:
                self.collect()
            self.file.flush()
            os.fsync(self.file.fileno())
            raise

    def submit(self, policy: str, scanned: ScannedPolicy, batch: list) -> None:
        """Hand ``batch`` to a worker, first taking back the oldest answer if all are busy."""
        if len(self.in_flight) == self.workers.count:
            self.collect()
        items = [_task_item(entry, record) for entry, record in batch]
        self.workers.submit((policy, scanned.root, scanned.root_id, items))
        self.in_flight.append((policy, scanned, batch))
        self.batches += 1

    def collect(self) -> None:
        """The oldest batch's answers: counted, journaled, and each deletion catalogued."""
        policy, scanned, batch = self.in_flight.popleft()
        try:
            results, rested = self.workers.result()
        except WorkerError as exc:
            raise StepFailed(f"policy {policy}: {exc}") from None
        PACE.add_throttled(rested)
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

    def _catalogue(self, policy: str, scanned: ScannedPolicy, entry: dict, record: dict, decided: dict) -> None:
        line = _catalogue_line(self.ctx, policy, scanned, entry, record, decided, self.held)
        if line:
            self.sink.add(line)


CLEAN = Step("clean", clean_work)
