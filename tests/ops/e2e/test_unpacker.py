"""Archives decompressed in a forked helper process (ops/archive/unpacker.py), with real
processes and pipes: members and digests as read in-process, every fault reported as
what it is, and no helper, thread or descriptor left behind however reading ends."""

import hashlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from e2e_support import wait_for

from ops.archive import ArchiveError, ArchiveReader, ArchiveWriter
from ops.archive.unpacker import HelperDied
from ops.destinations import DestinationError
from tools.sandbox import alive, children_of

REPO = Path(__file__).resolve().parents[3]
FILES = {b"a.log": b"alpha\n" * 1000, b"sub/b.csv": os.urandom(3 << 20), b"empty": b""}


def _archive(compression: str, files=FILES) -> bytes:
    out = io.BytesIO()
    writer = ArchiveWriter(out, compression)
    for name, data in files.items():
        writer.add(name, len(data), 1_700_000_000, 0o600, 0, 0, [data])
    writer.close()
    return out.getvalue()


def _read_all(reader: ArchiveReader) -> dict[bytes, str]:
    got = {}
    for member in reader.members():
        for _ in reader.chunks(member):
            pass
        got[member.name] = member.sha256
    return got


def _gone(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True  # reaped already
    return False


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_members_and_the_archive_digest_come_back_exactly(compression):
    data = _archive(compression)
    before = _fds()
    with ArchiveReader(io.BytesIO(data), compression) as reader:
        helper = reader._unpacker._pid
        assert _read_all(reader) == {n: hashlib.sha256(d).hexdigest() for n, d in FILES.items()}
        assert reader.finish() == (hashlib.sha256(data).hexdigest(), len(data))
    assert _gone(helper)
    assert _fds() == before, "a pipe end was left open"


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_a_corrupt_stream_is_reported_with_the_decompressors_reason(compression):
    data = bytearray(_archive(compression, {b"a.log": b"alpha\n" * 200_000}))
    data[len(data) // 2] ^= 0xFF
    with ArchiveReader(io.BytesIO(bytes(data)), compression) as reader:
        with pytest.raises(ArchiveError, match="archive stream is corrupt: ."):
            _read_all(reader)
            reader.finish()


def test_a_truncated_stream_is_an_archive_error():
    data = _archive("zstd")
    with ArchiveReader(io.BytesIO(data[:-9]), "zstd") as reader:
        with pytest.raises(ArchiveError):
            _read_all(reader)
            reader.finish()


class _FailingSource(io.RawIOBase):
    """A destination whose stream breaks after ``good`` bytes, as a dropped S3 connection."""

    def __init__(self, data: bytes, good: int):
        self._data, self._good, self._pos = data, good, 0

    def readable(self):
        return True

    def read(self, n=-1):
        if self._pos >= self._good:
            raise DestinationError("connection reset by the bucket")
        chunk = self._data[self._pos : min(self._good, self._pos + (n if n > 0 else len(self._data)))]
        self._pos += len(chunk)
        return chunk


def test_a_destination_that_fails_mid_stream_is_reported_as_itself_not_as_corruption():
    data = _archive("zstd")
    with ArchiveReader(_FailingSource(data, len(data) // 3), "zstd") as reader:
        with pytest.raises(DestinationError, match="connection reset"):
            _read_all(reader)
            reader.finish()


def test_a_helper_killed_mid_stream_is_reported_as_that_not_as_a_corrupt_archive():
    """An out-of-memory kill says nothing about the archive: verify must not call the copy damaged."""
    data = _archive("zstd", {f"f{i:03}".encode(): os.urandom(1 << 20) for i in range(40)})
    with ArchiveReader(io.BytesIO(data), "zstd") as reader:
        members = reader.members()
        next(members)
        os.kill(reader._unpacker._pid, signal.SIGKILL)
        with pytest.raises(HelperDied, match="was killed by signal 9"):
            for member in members:
                for _ in reader.chunks(member):
                    pass


def test_an_unknown_compression_is_refused_before_anything_is_forked():
    fds, children = _fds(), children_of(os.getpid())
    with pytest.raises(ValueError, match="no decompressor for 'lz4'"):
        ArchiveReader(io.BytesIO(b""), "lz4")
    assert _fds() == fds
    assert children_of(os.getpid()) == children


def test_closing_early_stops_the_helper_and_the_feeding_thread_at_once():
    data = _archive("zstd", {f"f{i:03}".encode(): os.urandom(1 << 20) for i in range(40)})
    threads, fds = threading.active_count(), _fds()
    started = time.monotonic()
    with ArchiveReader(io.BytesIO(data), "zstd") as reader:
        helper = reader._unpacker._pid
        member = next(reader.members())  # one member of forty, then a mismatch, say
        assert member.name == b"f000"
    assert time.monotonic() - started < 10
    assert _gone(helper)
    assert threading.active_count() == threads, "the feeding thread outlived the reader"
    assert _fds() == fds


def _descriptors(pid: int) -> dict[int, str]:
    held = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            held[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            pass  # closed between the listing and the look
    return held


def test_the_helper_holds_only_its_own_pipes():
    """Not the lock, not a destination's socket, not another helper's pipe: nothing it
    could keep alive after its step is gone."""
    stalled_r, stalled_w = os.pipe()  # a source that does not end until we say so: the helper stays up
    unrelated = os.open(os.devnull, os.O_RDONLY)
    try:
        with os.fdopen(stalled_r, "rb", buffering=0) as source, ArchiveReader(source, "zstd") as reader:
            try:
                helper = reader._unpacker._pid
                deadline = time.monotonic() + 5
                while True:  # the helper closes what it inherited just after the fork
                    held = _descriptors(helper)
                    beyond_stdio = sorted(target for fd, target in held.items() if fd > 2)
                    if len(beyond_stdio) == 3 or time.monotonic() > deadline:
                        break
                    time.sleep(0.01)
                assert len(beyond_stdio) == 3 and all(t.startswith("pipe:") for t in beyond_stdio), held
                own = {os.readlink(f"/proc/self/fd/{fd}") for fd in (stalled_r, stalled_w)}
                assert not set(beyond_stdio) & own, "the helper holds the source's own pipe"
            finally:
                os.close(stalled_w)  # else leaving the reader waits for a read that never ends
            with pytest.raises(ArchiveError):
                _read_all(reader)  # an empty source: not an archive
    finally:
        os.close(unrelated)


def test_the_helper_dies_with_the_process_that_forked_it_even_when_its_pipes_stay_open(tmp_path):
    """The step is SIGKILLed while a process it forked later still holds the helper's input
    pipe open, so the helper never sees the end of its input: only PR_SET_PDEATHSIG ends it."""
    pids = tmp_path / "pids"
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from ops.archive import ArchiveReader
        r, w = os.pipe()  # a source that never ends
        reader = ArchiveReader(os.fdopen(r, "rb", buffering=0), "zstd")
        sibling = os.fork()
        if sibling == 0:  # inherits every pipe end of the reader, and keeps them open
            time.sleep(60)
            os._exit(0)
        with open({str(pids)!r} + ".tmp", "w") as out:
            out.write(f"{{reader._unpacker._pid}} {{sibling}}")
        os.rename({str(pids)!r} + ".tmp", {str(pids)!r})  # whole, so the test never reads half
        time.sleep(60)
    """)
    step = subprocess.Popen([sys.executable, "-c", script])
    sibling = None
    try:

        def started() -> bool:
            assert step.poll() is None, "the step ended before its helper started"
            return pids.exists()

        wait_for(started, timeout=20, what="the helper to start")
        helper, sibling = map(int, pids.read_text().split())
        assert alive(helper)
        step.kill()
        step.wait()
        wait_for(lambda: not alive(helper), what="the helper to die with its step")
        assert alive(sibling), "the sibling holding the pipes died first: the test proved nothing"
    finally:
        step.kill()
        step.wait()
        if sibling is not None and alive(sibling):
            os.kill(sibling, 9)


def test_the_helper_is_forked_and_works_while_another_thread_holds_the_stdio_locks():
    """A progress display may be inside a write to the terminal (its stream's lock held)
    when the helper is forked: neither side may touch stdio then. Were either to flush it,
    the parent would wait for that write, and the child for a lock no thread of its own
    will ever release. The writer here blocks on a pipe nobody reads."""
    script = textwrap.dedent(f"""
        import io, os, sys, threading, time
        sys.path.insert(0, {str(REPO)!r})
        from ops.archive import ArchiveReader, ArchiveWriter
        out = io.BytesIO()
        writer = ArchiveWriter(out, "zstd")
        writer.add(b"a.log", 6000, 1_700_000_000, 0o600, 0, 0, [b"alpha\\n" * 1000])
        writer.close()
        real = os.dup(1)
        r, w = os.pipe()  # never read: a write of more than it holds blocks, its lock held
        sys.stdout = sys.stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(w, "wb"), 4096))
        threading.Thread(target=lambda: sys.stdout.buffer.write(b"x" * (1 << 20)), daemon=True).start()
        time.sleep(0.3)
        with ArchiveReader(io.BytesIO(out.getvalue()), "zstd") as reader:
            names = [m.name for m in reader.members()]
            reader.finish()
        os.write(real, repr(names).encode())
        os._exit(0)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"[b'a.log']"
