"""The local destination starts writing big staging files back to disk early (a second
thread fdatasyncs every FLUSH_EVERY bytes). That must never hide an I/O error from
publish: the kernel reports a writeback error to one fsync per open file only, so the
early sync keeps what it saw and the next write or flush raises it.

An fdatasync that fails with EIO cannot be produced for real here (it needs a failing
block device), so the one call is replaced; everything else is a real file on disk."""

import errno
import os

import pytest

from ops.destinations import local
from ops.destinations.local import LocalDestination


def _staging(tmp_path, monkeypatch, every: int):
    monkeypatch.setattr(local._EarlyWriteback, "FLUSH_EVERY", every)
    return LocalDestination("local", tmp_path / "backups").begin_run("20261126T000000Z-abcd")


def test_an_early_writeback_error_fails_the_publish_and_publishes_nothing(tmp_path, monkeypatch):
    staging = _staging(tmp_path, monkeypatch, every=4096)
    failed = []

    def eio(fd):
        failed.append(fd)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(local.os, "fdatasync", eio)
    f = staging.create("logs.tar.zst")
    f.write(b"x" * 5000)  # past FLUSH_EVERY: the early sync runs, and fails
    f._settle()
    assert failed, "the early writeback never ran"
    with pytest.raises(OSError) as raised:
        staging.publish()
    assert raised.value.errno == errno.EIO
    staging.abort()
    assert not (tmp_path / "backups" / "20261126T000000Z-abcd").exists()


def test_early_writeback_keeps_every_byte_in_order(tmp_path, monkeypatch):
    staging = _staging(tmp_path, monkeypatch, every=1000)
    f = staging.create("a.tar")
    chunks = [os.urandom(n) for n in (10, 999, 1, 4096, 3, 2000, 0, 77)]
    for chunk in chunks:
        f.write(chunk)
    staging.publish()
    assert (tmp_path / "backups" / "20261126T000000Z-abcd" / "a.tar").read_bytes() == b"".join(chunks)
