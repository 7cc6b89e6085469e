"""Forked worker processes, each fed one batch at a time over a pipe and answering in order.

Clean keeps many unlinks in flight this way: here each unlink waits for the disk to discard
its blocks, and several waits overlap. Threads could not do it: every system call hands
the GIL to another thread, and on a 2-core host the hand-offs cost more than the checks
(40,000 files checked and unlinked: 5.8 s in 4 threads, 4.3 s in 16 threads, 3.4 s in 16
processes, the time of the bare unlinks). A worker is a fork of its step, so it shares the
step's state (config, log) and runs the step's own code; only tasks and answers cross the
pipes. A worker:

- is a helper (ops/sys/child.py, ``spawn_helper``), so it dies with its step
  (PR_SET_PDEATHSIG): nothing goes on deleting once the step is gone;
- does not hold the step's lock, so the lock is free the moment the step dies; a worker
  that is inside an unlink just then dies as the call returns;
- takes a task only when the step sends it one, and after ``close`` none: the batch under
  way is finished, nothing else is started;
- keeps SIGINT blocked: the step decides what an interrupt means, and closes its workers.
"""

import os
import pickle
import signal
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection

from ops.sys import child


class WorkerError(Exception):
    """A task raised in its worker, or the worker died; the message says which and why."""


class ForkedWorkers:
    """``count`` forked processes running ``work(task)``.

    The caller keeps at most ``count`` tasks outstanding and takes the results in the order
    it submitted the tasks: task k goes to worker k mod count, which answers in turn.
    """

    def __init__(self, count: int, work: Callable[[object], object]):
        self._work = work
        self._workers: list[tuple[int, Connection, Connection]] = []  # pid, tasks out, answers in
        self._submitted = self._taken = 0
        try:
            for _ in range(count):
                self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        tasks_r, tasks_w = os.pipe()
        answers_r, answers_w = os.pipe()

        def worker() -> int:
            os.close(tasks_w)
            os.close(answers_r)
            for _, tasks, answers in self._workers:  # the step's ends to the earlier workers
                tasks.close()
                answers.close()
            return _serve(Connection(tasks_r, writable=False), Connection(answers_w, readable=False), self._work)

        # SIGINT blocked across the fork (and in the worker for good): a Ctrl-C cannot cut in
        # before the worker is recorded, and so closed and reaped.
        with child.sigint_blocked() as mask:
            try:
                pid = child.spawn_helper(worker, mask)
            except OSError:
                for fd in (tasks_r, tasks_w, answers_r, answers_w):
                    os.close(fd)
                raise
            os.close(tasks_r)
            os.close(answers_w)
            self._workers.append((pid, Connection(tasks_w, readable=False), Connection(answers_r, writable=False)))

    @property
    def count(self) -> int:
        return len(self._workers)

    @property
    def pids(self) -> list[int]:
        return [pid for pid, _, _ in self._workers]

    def submit(self, task) -> None:
        pid, tasks, _ = self._workers[self._submitted % len(self._workers)]
        self._submitted += 1
        try:
            tasks.send_bytes(pickle.dumps(task, pickle.HIGHEST_PROTOCOL))
        except OSError as exc:  # EPIPE: the worker is gone (Python ignores SIGPIPE)
            raise WorkerError(f"worker process {pid} is gone: {exc.strerror}") from None

    def result(self):
        """The answer to the oldest task not yet taken; WorkerError if it raised or its worker died."""
        pid, _, answers = self._workers[self._taken % len(self._workers)]
        self._taken += 1
        try:
            ok, value = pickle.loads(answers.recv_bytes())
        except (EOFError, OSError):
            raise WorkerError(f"worker process {pid} ended without answering") from None
        if not ok:
            raise WorkerError(value)
        return value

    def kill(self) -> None:
        """Stop every worker at once (SIGKILL), for tasks whose answers no longer matter;
        ``close`` still reaps them."""
        for pid in self.pids:
            os.kill(pid, signal.SIGKILL)  # not reaped before close, so the pid is still this worker

    def close(self) -> None:
        """No more tasks: each worker finishes the task under way, if any, and exits; reaped here.

        Answers not taken are dropped: a worker never blocks on a full pipe, it sees it closed."""
        for _, tasks, answers in self._workers:
            tasks.close()
            answers.close()
        for pid, _, _ in self._workers:
            while True:
                try:
                    os.waitpid(pid, 0)
                    break
                except KeyboardInterrupt:
                    continue  # a worker still deleting is waited for, never left behind
                except ChildProcessError:
                    break
        self._workers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _serve(tasks: Connection, answers: Connection, work: Callable[[object], object]) -> int:
    while True:
        try:
            task = pickle.loads(tasks.recv_bytes())
        except (EOFError, OSError):  # the step closed its end or is gone, perhaps mid-message
            return 0
        try:
            answer = (True, work(task))
        except Exception as exc:  # sent as text: not every exception survives pickling
            answer = (False, f"{type(exc).__name__}: {exc}" if str(exc) else traceback.format_exc())
        try:
            answers.send_bytes(pickle.dumps(answer, pickle.HIGHEST_PROTOCOL))
        except BrokenPipeError:  # the step closed the pool without this answer, or is gone
            return 0
