"""The operator's ``on_failure`` command: any alerting, wired by one line of config.

It runs through the shell with the run id, failing step and exit code in its environment,
for at most ``on_failure_timeout`` (default 60s). Its own failure or hang is logged and otherwise ignored:
it can never change the run's result. When the chain failed before it could open its log
(a log directory it may not write), the hook still runs, with QTS_OPS_LOG empty.
"""

import os
import signal
import subprocess

from ops.config import Config
from ops.logs.steplog import StepLog


def on_failure(config: Config, log: StepLog | None, run_id: str, step: str, code: int) -> None:
    if not config.on_failure:
        return
    env = dict(
        os.environ,
        QTS_OPS_RUN_ID=run_id,
        QTS_OPS_STEP=step,
        QTS_OPS_EXIT_CODE=str(code),
        QTS_OPS_LOG=str(log.path) if log else "",
    )
    try:
        # Its own session: on timeout the whole group goes, not just the shell, so no
        # grandchild keeps the pipe (and us) waiting.
        proc = subprocess.Popen(
            config.on_failure,
            shell=True,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        _note(log, f"on_failure could not start: {exc}", level="warning")
        return
    try:
        output, _ = proc.communicate(timeout=config.on_failure_timeout.seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        _note(log, f"on_failure did not finish within {config.on_failure_timeout.text}; killed", level="warning")
        return
    _note(
        log,
        f"on_failure exited {proc.returncode}",
        level="info" if proc.returncode == 0 else "warning",
        exit_code=proc.returncode,
        output=output.decode(errors="replace")[-2000:],
    )


def _note(log: StepLog | None, msg: str, **fields) -> None:
    """The hook's outcome in the chain's log, if there is one that takes it: a full log
    disk must not turn the failure being reported into another."""
    if log is None:
        return
    try:
        log.event("on_failure", msg, **fields)
    except OSError:
        pass
