"""Streams that hash the bytes passing through them: hash on the way, never a second pass."""

import hashlib
from typing import BinaryIO

from ops.sys.gather import Gatherer
from ops.sys.handover import Handover


class BackgroundSha256:
    """SHA-256 computed in a second thread, fed in blocks of at least CHUNK bytes.

    An archive is hashed twice on its way (each member's content, and the archive bytes
    for SHA256SUMS). hashlib releases the GIL on large buffers, so on two cores the second
    hash costs almost no wall time when it runs beside the first.
    """

    def __init__(self):
        self._sha = hashlib.sha256()
        self._feed = Handover(self._sha.update, name="sha256", depth=16)
        self._digest: str | None = None

    def update(self, data) -> None:
        self._feed.put(data)

    def hexdigest(self) -> str:
        if self._digest is None:
            self._feed.close()
            self._feed.raise_kept()
            self._digest = self._sha.hexdigest()
        return self._digest


class HashingWriter:
    """Hashes what it writes to ``raw``.

    With ``gather``, short writes are gathered (ops/sys/gather.py) and passed on (and
    hashed) together once they reach ``gather`` bytes: each write has a fixed cost, so
    many short lines go out as one write. flush() passes on the rest; the digest is
    refused while anything is held, so no caller can take the digest of a file that still
    lacks its tail. ``size`` counts the bytes passed on.
    """

    def __init__(self, raw, background: bool = False, gather: int = 0):
        self.raw = raw
        self.sha = BackgroundSha256() if background else hashlib.sha256()
        self.size = 0
        self._gather = Gatherer(self._pass_on, gather) if gather else None

    def write(self, data) -> int:
        if self._gather is not None:
            return self._gather.write(data)
        self.sha.update(data)  # inline, not through _pass_on: a call per write counts on small files
        self.raw.write(data)
        self.size += len(data)
        return len(data)

    def _pass_on(self, data: bytes) -> None:
        self.sha.update(data)
        self.raw.write(data)
        self.size += len(data)

    def flush(self) -> None:
        if self._gather is not None:
            self._gather.flush()
        self.raw.flush()

    @property
    def sha256(self) -> str:
        if self._gather is not None and self._gather.held:
            raise RuntimeError("HashingWriter still holds unwritten bytes: flush() first")
        return self.sha.hexdigest()


class HashingReader:
    def __init__(self, raw: BinaryIO, background: bool = False):
        self.raw = raw
        self.sha = BackgroundSha256() if background else hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data

    def readline(self) -> bytes:
        data = self.raw.readline()
        self.sha.update(data)
        self.size += len(data)
        return data

    def __iter__(self):
        return iter(self.readline, b"")

    def readable(self) -> bool:
        return True

    @property
    def sha256(self) -> str:
        return self.sha.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
