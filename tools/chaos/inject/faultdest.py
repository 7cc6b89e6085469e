"""The fault-injecting destination: the real LocalDestination / LocalStaging, subclassed.

Why a subclass and not a failing disk: EIO from a real block device needs device-mapper
(dm-error, dm-flakey), and this kernel has none (``dmsetup version``: /dev/mapper/control
missing). So the faults are injected at the one seam the toolkit owns, the destination:
the faulted call raises exactly the OSError a failing disk would, everything around it is
the real code.

Active only in chaos runs: ``sitecustomize.py`` beside this file (on PYTHONPATH for the
chain's processes) or the campaign's forked runner calls ``install()`` when
QTS_CHAOS_FAULT is set. ``install`` replaces ``open_destination`` so that the one local
destination named in the spec is a ``FaultyLocalDestination``; every other destination,
and every byte that is not faulted, goes through the unchanged code of ops/destinations/
local.py. Nothing here is imported by ops itself.

Spec: ``<fault>;dest=<name>[;n=<int>][;after=<bytes>][;chunk=<bytes>][;match=<suffix>]``
  read-eio     reads of a published file (whose name ends with ``match``) fail with EIO
               once ``after`` bytes of it were read
  fsync-eio    the n-th os.fsync made while publishing (file or directory) fails with EIO
  short-write  every write reaching the file descriptor is cut to ``chunk`` bytes (the
               kernel may do so: a short write), the staging file above must finish it
  write-eio    short writes as above, then EIO once ``after`` bytes reached the file
"""

import errno
import io
import os
from pathlib import Path

from ops.destinations import local
from ops.destinations.local import LocalDestination, LocalStaging
from ops.sys.sizes import CHUNK

ENV = "QTS_CHAOS_FAULT"
MECHANISM = "LocalDestination/LocalStaging subclass (tools/chaos/inject/faultdest.py)"
# The directory to put on a chain's PYTHONPATH: its sitecustomize.py installs the fault.
INJECT = Path(__file__).resolve().parent


def parse(spec: str) -> dict:
    kind, *fields = spec.split(";")
    out = {"kind": kind, "n": 1, "after": 0, "chunk": 512, "dest": "local", "match": ""}
    for f in fields:
        key, _, value = f.partition("=")
        out[key] = value if key in ("dest", "match") else int(value)
    return out


def _eio(what: str) -> OSError:
    return OSError(errno.EIO, f"Input/output error (chaos: injected {what})")


class _Wrapped(io.RawIOBase):
    """A raw file around a real one: the descriptor and close pass through."""

    def fileno(self) -> int:
        return self.raw.fileno()

    def close(self) -> None:
        self.raw.close()
        super().close()


class _FaultyRawWriter(_Wrapped):
    """A file descriptor whose writes are short (and may fail with EIO)."""

    def __init__(self, raw, chunk: int, fail_after: int | None):
        self.raw = raw
        self.chunk = max(1, chunk)
        self.fail_after = fail_after
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if self.fail_after is not None and self.written >= self.fail_after:
            raise _eio("on write")
        n = self.raw.write(bytes(memoryview(data)[: self.chunk]))
        self.written += n
        return n


class _FaultyRawReader(_Wrapped):
    """A published file whose reads fail with EIO past ``after`` bytes."""

    def __init__(self, raw, after: int):
        self.raw = raw
        self.after = after
        self.done = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self.done >= self.after:
            raise _eio("on read")
        view = memoryview(buf)[: max(1, self.after - self.done)]
        n = self.raw.readinto(view)
        self.done += n
        return n


class FaultyLocalStaging(LocalStaging):
    def __init__(self, final, staging, fault: dict):
        super().__init__(final, staging)
        self.fault = fault

    def _open(self, fd: int):
        # Beneath the real staging file (and its early writeback): only the descriptor's
        # writes are short or fail.
        f = super()._open(fd)
        if self.fault["kind"] not in ("short-write", "write-eio"):
            return f
        fail_after = self.fault["after"] if self.fault["kind"] == "write-eio" else None
        return _FaultyRawWriter(f, self.fault["chunk"], fail_after)

    def publish(self) -> None:
        if self.fault["kind"] != "fsync-eio":
            return super().publish()
        # The real publish runs; only the n-th fsync it makes (files, staging directory,
        # the parent after the rename) reports EIO, as a failing disk would.
        real, calls = os.fsync, [0]

        def fsync(fd):
            calls[0] += 1
            if calls[0] == self.fault["n"]:
                raise _eio(f"at fsync #{calls[0]}")
            return real(fd)

        local.os.fsync = fsync
        try:
            super().publish()
        finally:
            local.os.fsync = real


class FaultyLocalDestination(LocalDestination):
    def __init__(self, name, path, fault: dict):
        super().__init__(name, path)
        self.fault = fault

    def _staging(self, final, staging) -> LocalStaging:
        return FaultyLocalStaging(final, staging, self.fault)

    def open_read(self, run_id: str, name: str):
        f = super().open_read(run_id, name)
        if self.fault["kind"] != "read-eio" or not name.endswith(self.fault["match"]):
            return f
        return io.BufferedReader(_FaultyRawReader(f.detach(), self.fault["after"]), CHUNK)


def install(spec: str | None = None) -> dict | None:
    """Make ``open_destination`` hand out the faulty destination for the spec's name."""
    spec = spec if spec is not None else os.environ.get(ENV)
    if not spec:
        return None
    import sys

    import ops.destinations as dests

    fault = parse(spec)
    real = dests.open_destination
    if getattr(real, "chaos_fault", None):
        return fault

    def open_destination(cfg):
        if cfg.type == "local" and cfg.name == fault["dest"]:
            return FaultyLocalDestination(cfg.name, cfg.path, fault)
        return real(cfg)

    open_destination.chaos_fault = fault
    # Modules that did ``from ops.destinations import open_destination`` before us.
    for module in list(sys.modules.values()):
        if module is not None and getattr(module, "open_destination", None) is real:
            module.open_destination = open_destination
    return fault
