"""The local destination's staging file is written by a thread of its own, which also
starts writeback early (at the full pace a further thread fdatasyncs every FLUSH_EVERY
bytes; at the gentle pace the writer flushes every WRITE_STEP bytes itself). Neither may
hide an I/O error from publish, lose or reorder a byte, or keep a byte a caller lent and
then changed: the kernel reports a writeback error to one fsync per open file only, and
a write's error happens after write() returned, so the file keeps what it saw and the
next write or flush raises it.

An fdatasync or sync_file_range that fails with EIO cannot be produced for real here (it
needs a failing block device), so that one call is replaced, as is the file's write for short writes;
the disk-full case is a real tmpfs, and everything else is a real file on disk."""

import ctypes
import errno
import io
import os
import threading
import time

import pytest
from e2e_support import tmpfs

from ops.destinations import local
from ops.destinations.local import LocalDestination
from ops.sys import pace
from ops.sys.pace import PACE


def _staging(tmp_path, monkeypatch, every: int, gather: int | None = None, pace: str = "full"):
    monkeypatch.setattr(PACE, "gentle", pace == "gentle")
    monkeypatch.setattr(local._StagingFile, "FLUSH_EVERY", every)
    if gather is not None:
        monkeypatch.setattr(local._StagingFile, "GATHER", gather)
    return LocalDestination("local", tmp_path / "backups").begin_run("20261126T000000Z-abcd")


def test_an_early_writeback_error_fails_the_publish_and_publishes_nothing(tmp_path, monkeypatch):
    staging = _staging(tmp_path, monkeypatch, every=4096)
    failed = []

    def eio(fd):
        failed.append(fd)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(local.os, "fdatasync", eio)
    f = staging.create("logs.tar.zst")
    f.write(b"x" * local._StagingFile.GATHER)  # handed over at once, past FLUSH_EVERY: the early sync runs, and fails
    f._feed.drain()
    f._settle()
    assert failed, "the early writeback never ran"
    with pytest.raises(OSError) as raised:
        f.write(b"more")  # the next write already says so
    assert raised.value.errno == errno.EIO
    with pytest.raises(OSError) as raised:
        staging.publish()
    assert raised.value.errno == errno.EIO
    staging.abort()
    assert not (tmp_path / "backups" / "20261126T000000Z-abcd").exists()


def test_a_paced_flush_error_fails_the_publish_and_publishes_nothing(tmp_path, monkeypatch):
    staging = _staging(tmp_path, monkeypatch, every=1 << 30, pace="gentle")
    failed = []

    def eio(fd, offset, length, flags):
        failed.append((offset, length))
        ctypes.set_errno(errno.EIO)
        return -1

    monkeypatch.setattr(pace, "_sync_file_range", eio)
    f = staging.create("logs.tar.zst")
    f.write(b"x" * max(local._StagingFile.GATHER, pace.WRITE_STEP))  # a whole step: flushed, and the flush fails
    f._feed.drain()
    assert failed == [(0, max(local._StagingFile.GATHER, pace.WRITE_STEP))]
    with pytest.raises(OSError) as raised:
        staging.publish()
    assert raised.value.errno == errno.EIO
    staging.abort()
    assert not (tmp_path / "backups" / "20261126T000000Z-abcd").exists()


@pytest.mark.parametrize("pace_name", ["full", "gentle"])
def test_early_writeback_keeps_every_byte_in_order(tmp_path, monkeypatch, pace_name):
    # Writes gathered, handed over whole, and both mixed (a long write while short ones are held).
    monkeypatch.setattr(pace, "WRITE_STEP", 1000)
    staging = _staging(tmp_path, monkeypatch, every=1000, gather=1024, pace=pace_name)
    f = staging.create("a.tar")
    chunks = [os.urandom(n) for n in (10, 999, 1, 4096, 3, 2000, 0, 77, 5000, 1024, 1, 1023, 3000)]
    for chunk in chunks:
        f.write(chunk)
    staging.publish()
    assert (tmp_path / "backups" / "20261126T000000Z-abcd" / "a.tar").read_bytes() == b"".join(chunks)


def test_a_lent_buffer_changed_after_write_is_written_as_it_was_lent(tmp_path, monkeypatch):
    staging = _staging(tmp_path, monkeypatch, every=1 << 20)
    f = staging.create("a.tar")
    buf, parts = bytearray(4096), []
    for i in range(64):  # more writes than the queue holds, each lending the same buffer
        buf[:] = bytes([i]) * len(buf)
        parts.append(bytes(buf))
        f.write(buf)
        f.write(memoryview(buf)[:100])
        parts.append(bytes(buf[:100]))
    buf[:] = b"\xff" * len(buf)
    staging.publish()
    assert (tmp_path / "backups" / "20261126T000000Z-abcd" / "a.tar").read_bytes() == b"".join(parts)


class _FirstWriteHeld(io.RawIOBase):
    """The real file, whose first write waits for ``release``: the test queues writes
    behind it first, so the write that fails has others waiting after it."""

    def __init__(self, raw: io.FileIO, release: threading.Event):
        self.raw, self.release = raw, release

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.release.wait(30)
        return self.raw.write(b)

    def fileno(self) -> int:
        return self.raw.fileno()

    def close(self) -> None:
        self.raw.close()
        super().close()


class _ShortWrites(io.RawIOBase):
    """The real file, taking at most ``most`` bytes a write, as the kernel may."""

    def __init__(self, raw: io.FileIO, most: int):
        self.raw, self.most, self.calls = raw, most, 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.calls += 1
        return self.raw.write(memoryview(b)[: self.most])

    def fileno(self) -> int:
        return self.raw.fileno()

    def close(self) -> None:
        self.raw.close()
        super().close()


def test_short_writes_are_finished_every_byte_in_order(tmp_path, monkeypatch):
    opened = []

    def short_file(self, fd: int) -> _ShortWrites:
        opened.append(_ShortWrites(io.FileIO(fd, "wb"), 4000))
        return opened[-1]

    monkeypatch.setattr(local.LocalStaging, "_open", short_file)
    staging = _staging(tmp_path, monkeypatch, every=1 << 20, gather=10_000)
    f = staging.create("a.tar")
    chunks = [os.urandom(n) for n in (1, 9999, 3, 25_000, 4000, 4001, 7)]
    for chunk in chunks:
        f.write(chunk)
    staging.publish()
    assert (tmp_path / "backups" / "20261126T000000Z-abcd" / "a.tar").read_bytes() == b"".join(chunks)
    assert opened[0].calls > len(chunks), "no write was short: the test proved nothing"


def test_a_full_disk_is_raised_by_a_later_write_or_the_flush_never_blocks_and_publishes_nothing(tmp_path, monkeypatch):
    mnt = tmp_path / "small"
    mnt.mkdir()
    release = threading.Event()
    monkeypatch.setattr(
        local.LocalStaging,
        "_open",
        lambda self, fd: _FirstWriteHeld(io.FileIO(fd, "wb"), release),
    )
    with tmpfs(mnt, "256k"):
        staging = _staging(mnt, monkeypatch, every=64 << 20)
        f = staging.create("big.tar")
        block, raised = os.urandom(1 << 20), []

        def fill():
            try:
                for _ in range(64):  # 64 MiB into 256 KiB
                    f.write(block)
                f.flush()
            except OSError as exc:
                raised.append(exc)

        writer = threading.Thread(target=fill, daemon=True)
        writer.start()
        deadline = time.monotonic() + 10
        while not f._feed._queue.full() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert f._feed._queue.full(), "the writes were not queued behind the first"
        release.set()  # the first write now fills the disk, with a full queue behind it
        writer.join(timeout=20)
        assert not writer.is_alive(), "a write or the flush blocked after the disk was full"
        assert raised and raised[0].errno == errno.ENOSPC, raised
        with pytest.raises(OSError) as again:
            staging.publish()
        assert again.value.errno == errno.ENOSPC
        staging.abort()
        assert os.listdir(mnt / "backups") == []


def test_a_write_after_close_is_refused_not_queued_for_no_one(tmp_path, monkeypatch):
    staging = _staging(tmp_path, monkeypatch, every=1 << 20)
    f = staging.create("a.tar")
    f.write(b"kept")
    f.close()
    for data in (b"x", b"y" * (2 << 20)):
        with pytest.raises(ValueError):
            f.write(data)
    with pytest.raises(ValueError):
        f.flush()
    f.close()  # twice: still no error, nothing blocks
    assert (staging.dir / "a.tar").read_bytes() == b"kept"
    staging.abort()
