"""Bytes handed to a thread of their own, in order, a block at a time."""

import queue
import threading
from collections.abc import Callable

BLOCK = 1 << 20


class Handover:
    """Feeds ``consume`` with the bytes given to put(), in order, from a thread of its own.

    hashlib and file writes release the GIL on large buffers, so the consumer's work runs
    beside the caller's on a second core. Short pieces are gathered and handed over joined
    once they reach ``block`` bytes: a piece of a few bytes costs an append, not a trip to
    the other thread. At most ``depth`` blocks wait, so memory stays bounded. A buffer the
    caller lends is copied (bytes are immutable and pass as they are). The first error
    ``consume`` raises is kept and raised by the next put() or by raise_kept(); the thread
    then only takes what waits, so put() never blocks on a consumer that gave up.
    """

    def __init__(self, consume: Callable[[bytes], object], name: str, depth: int, block: int = BLOCK):
        self._consume = consume
        self._block = block
        self.error: BaseException | None = None
        self._closed = False
        self._held: list[bytes] = []
        self._held_size = 0
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            try:
                if self.error is None:
                    self._consume(data)
            except BaseException as exc:
                self.error = exc
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def raise_kept(self) -> None:
        if self.error is not None:
            raise self.error

    def fail(self, exc: BaseException) -> None:
        """Keep ``exc`` as if the consumer had raised it (unless an error is kept already):
        for a failure found beside the consumer, which must stop it too."""
        if self.error is None:
            self.error = exc

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("handover used after close")

    def put(self, data) -> int:
        self._check_open()
        self.raise_kept()
        data = data if type(data) is bytes else bytes(data)
        if len(data) >= self._block and not self._held:
            self._queue.put(data)
        else:
            self._held.append(data)
            self._held_size += len(data)
            if self._held_size >= self._block:
                self._hand_over()
        return len(data)

    def _hand_over(self) -> None:
        if self._held:
            self._queue.put(b"".join(self._held))
            self._held, self._held_size = [], 0

    def drain(self) -> None:
        """Hand over what is held and wait until every block was consumed."""
        self._check_open()
        self._hand_over()
        self._queue.join()

    def close(self) -> None:
        """Drain and end the thread (again: nothing more to do). The kept error is not
        raised here: a caller that needs it calls raise_kept()."""
        if not self._closed:
            self._closed = True
            self._hand_over()
            self._queue.put(None)
            self._thread.join()
