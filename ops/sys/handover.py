"""Bytes handed to a thread of their own, in order, a block at a time."""

import queue
import threading
from collections.abc import Callable

from ops.sys.gather import Gatherer
from ops.sys.sizes import CHUNK


class Handover:
    """Feeds ``consume`` with the bytes given to put(), in order, from a thread of its own.

    hashlib and file writes release the GIL on large buffers, so the consumer's work runs
    beside the caller's on a second core. Short pieces are gathered (ops/sys/gather.py)
    and handed over joined once they reach ``block`` bytes: a piece of a few bytes costs
    an append, not a trip to the other thread. At most ``depth`` blocks wait, so memory
    stays bounded. A buffer the caller lends is copied (bytes are immutable and pass as
    they are). The first error ``consume`` raises is kept and raised by the next put() or
    by raise_kept(); the thread then only takes what waits, so put() never blocks on a
    consumer that gave up.
    """

    def __init__(self, consume: Callable[[bytes], object], name: str, depth: int, block: int = CHUNK):
        self._consume = consume
        self._closed = False
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        # The gatherer keeps the consumer's error too: it is the one put() raises.
        self._gather = Gatherer(self._queue.put, block)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def error(self) -> BaseException | None:
        return self._gather.error

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            try:
                if self._gather.error is None:
                    self._consume(data)
            except BaseException as exc:
                self._gather.fail(exc)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def raise_kept(self) -> None:
        self._gather.raise_kept()

    def fail(self, exc: BaseException) -> None:
        """Keep ``exc`` as if the consumer had raised it (unless an error is kept already):
        for a failure found beside the consumer, which must stop it too."""
        self._gather.fail(exc)

    def put(self, data) -> int:
        if self._closed:
            raise ValueError("handover used after close")
        return self._gather.write(data)

    def _hand_over(self) -> None:
        """What is held, to the thread, even after an error (which it then drops)."""
        if tail := self._gather.take():
            self._queue.put(tail)

    def drain(self) -> None:
        """Hand over what is held and wait until every block was consumed."""
        if self._closed:
            raise ValueError("handover used after close")
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
