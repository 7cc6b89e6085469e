"""ops/sys/workers.py with real forked processes: answers in order, errors and deaths reported,
nothing left running after close, and no worker outliving the step that forked it."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from e2e_support import wait_for, write_pid

from ops.state.lock import hold_lock, lock_path
from ops.sys.workers import ForkedWorkers, WorkerError
from tools.sandbox import alive

REPO = Path(__file__).resolve().parents[3]


def _slow_echo(task):
    delay, value = task
    time.sleep(delay)
    return value, os.getpid()


def _write_pid_then(task):
    """Records which process took the task, then sleeps or raises as told."""
    marker, delay, fail = task
    write_pid(marker)
    time.sleep(delay)
    if fail:
        raise ValueError(f"task {marker} failed on purpose")
    Path(marker + ".done").write_text("done")
    return "done"


def test_answers_come_back_in_the_order_the_tasks_were_sent_though_later_ones_finish_first():
    with ForkedWorkers(3, _slow_echo) as workers:
        assert workers.count == 3
        got = []
        for i in range(3):  # the first task is the slowest
            workers.submit((0.3 - 0.1 * i, i))
        for i in range(3, 9):
            got.append(workers.result())
            workers.submit((0.01, i))
        got += [workers.result() for _ in range(3)]
    assert [value for value, _ in got] == list(range(9))
    pids = {pid for _, pid in got}
    assert len(pids) == 3 and os.getpid() not in pids


def test_a_task_that_raises_is_reported_with_its_message_and_its_worker_goes_on(tmp_path):
    with ForkedWorkers(1, _write_pid_then) as workers:
        workers.submit((str(tmp_path / "a"), 0, True))
        with pytest.raises(WorkerError, match="ValueError: task .*a failed on purpose"):
            workers.result()
        workers.submit((str(tmp_path / "b"), 0, False))
        assert workers.result() == "done"


def test_a_worker_killed_mid_task_is_reported_and_a_task_sent_to_it_later_too(tmp_path):
    marker = tmp_path / "task"
    with ForkedWorkers(1, _write_pid_then) as workers:
        workers.submit((str(marker), 30, False))
        wait_for(marker.exists, what="the worker to start its task")
        pid = int(marker.read_text())
        os.kill(pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(WorkerError, match=f"worker process {pid} ended without answering"):
            workers.result()
        assert time.monotonic() - started < 10
        # The send itself fails once the kernel has closed the dead worker's end of the
        # pipe, which it may not have yet when the answer pipe reports EOF; the answer then.
        with pytest.raises(WorkerError, match=f"worker process {pid} (is gone|ended without answering)"):
            workers.submit((str(tmp_path / "later"), 0, False))
            workers.result()
    assert not (tmp_path / "later").exists()


def test_close_lets_the_task_under_way_finish_and_reaps_every_worker(tmp_path, capfd):
    marker = tmp_path / "task"
    workers = ForkedWorkers(3, _write_pid_then)
    pids = workers.pids
    workers.submit((str(marker), 0.3, False))
    wait_for(marker.exists, what="the worker to start its task")
    assert int(marker.read_text()) in pids
    workers.close()  # the answer is never taken
    assert (tmp_path / "task.done").read_text() == "done", "the task under way was cut short"
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped already: no zombie left behind
        assert not alive(pid)
    assert capfd.readouterr().err == "", "a worker whose answer was not wanted complained (cron would mail it)"


def test_a_worker_ignores_an_interrupt_and_answers(tmp_path):
    marker = tmp_path / "task"
    with ForkedWorkers(1, _write_pid_then) as workers:
        workers.submit((str(marker), 0.5, False))
        wait_for(marker.exists, what="the worker to start its task")
        os.kill(int(marker.read_text()), signal.SIGINT)
        assert workers.result() == "done"


def test_no_worker_outlives_its_step_even_a_stopped_one(tmp_path):
    """The step is SIGKILLed while its workers are stopped mid-task (as SIGSTOP on the process
    group leaves them): PR_SET_PDEATHSIG kills them too, so none ever goes on deleting."""
    step = textwrap.dedent(f"""
        import os, signal, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from ops.sys.workers import ForkedWorkers
        def work(task):
            Path(task + ".tmp").write_text(str(os.getpid()))
            os.rename(task + ".tmp", task)  # whole, so the step below never reads it empty
            time.sleep(60)
        workers = ForkedWorkers(2, work)
        workers.submit({str(tmp_path / "w0")!r})
        workers.submit({str(tmp_path / "w1")!r})
        while not all(Path({str(tmp_path)!r}, n).exists() for n in ("w0", "w1")):
            time.sleep(0.01)
        for n in ("w0", "w1"):
            os.kill(int(Path({str(tmp_path)!r}, n).read_text()), signal.SIGSTOP)
        print("stopped", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", step], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "stopped"
        pids = [int((tmp_path / n).read_text()) for n in ("w0", "w1")]
        assert all(alive(pid) for pid in pids)
        proc.kill()
        proc.wait(10)
        wait_for(lambda: not any(alive(pid) for pid in pids), what="the workers to die with their step")
    finally:
        proc.kill()
        proc.wait(10)


def _report_descriptors(task):
    """What this process's descriptors lead to (the one listdir itself used is gone by then)."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:
            pass
    return targets


def test_a_worker_holds_no_descriptor_of_the_lock_so_the_lock_dies_with_the_step_alone(tmp_path):
    """A worker still inside an unlink when its step is killed must not keep the lock
    (and the next cron run out) until it returns from the call."""
    with hold_lock(tmp_path, {"step": "clean"}), ForkedWorkers(2, _report_descriptors) as workers:
        assert str(lock_path(tmp_path)) in _report_descriptors(None)
        workers.submit(None)
        workers.submit(None)
        for _ in range(2):
            assert str(lock_path(tmp_path)) not in workers.result()
