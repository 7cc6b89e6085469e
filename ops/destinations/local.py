"""A local directory destination: ``<path>/<run_id>/`` per published run."""

import os
import shutil
import stat
import threading
import time
from pathlib import Path
from typing import BinaryIO

from ops.destinations.base import Destination, DestinationError, Staging
from ops.state.manifest import RUN_ID_RE
from ops.sys import crashpoints
from ops.sys.atomic import PRIVATE_DIR, PRIVATE_FILE, ensure_private_dir, fsync_dir, fsync_dir_fd
from ops.sys.budget import READS, WRITES, metered
from ops.sys.gather import write_all
from ops.sys.handover import Handover
from ops.sys.pace import PACE, Steps
from ops.sys.paths import NotPlainFile, open_dir_nofollow, open_plain_file
from ops.sys.sizes import CHUNK, MiB


class _StagingFile:
    """A staging file written by a thread of its own, which also starts writeback early.

    write() only hands the bytes over (ops/sys/handover.py): the copy into the page cache
    then runs beside the reading and hashing instead of between them (2 GiB of large
    files: backup took 1.9 s instead of 2.2 s on two cores). The handover gathers short
    writes into blocks of at least GATHER bytes, so the file beneath is a raw one, with no
    buffer of its own that would only copy each block once more. Every FLUSH_EVERY bytes a
    further thread fdatasyncs what was written so far, so the disk works while the
    archive is still being made; publish's fsync then has little left to wait for. At
    the gentle pace (ops/sys/pace.py) the writer thread instead flushes every WRITE_STEP
    bytes itself and waits for them, then rests, so the dirty data stays small and the
    disk is never taken in a burst. Neither changes durability: publish still flushes
    and fsyncs every file. An error either thread saw (a write's ENOSPC, or an
    fdatasync's EIO, which the kernel reports only once per open file) is kept and
    raised by the next write or flush, so publish can never miss it.
    """

    FLUSH_EVERY = 64 * MiB
    GATHER = CHUNK
    QUEUE = 8

    def __init__(self, f: BinaryIO):
        self._f = f  # raw: a write may be short, and is then finished here
        self._since = 0
        self._steps = Steps(f.fileno())  # gentle: flushed every WRITE_STEP bytes
        self._syncing: threading.Thread | None = None
        self._feed = Handover(self._write_block, name="staging-write", depth=self.QUEUE, block=self.GATHER)

    def write(self, data) -> int:
        return self._feed.put(data)

    def _write_block(self, data: bytes) -> None:
        """On the handover's thread, one block at a time."""
        WRITES.take(len(data))  # io_limit, on this thread: the reading and hashing go on meanwhile
        write_all(self._f.write, data)
        self._steps.wrote(len(data))
        if PACE.gentle:
            return
        self._since += len(data)
        if self._since >= self.FLUSH_EVERY and (self._syncing is None or not self._syncing.is_alive()):
            self._since = 0
            self._syncing = threading.Thread(target=self._sync, args=(self._f.fileno(),), daemon=True)
            self._syncing.start()

    def _sync(self, fd: int) -> None:
        try:
            os.fdatasync(fd)
        except OSError as exc:
            self._feed.fail(exc)  # the first error is the one reported; writing stops

    def _settle(self) -> None:
        """Wait until no early sync is running (the handover's thread is idle or ended)."""
        if self._syncing is not None:
            self._syncing.join()

    def flush(self) -> None:
        self._feed.drain()
        self._settle()
        self._feed.raise_kept()
        self._f.flush()

    def fileno(self) -> int:
        return self._f.fileno()

    def close(self) -> None:
        self._feed.close()
        self._settle()  # never close a descriptor a sync is still using
        self._f.close()


class LocalStaging(Staging):
    def __init__(self, final: Path, staging: Path, aside: Path | None = None):
        self.aside = aside  # a repair: what is at final is moved here when the run is published
        self.final = final
        self.dir = staging
        # Files are made beneath this descriptor: should the staging path be swapped for a
        # symlink meanwhile, they still land in the directory made for them, never elsewhere.
        self._dir_fd = open_dir_nofollow(staging)
        self._files: list[BinaryIO] = []

    def create(self, name: str) -> BinaryIO:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE, dir_fd=self._dir_fd)
        f = _StagingFile(self._open(fd))
        self._files.append(f)
        return f

    def _open(self, fd: int) -> BinaryIO:
        """The raw file beneath a staging file (unbuffered: the staging file gathers)."""
        return os.fdopen(fd, "wb", buffering=0)

    def publish(self) -> None:
        # Data first, then the names: fsync every file, then the staging directory, then
        # rename it into place and fsync the parent, so after a crash the run is either
        # absent (staging left behind, ignored) or complete.
        for f in self._files:
            f.flush()
            os.fsync(f.fileno())
            f.close()
        self._files.clear()
        fsync_dir_fd(self._dir_fd)
        crashpoints.reach("publish.before_rename")
        if self.aside is not None and os.path.lexists(self.final):
            os.rename(self.final, self.aside)
        if os.path.lexists(self.final):  # as begin_run: anything by that name, a dangling link too
            raise DestinationError(f"{self.final} already exists; refusing to overwrite a published run")
        os.rename(self.dir, self.final)  # by name: checked below to have moved the directory made
        try:
            if not os.path.samestat(os.lstat(self.final), os.fstat(self._dir_fd)):
                raise DestinationError(f"{self.dir} was replaced during the backup; nothing was published")
            fsync_dir(self.final.parent)
        except (OSError, DestinationError):
            # Not the directory made (a link swapped in for it), or an fsync error, which is
            # never retried and trusted: back to the staging name (abort discards it), so no
            # rerun can adopt a run that is not this one, or may not be on disk.
            os.rename(self.final, self.dir)
            raise
        self._close_dir()

    def abort(self) -> None:
        for f in self._files:
            try:
                f.close()
            except OSError:
                pass  # a file whose flush fails (disk full) is discarded with the rest
        self._files.clear()
        shutil.rmtree(self.dir, ignore_errors=True)  # a link in its place: rmtree refuses it
        self._close_dir()

    def _close_dir(self) -> None:
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1


class LocalDestination(Destination):
    def __init__(self, name: str, path: Path):
        super().__init__(name)
        self.path = Path(path)

    def describe(self) -> str:
        return f"{self.name} ({self.path})"

    def has_run(self, run_id: str) -> bool:
        """Whether a run directory by that name is held here (a symlink in its place is
        not one: restore then tries the next destination)."""
        try:
            return stat.S_ISDIR(os.lstat(self.path / run_id).st_mode)
        except FileNotFoundError:
            return False

    def list_runs(self) -> list[str]:
        """The run directories held here (a symlink in their place is not one)."""
        try:
            with os.scandir(self.path) as it:
                return sorted(e.name for e in it if RUN_ID_RE.match(e.name) and e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return []

    def bytes_used(self) -> int:
        total = 0
        for run_id in self.list_runs():
            with os.scandir(self.path / run_id) as it:
                total += sum(e.stat(follow_symlinks=False).st_size for e in it if e.is_file(follow_symlinks=False))
        return total

    def begin_run(self, run_id: str) -> LocalStaging:
        ensure_private_dir(self.path)
        if os.path.lexists(self.path / run_id):  # a run, or anything else by its name: never replaced
            raise DestinationError(f"{self.path / run_id} already exists; refusing to overwrite a published run")
        self._clear_attempts(run_id)
        staging = self.path / f".{run_id}.tmp-{os.getpid()}"
        os.mkdir(staging, PRIVATE_DIR)
        return self._staging(self.path / run_id, staging)

    def begin_repair(self, run_id: str) -> LocalStaging:
        """The damaged copy stays in place until the repair is staged whole; publish then
        moves it aside (``.<run>.damaged-<time>``, kept for whoever wants to look) and puts
        the repair in its place."""
        final = self.path / run_id
        aside = self.path / f".{run_id}.damaged-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        ensure_private_dir(self.path)
        self._clear_attempts(run_id)  # a repair or backup of this run cut short (the lock is ours)
        staging = self.path / f".{run_id}.tmp-{os.getpid()}"
        os.mkdir(staging, PRIVATE_DIR)
        return LocalStaging(final, staging, aside=aside)

    def _clear_attempts(self, run_id: str) -> None:
        prefix = f".{run_id}.tmp-"
        for name in os.listdir(self.path):
            if name.startswith(prefix):  # an interrupted attempt at this very run
                shutil.rmtree(self.path / name)

    def _staging(self, final: Path, staging: Path) -> LocalStaging:
        return LocalStaging(final, staging)

    def open_read(self, run_id: str, name: str) -> BinaryIO:
        """A published file of a run, reached without following a symlink: the copy that
        verify reads and clean counts is the file in this directory, not one a link
        points at on some other disk (maybe the very one being cleaned)."""
        run_fd = None
        try:
            run_fd = open_dir_nofollow(self.path / run_id)
            return metered(open_plain_file(name, dir_fd=run_fd, buffering=CHUNK), CHUNK, READS)
        except FileNotFoundError:  # the run's directory, or the file in it
            raise DestinationError(f"{self.describe()}: run {run_id} has no {name}") from None
        except NotADirectoryError as exc:
            raise DestinationError(f"{self.describe()}: {run_id} {exc.strerror}") from None
        except NotPlainFile as exc:
            raise DestinationError(f"{self.describe()}: {run_id}/{name} {exc.strerror}") from None
        finally:
            if run_fd is not None:
                os.close(run_fd)

    def size(self, run_id: str, name: str) -> int:
        with self.open_read(run_id, name) as f:
            return os.fstat(f.fileno()).st_size
