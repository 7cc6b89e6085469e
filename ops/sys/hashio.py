"""Streams that hash the bytes passing through them: hash on the way, never a second pass."""

import hashlib
from typing import BinaryIO

from ops.sys.handover import Handover


class BackgroundSha256:
    """SHA-256 computed in a second thread, fed in 1 MiB blocks.

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

    With ``gather``, short writes are held and passed on (and hashed) together once they
    reach ``gather`` bytes: each write has a fixed cost, so many short lines go out as one
    write. flush() passes on the rest; the digest is refused while anything is held, so no
    caller can take the digest of a file that still lacks its tail. ``size`` counts the
    bytes passed on.
    """

    def __init__(self, raw, background: bool = False, gather: int = 0):
        self.raw = raw
        self.sha = BackgroundSha256() if background else hashlib.sha256()
        self.size = 0
        self._gather = gather
        self._held: list[bytes] = []
        self._held_size = 0

    def write(self, data) -> int:
        if self._gather:
            self._held.append(bytes(data))
            self._held_size += len(data)
            if self._held_size >= self._gather:
                self._pass_on()
            return len(data)
        self.sha.update(data)
        self.raw.write(data)
        self.size += len(data)
        return len(data)

    def _pass_on(self) -> None:
        data = b"".join(self._held)
        self._held, self._held_size = [], 0
        self.sha.update(data)
        self.raw.write(data)
        self.size += len(data)

    def flush(self) -> None:
        if self._held:
            self._pass_on()
        self.raw.flush()

    @property
    def sha256(self) -> str:
        if self._held_size:
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
