"""How hard a step may use the disk: ``gentle`` (the default) or ``full``. One per process.

What a trading core feels of maintenance is not CPU or I/O priority (mq-deadline and
``none`` ignore I/O classes) but volume: dirty pages flushed by the kernel in bursts of
hundreds of MiB, large fsyncs, and thousands of unlinks landing in the one ext4 journal
commit that the core's own fdatasync must wait for. ``gentle`` takes each of these in
small steps, waits for every step, and rests after it:

- writes: a file being written is flushed every WRITE_STEP bytes (sync_file_range: write
  the range and wait), so a step never holds more than that of dirty data and never
  leaves a burst of writeback to the kernel;
- metadata: unlinks go in small batches, each batch's directory fsynced (a journal
  commit of their own, a small one) before the next batch starts;
- after each flush or commit, which took L seconds, the step rests L x REST_FACTOR. The
  rest is the governor: when the disk is busy (the core, or anyone else), L grows and so
  does the rest, so the toolkit backs off in proportion to the latency it sees itself,
  and never takes more than 1 / (1 + REST_FACTOR) of the disk's time;
- pages: files the toolkit is done with (a source once archived, an archive once
  verified) are dropped from the page cache, so they do not push out the core's pages.
  An archive just written is kept until verify has read it: it is hashed from memory.

``full`` does none of this: the fastest run, for a window when nothing trades.
Neither changes what is checked or made durable: publish still fsyncs every file.
``throttled_s`` counts the rests: what being gentle cost the step in time (status and
the metrics report it per step). Measurements: docs/performance.md.
"""

import ctypes
import errno
import os
import threading
import time

PACES = ("gentle", "full")
DEFAULT = "gentle"
WRITE_STEP = 256 * 1024
REST_FACTOR = 4.0
MIN_REST = 0.0005  # a rest shorter than this is owed, not slept: a sleep costs about as much

_SYNC_FILE_RANGE_WAIT_BEFORE, _SYNC_FILE_RANGE_WRITE, _SYNC_FILE_RANGE_WAIT_AFTER = 1, 2, 4
# What a file system says when it has no sync_file_range of its own: pacing then falls back
# to fdatasync, never fails the step.
_NOT_SUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ESPIPE}
_WRITE_AND_WAIT = _SYNC_FILE_RANGE_WAIT_BEFORE | _SYNC_FILE_RANGE_WRITE | _SYNC_FILE_RANGE_WAIT_AFTER


def _libc_sync_file_range():
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None  # not Linux, or no symbol table: flush_range uses fdatasync
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _libc_sync_file_range()


class Pace:
    """The process's pace and what it has rested so far (thread-safe: a staging file's
    writer thread rests on behalf of its step)."""

    def __init__(self, name: str = DEFAULT):
        self.set(name)
        self._lock = threading.Lock()
        self._throttled = 0.0
        self._owed = 0.0

    def set(self, name: str) -> None:
        if name not in PACES:
            raise ValueError(f"pace must be one of {', '.join(PACES)}, not {name!r}")
        self.name = name
        self.gentle = name == "gentle"

    @property
    def throttled_s(self) -> float:
        """Seconds rested so far, summed over the threads that rested (a step writing to
        two local destinations rests in both writer threads, side by side)."""
        return self._throttled

    def add_throttled(self, seconds: float) -> None:
        """Rests taken elsewhere on this step's behalf (its unlink workers)."""
        with self._lock:
            self._throttled += seconds

    def rest_after(self, busy_s: float) -> float:
        """Gentle: rest busy_s x REST_FACTOR after I/O that took busy_s; the seconds rested.
        A rest too short to take (under MIN_REST) is owed and taken with the next ones, so
        many quick flushes still leave the disk its share."""
        if not self.gentle:
            return 0.0
        with self._lock:
            self._owed += busy_s * REST_FACTOR
            if self._owed < MIN_REST:
                return 0.0
            rest, self._owed = self._owed, 0.0
        time.sleep(rest)
        self.add_throttled(rest)
        return rest

    def flush_range(self, fd: int, offset: int, length: int) -> None:
        """Gentle: write ``length`` bytes at ``offset`` of ``fd`` to the disk now and wait
        for them, then rest. Durability is not the point (no metadata, no cache flush):
        the point is that the dirty data never builds up."""
        if not self.gentle or length <= 0:
            return
        started = time.monotonic()
        if _sync_file_range is None or _sync_file_range(fd, offset, length, _WRITE_AND_WAIT) != 0:
            err = ctypes.get_errno() if _sync_file_range is not None else errno.ENOSYS
            if err not in _NOT_SUPPORTED:
                raise OSError(err, os.strerror(err))  # EIO, ENOSPC: the file's own failure
            os.fdatasync(fd)  # a file system without it (some FUSE ones): the same wait, coarser
        self.rest_after(time.monotonic() - started)

    def done_with(self, f) -> None:
        """Gentle: the toolkit will not read this file (a descriptor, or a file object)
        again; drop its pages from the page cache. A stream with no descriptor (an S3
        object's body) has no pages here."""
        if not self.gentle:
            return
        try:
            os.posix_fadvise(f if isinstance(f, int) else f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        except (OSError, AttributeError, ValueError):
            pass  # advice only: no descriptor, or a file system without it, keeps its pages


PACE = Pace()


class Steps:
    """What one file's writer has written and flushed: at the gentle pace, ``wrote(n)``
    flushes (flush_range) once WRITE_STEP bytes are unflushed, so the file never holds
    more dirty data than that. The one place this is counted, for every paced writer:
    a staging archive, an atomic_file, a restored file."""

    def __init__(self, fd: int):
        self.fd = fd
        self.written = self.flushed = 0

    def due(self, n: int) -> bool:
        """Count ``n`` more bytes written; whether a flush is due (gentle only)."""
        self.written += n
        return PACE.gentle and self.written - self.flushed >= WRITE_STEP

    def flush(self) -> None:
        PACE.flush_range(self.fd, self.flushed, self.written - self.flushed)
        self.flushed = self.written

    def wrote(self, n: int) -> None:
        if self.due(n):
            self.flush()


class PacedWriter:
    """A file written in order through its own buffer, flushed to the disk every
    WRITE_STEP bytes at the gentle pace (the manifests and records of 200,000 files are
    tens of MiB: written whole and fsynced at once, they would be one burst)."""

    def __init__(self, f):
        self._f = f
        self._steps = Steps(f.fileno())

    def write(self, data) -> int:
        n = self._f.write(data)
        if self._steps.due(n):
            self._f.flush()  # the buffer's bytes into the file first, then to the disk
            self._steps.flush()
        return n

    # Only what atomic_file's callers use: a write that went around write() (writelines,
    # seek) would put the offsets flushed out of step with the file.
    def flush(self) -> None:
        self._f.flush()

    def fileno(self) -> int:
        return self._f.fileno()
