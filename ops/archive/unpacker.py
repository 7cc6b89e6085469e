"""Decompression of an archive stream in a forked helper process, on the other core.

python-zstandard keeps the GIL while it decompresses, so a thread cannot do it beside the
per-member work (a decompressing thread took 20 s beside a busy main thread, 1 s alone).
A forked helper can: raw bytes go to it through one pipe, fed (and hashed) by a thread
here that mostly waits in the destination's read and in the pipe write, both outside the
GIL; plain bytes come back through another pipe. On 200,000 small files this took the
1.4 s of decompression off verify's main thread.

The helper (``start_unpacker``, through ops/sys/child.py's ``spawn_helper``):

- holds nothing but its three pipe ends (every other descriptor is closed in it: no lock,
  no socket of an S3 destination, no pipe of another helper);
- touches no Python-level lock, stdio included (a bare child): it is forked while other
  threads (a progress display) may hold theirs, and leaves through ``os._exit``;
- keeps SIGINT blocked and dies with its parent (PR_SET_PDEATHSIG): the reader decides
  what an interrupt means, and stops it in ``close``.
"""

import fcntl
import gzip
import os
import signal
import threading
import zlib

import zstandard

from ops.sys import child
from ops.sys.gather import write_all
from ops.sys.sizes import CHUNK


class CorruptStream(Exception):
    """The helper's decompressor refused the stream; the message is its reason."""


class HelperDied(Exception):
    """The helper ended without a word: killed (out of memory, a stray signal) or broken."""


# What the reader reports as "archive stream is corrupt: <message>": the decompressor's
# refusal, and, as for an uncompressed archive, an error reading the stream.
DECODE_ERRORS = (CorruptStream, zstandard.ZstdError, OSError, EOFError, zlib.error)
_PIPE_SIZE = CHUNK  # a chunk per pipe read, not 16 of 64 KiB; the kernel may refuse it (then 64 KiB stays)
_ERROR_LIMIT = 4096


# ``src`` (a binary stream) read through the decompressor, by compression name.
_DECOMPRESSORS = {
    "zstd": lambda src: zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True, closefd=False),
    "gzip": lambda src: gzip.GzipFile(fileobj=src, mode="rb"),
}


class Unpacker:
    """``read(n)`` gives the decompressed stream of ``src``, decompressed in a helper process.

    Made by ``start_unpacker``; ``feed(src)`` then starts the thread that reads ``src``.
    ``read`` returns b"" at the end of the stream, or raises what went wrong on either
    side: the feeding thread's own exception (a destination that failed), else the
    helper's refusal of the stream (CorruptStream) or its death (HelperDied). ``close``
    stops everything; call it in every case.
    """

    def __init__(self, pid: int, raw_w: int, out_r: int, err_r: int):
        """The helper ``pid`` and this side's pipe ends: raw bytes in, plain bytes and the
        helper's error out, as ``start_unpacker`` made them."""
        self._pid = pid
        self._raw_w = raw_w
        self._out_r = out_r
        self._err_r = err_r
        self._status: int | None = None
        self._feeder: threading.Thread | None = None
        self._fed_error: BaseException | None = None

    def feed(self, src) -> None:
        self._feeder = threading.Thread(target=self._feed, args=(src,), name="archive-feeder", daemon=True)
        self._feeder.start()

    def _feed(self, src) -> None:
        try:
            while data := src.read(CHUNK):
                try:
                    write_all(self._write_raw, data)
                except BrokenPipeError:
                    return  # the helper stopped first: it, or close(), says why
        except BaseException as exc:  # handed to the reading thread, which raises it
            self._fed_error = exc
        finally:
            os.close(self._raw_w)
            self._raw_w = -1

    def _write_raw(self, data) -> int:
        return os.write(self._raw_w, data)

    def read(self, n: int) -> bytes:
        data = os.read(self._out_r, n)
        if not data:
            self._ended()
        return data

    def _ended(self) -> None:
        """At the end of the plain stream: raise whatever cut it short."""
        self._feeder.join()
        if self._fed_error is not None:
            raise self._fed_error
        status = self._reap(block=True)
        if status == 0:
            return
        message = os.read(self._err_r, _ERROR_LIMIT).decode("utf-8", "replace")
        if status == 1 and message:
            raise CorruptStream(message)
        ended = f"was killed by signal {-status}" if status < 0 else f"ended with status {status}"
        raise HelperDied(f"the decompressing process {ended}")

    def _reap(self, block: bool) -> int | None:
        if self._status is None:
            done, status = os.waitpid(self._pid, 0 if block else os.WNOHANG)
            if done:
                self._status = os.waitstatus_to_exitcode(status)
        return self._status

    def close(self) -> None:
        """Stop the helper (if still running) and the feeding thread; release every pipe."""
        if self._out_r < 0:
            return
        if self._reap(block=False) is None:
            os.kill(self._pid, signal.SIGKILL)
            self._reap(block=True)
        # The helper is gone, so a write of the feeder fails at once (EPIPE) and it ends;
        # a read from the destination under way is waited for.
        if self._feeder is not None:
            self._feeder.join()
        elif self._raw_w >= 0:
            os.close(self._raw_w)
        os.close(self._out_r)
        os.close(self._err_r)
        self._out_r = -1


def start_unpacker(compression: str) -> Unpacker:
    """An Unpacker of a ``compression`` stream: its helper forked, wired to it by three pipes.

    Call it before starting threads of one's own (its fork copies only the calling thread).
    """
    if compression not in _DECOMPRESSORS:  # before anything is forked
        raise ValueError(f"no decompressor for {compression!r}")
    raw_r, raw_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    for fd in (raw_r, out_w):
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        except OSError:
            pass

    def helper() -> int:
        _keep_only((raw_r, out_w, err_w))
        return _decompress(compression, raw_r, out_w, err_w)

    unpacker = None
    try:
        with child.sigint_blocked() as mask:
            try:
                pid = child.spawn_helper(helper, mask, bare=True)
            finally:
                for fd in (raw_r, out_w, err_w):  # the helper's ends
                    os.close(fd)
            # Recorded before an interrupt may land, so close() will stop the helper.
            unpacker = Unpacker(pid, raw_w, out_r, err_r)
    except BaseException:
        if unpacker is not None:
            unpacker.close()  # an interrupt delivered as the block ended
        else:
            for fd in (raw_w, out_r, err_r):
                os.close(fd)
        raise
    return unpacker


def _keep_only(keep: tuple[int, ...]) -> None:
    """Close every descriptor above stderr but ``keep``."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _decompress(compression: str, raw_r: int, out_w: int, err_w: int) -> int:
    """The helper's work: exit status 0 at the end of a sound stream, else 1 with the
    decompressor's message on ``err_w``."""
    try:
        with os.fdopen(raw_r, "rb", buffering=CHUNK) as src:
            stream = _DECOMPRESSORS[compression](src)
            while block := stream.read(CHUNK):
                write_all(lambda view: os.write(out_w, view), block)
        return 0
    except BrokenPipeError:
        return 1  # the reader closed its end: it stopped reading, and needs no reason
    except DECODE_ERRORS as exc:
        os.write(err_w, str(exc).encode("utf-8", "replace")[:_ERROR_LIMIT])
        return 1
