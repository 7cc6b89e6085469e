"""verify's entry files are checked in a forked process beside its work (ops/maintenance/step.py):
the check's refusal is never lost, a checker that dies refuses too, and a checker whose
answer no longer matters is stopped at once, not waited for. Real forked processes."""

import os
import signal
import time
from pathlib import Path

import pytest
from e2e_support import wait_for, write_pid

from ops.errors import Refused
from ops.maintenance.step import _entry_files_checked
from ops.state.manifest import Run

RUN = "20261126T031700Z-4f2a"


def _run(tmp_path: Path, check) -> Run:
    run = Run(tmp_path, RUN)
    run.check_entry_files = check  # runs in the forked checker, which inherits the instance
    return run


def _refuse(chain, **_):
    raise Refused("scan.logs.jsonl line 7 is not a valid entry", hint="start a new run")


def test_a_refusal_from_the_checker_is_raised_with_its_message_and_hint(tmp_path):
    with _entry_files_checked(_run(tmp_path, _refuse), {}, alongside=True) as intact:
        with pytest.raises(Refused) as refused:
            intact()
    assert refused.value.message == "scan.logs.jsonl line 7 is not a valid entry"
    assert refused.value.hint == "start a new run"


def test_an_intact_chain_lets_the_step_go_on_and_asking_twice_does_not_block(tmp_path):
    marker = tmp_path / "checked-by"
    with _entry_files_checked(_run(tmp_path, lambda chain, **_: write_pid(marker)), {}, alongside=True) as intact:
        intact()
        intact()  # the answer is kept: a second call must not wait for a second answer
    assert int(marker.read_text()) != os.getpid(), "the check ran in the step's process, not beside it"


def test_a_checker_that_dies_refuses_the_step(tmp_path):
    def die(chain, **_):
        os.kill(os.getpid(), signal.SIGKILL)

    with _entry_files_checked(_run(tmp_path, die), {}, alongside=True) as intact:
        with pytest.raises(Refused) as refused:
            intact()
    assert "entry files could not be checked" in refused.value.message


def test_a_checker_whose_work_was_cut_short_is_killed_not_waited_for(tmp_path):
    marker = tmp_path / "checker.pid"

    def slow(chain, **_):
        write_pid(marker)
        time.sleep(60)

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with _entry_files_checked(_run(tmp_path, slow), {}, alongside=True):
            wait_for(marker.exists, what="the checker to start")
            raise KeyboardInterrupt  # an operator's Ctrl-C in the middle of the work
    assert time.monotonic() - started < 10, "the interrupted step waited for its checker"
    with pytest.raises(ChildProcessError):
        os.waitpid(int(marker.read_text()), os.WNOHANG)  # killed and reaped: nothing left behind


def test_without_alongside_nothing_is_forked_and_nothing_is_checked_again(tmp_path):
    def fail(chain, **_):
        raise AssertionError("checked a second time")

    with _entry_files_checked(_run(tmp_path, fail), {}, alongside=False) as intact:
        intact()
