"""What an unlink worker does to one file: reach it beneath its root, look for an .ops-keep put down
since scan, compare its identity with what was backed up, and unlink it only on a match that no process holds
open for writing (ops/sys/writers.py, swept before each batch)."""

import os
import stat
import time

from ops.maintenance.retention.policy import MARKER
from ops.sys.atomic import fsync_dir_fd
from ops.sys.pace import PACE
from ops.sys.paths import Beneath, describe_oserror, stat_key
from ops.sys.writers import Writers, open_for_writing

# A worker sweeps /proc for files held open for writing before each batch, reusing a sweep
# younger than this: at the gentle pace's small batches a sweep (3 ms on a quiet host, more
# on a busy one) per batch would cost more than the unlinks. A file opened for writing
# since is one the stat comparison still catches as soon as it is written.
WRITERS_FRESH = 0.2

_FIELDS = ("device", "inode", "size", "mtime", "ctime")


def _changed_fields(st: os.stat_result, key: tuple) -> str:
    return ", ".join(f for f, a, b in zip(_FIELDS, stat_key(st), key, strict=True) if a != b)


def _decide_and_act(beneath: Beneath, path: str, key: tuple, writers: Writers) -> tuple[str, str]:
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
            # Only now: the file's inode may have been freed and reused by another file since.
            held = writers.holder(st.st_dev, st.st_ino)
            if held:
                return "kept", held
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


def marker_above(beneath: Beneath, directory: str, known: dict[str, str | None]) -> str | None:
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


class Unlinker:
    """What an unlink worker runs on one batch (files of one directory): each one decided
    and, if still the file that was backed up, unlinked; its log lines written when the
    batch is done. Runs in the forked workers; keeps per worker the roots it has opened
    and the ``.ops-keep`` answers per directory."""

    def __init__(self, log):
        self.log = log
        self.opened: dict[str, Beneath] = {}
        self.markers: dict[str, dict[str, str | None]] = {}
        self.writers: Writers | None = None  # the last sweep, and when (processes the step cannot
        self.swept = 0.0  # inspect are said once, by clean_work, not per worker)

    def _writers(self) -> Writers:
        if self.writers is None or time.monotonic() - self.swept > WRITERS_FRESH:
            self.writers, self.swept = open_for_writing(), time.monotonic()
        return self.writers

    def __call__(self, task) -> tuple[list[tuple[str, str]], float]:
        """The batch's (outcome, reason) per file, and the seconds rested after it (gentle)."""
        policy, root, root_id, items = task
        beneath = self.opened.get(root)
        if beneath is None:
            beneath = self.opened[root] = Beneath(root, root_id)
        results, lines = [], []
        writers = self._writers()
        for path, key, unverified in items:
            outcome, reason = self._decide(beneath, root, path, key, unverified, writers)
            level = "info" if outcome != "kept" else "warning"
            lines.append(
                self.log.line(outcome, f"{path}: {reason}", policy=policy, path=path, reason=reason, level=level)
            )
            results.append((outcome, reason))
        self.log.write(b"".join(lines))
        return results, self._settle(beneath, items[-1][0]) if PACE.gentle else 0.0

    def _settle(self, beneath: Beneath, path: str) -> float:
        """Gentle: the batch's unlinks committed on their own (its directory fsynced, a
        small journal commit), then a rest in proportion; the seconds rested."""
        directory = path.rpartition("/")[0]
        try:
            with beneath.fresh_parent(path) as (dir_fd, _):
                started = time.monotonic()
                fsync_dir_fd(dir_fd)
                return PACE.rest_after(time.monotonic() - started)
        except FileNotFoundError:
            return 0.0  # the directory went (pruned, renamed): nothing of this batch is left to commit there
        except OSError as exc:  # the unlinks are done and journaled as such; the disk's complaint is said
            why = describe_oserror(exc)
            self.log.write(
                self.log.line(
                    "commit_failed",
                    f"{directory or '.'}: fsync after unlinks failed: {why}",
                    path=directory,
                    reason=why,
                    level="warning",
                )
            )
            return 0.0

    def _decide(self, beneath: Beneath, root: str, path: str, key, unverified, writers: Writers) -> tuple[str, str]:
        if unverified:
            return "kept", unverified
        marker = marker_above(beneath, path.rpartition("/")[0], self.markers.setdefault(root, {}))
        if marker:
            return "kept", f"protected by {marker} (put there since scan)"
        return _decide_and_act(beneath, path, key, writers)
