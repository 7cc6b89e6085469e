"""Short writes gathered into blocks: the one place that does it.

Each write to a file, a hash, a queue or an S3 part has a fixed cost, so a stream of
short pieces (tar headers, checksum lines, compressor output) is joined into blocks of
at least ``size`` bytes first, and only those reach the receiver. The hand-over thread of
a staging file and of a background hash (ops/sys/handover.py), the gathering
HashingWriter (ops/sys/hashio.py) and an S3 upload's parts (ops/destinations/s3.py) are
all a Gatherer in front of their own receiver.
"""

from collections.abc import Callable

from ops.sys.sizes import CHUNK


class Gatherer:
    """Passes the bytes given to write() on to ``receive`` in blocks, in order.

    - Pieces are held until they reach ``size`` bytes together, then handed over joined,
      as one block; a piece of ``size`` or more while nothing is held is handed over as
      it is. So no block but the tail is shorter than ``size``, and less than ``size``
      is ever held. With ``exact``, every block but the tail is exactly ``size`` bytes
      (a piece is cut where a block ends): for receivers whose block size is a format,
      as S3 parts are.
    - flush() hands over the tail (what is held, if anything); take() gives it to the
      caller instead. An empty tail is never handed over.
    - A buffer the caller lends (bytearray, memoryview) is copied, as it may change once
      write() returns; bytes pass as they are.
    - The first error ``receive`` raises (or one given to fail()) is kept: write() and
      flush() raise it from then on and hand nothing more over, since the stream now has
      a hole. The block that failed is not held any more.
    """

    def __init__(self, receive: Callable[[bytes], object], size: int = CHUNK, exact: bool = False):
        if size < 1:
            raise ValueError("a gatherer's block size must be positive")
        self._receive = receive
        self._size = size
        self._exact = exact
        self._held: list = []
        self._held_size = 0
        self.error: BaseException | None = None

    @property
    def held(self) -> int:
        """How many bytes are held, not yet handed over."""
        return self._held_size

    def write(self, data) -> int:
        if self.error is not None:
            raise self.error
        if type(data) is not bytes:
            data = bytes(data)
        n = len(data)
        if self._held_size + n < self._size:
            self._held.append(data)
            self._held_size += n
        elif self._exact:
            self._cut(data)
        elif self._held:
            self._held.append(data)
            self._hand(self.take())
        else:
            self._hand(data)
        return n

    def _cut(self, data: bytes) -> None:
        """``data`` completes a block (exact): hand over every whole block, hold the rest."""
        view, size, pos = memoryview(data), self._size, 0
        if self._held:
            pos = size - self._held_size
            self._held.append(view[:pos])
            self._hand(self.take())
        while len(data) - pos >= size:
            self._hand(data if pos == 0 and len(data) == size else bytes(view[pos : pos + size]))
            pos += size
        if pos < len(data):
            self._held.append(bytes(view[pos:]))  # a copy: the rest of a long piece, not all of it
            self._held_size = len(data) - pos

    def _hand(self, block: bytes) -> None:
        try:
            self._receive(block)
        except BaseException as exc:
            self.fail(exc)
            raise

    def take(self) -> bytes:
        """What is held, joined, for the caller to use instead; nothing is held after."""
        data = b"".join(self._held)
        self._held, self._held_size = [], 0
        return data

    def flush(self) -> None:
        """Hand over the tail."""
        if self.error is not None:
            raise self.error
        if tail := self.take():
            self._hand(tail)

    def fail(self, exc: BaseException) -> None:
        """Keep ``exc`` as if ``receive`` had raised it, unless an error is kept already:
        for a failure found beside the receiver (a thread it feeds), which must stop it too."""
        if self.error is None:
            self.error = exc

    def raise_kept(self) -> None:
        if self.error is not None:
            raise self.error


def write_all(write: Callable[[memoryview], int], data) -> None:
    """All of ``data`` through ``write`` (a raw file's, or os.write on a descriptor), which
    may take less than it is given (a short write) and is called again for the rest."""
    view = memoryview(data)
    while view:
        view = view[write(view) :]
