"""Functions run in forked child processes: the one place this toolkit forks.

maintenance runs each step this way (``run``): a real process (its own pid and exit
status; SIGKILL kills it alone) that skips starting an interpreter and importing the
toolkit again, about 0.2 s a step on this kind of host. A child leaves only through
os._exit, never back into its caller's code, whose handlers (the failure hook, the log
lines, the summary) would then run a second time.

Helpers (``spawn_helper``: clean's workers in ops/sys/workers.py, the decompressing
process of ops/archive/unpacker.py) are children that serve the process that forked
them: they keep SIGINT blocked, do not hold its lock (``parent_only``) and die with it.
"""

import contextlib
import ctypes
import gc
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable

from ops.errors import FAILED

# After an interrupt, how long the child gets to stop its own way before SIGKILL (which a
# step survives by design: every crash point of every step is tested).
INTERRUPT_GRACE = 5.0
_SIGINT = {signal.SIGINT}
_parent_only: list[int] = []  # descriptors a forked helper closes first (parent_only)
_PR_SET_PDEATHSIG = 1
# Looked up once, here: a helper forked while another thread is loading a library must not
# need the dynamic loader's lock, which that thread may have held at the fork.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:  # None when the process was started with that descriptor closed
            try:
                stream.flush()
            except (OSError, ValueError):
                pass


@contextlib.contextmanager
def parent_only(fd: int):
    """While inside, a helper forked by this process (``close_parent_only``) closes ``fd``
    first. For the lock: it is then free the moment its holder dies, as every test of a
    killed step expects, not only once the last helper has noticed and died too."""
    _parent_only.append(fd)
    try:
        yield
    finally:
        _parent_only.remove(fd)


def close_parent_only() -> None:
    """In a helper just forked: close what its parent holds for itself alone."""
    for fd in set(_parent_only):  # a step forked by maintenance holds maintenance's descriptor again
        os.close(fd)
    _parent_only.clear()


@contextlib.contextmanager
def sigint_blocked():
    """SIGINT held off inside; yields the signal mask as it was, for ``spawn``. Fork and
    record the child inside, so that an interrupt can never land in between: it is
    delivered as the block ends, once whoever handles it knows the child."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGINT)
    try:
        yield mask
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def spawn(main: Callable[[], int], mask: set, bare: bool = False) -> int:
    """Fork a child that runs ``main()`` and exits with its code, never returning into its
    caller's code (a child that raises exits 1 with a traceback); the child's pid.

    The caller blocks SIGINT around this call (``sigint_blocked``) and passes the mask to
    restore: the child restores it just before ``main``, the caller when it is ready for
    an interrupt.

    ``bare``: for a child forked while other threads run, which may hold any Python-level
    lock at the fork (stdio's among them) that no thread of the child will ever release.
    Such a child touches none: stdio is not flushed on either side, a child that raises
    exits 1 without a traceback, and the collector is off in it, so that no finalizer of
    the parent's objects (a file's flush, say) runs there.
    """
    if not bare:
        _flush_std()
    pid = os.fork()
    if pid == 0:
        code = FAILED
        try:
            if bare:
                gc.disable()
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                code = main()
            except KeyboardInterrupt:
                pass  # before main took charge of interrupts (it reports its own)
            except BaseException:
                if not bare:
                    traceback.print_exc()
            finally:
                if not bare:
                    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGINT)
                    _flush_std()
        finally:
            os._exit(code)
    return pid


def spawn_helper(work: Callable[[], int], mask: set, bare: bool = False) -> int:
    """``spawn`` a helper of this process, which runs ``work()``: it keeps SIGINT blocked
    (its parent decides what an interrupt means, and stops it), closes the descriptors held
    by ``parent_only`` first, and is SIGKILLed when its parent ends, however that ends.
    Call it inside ``sigint_blocked`` as ``spawn``, with that mask."""
    parent = os.getpid()

    def main() -> int:
        close_parent_only()
        die_with(parent)
        return work()

    return spawn(main, mask | _SIGINT, bare)


def die_with(parent: int) -> None:
    """In a forked helper: SIGKILL this process when ``parent`` ends, however it ends."""
    if _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # it ended before the request took effect
        os._exit(1)


def run(main: Callable[[], int]) -> int:
    """``main()`` in a forked child; its exit status as subprocess reports it (the negative
    signal number if it was killed). A child that raises exits 1 with a traceback.

    SIGINT is blocked across the fork and unblocked by each side inside its own handling,
    so an interrupt can never land in between.
    """
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGINT)
    pid = spawn(main, mask)
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        _, status = os.waitpid(pid, 0)
    except KeyboardInterrupt:
        _stop(pid)
        raise
    return os.waitstatus_to_exitcode(status)


def _stop(pid: int) -> None:
    """After an interrupt, the child must not outlive its parent (a step would still hold
    the lock). From a terminal it got the same Ctrl-C: a moment to stop on its own; else
    the interrupt is passed on; then SIGKILL."""
    for sig, grace in ((None, 0.25), (signal.SIGINT, INTERRUPT_GRACE), (signal.SIGKILL, None)):
        if sig is not None:
            os.kill(pid, sig)  # an unreaped child still exists, if only as a zombie
        if _reaped(pid, grace):
            return


def _reaped(pid: int, grace: float | None) -> bool:
    """Whether the child ended within ``grace`` seconds (None: waits for it); further
    interrupts meanwhile do not cut this short."""
    deadline = None if grace is None else time.monotonic() + grace
    while True:
        try:
            done, _ = os.waitpid(pid, 0 if deadline is None else os.WNOHANG)
            if done:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        except KeyboardInterrupt:
            continue
