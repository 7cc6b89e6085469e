"""The real step scripts run for a trial: ``fork_run`` executes scripts/<step>.py as
``__main__`` in a child forked from this warm process (cheap faults, no interpreter
start-up), ``real_run`` starts scripts/maintenance.py as cron does, ``fork_chain`` runs the
four steps on one run as maintenance would."""

import importlib
import os
import runpy
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from ops.state.lock import LOCK_FD_ENV
from ops.state.manifest import STEPS
from ops.sys import crashpoints
from tools.chaos.inject import faultdest
from tools.sandbox import SCRIPTS, Sandbox


@dataclass
class Ran:
    code: int
    out: str


_counter = [0]


def fork_run(
    sb: Sandbox, script: str, *args: str, env: dict | None = None, timeout: float = 120, out_dir: Path | None = None
) -> Ran:
    """Run scripts/<script>.py as __main__ in a child forked from this warm process.

    The child is a real process (its own pid and process group, SIGKILL kills it, its
    exit status is the script's), with the environment a cron job would give it. Its
    output goes to a file in ``out_dir`` (default: beside the sandbox).
    """
    _counter[0] += 1
    out_path = (out_dir or sb.base.parent) / f".out-{os.getpid()}-{_counter[0]}"
    path = SCRIPTS / f"{script}.py"
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.setpgid(0, 0)
            fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
            # The parent's sys.stdout/stderr may be pytest's capture objects: ours are fd 1, 2.
            sys.stdout = sys.__stdout__ = open(1, "w", closefd=False, errors="backslashreplace")
            sys.stderr = sys.__stderr__ = open(2, "w", closefd=False, errors="backslashreplace")
            os.chdir(sb.base)
            os.environ.pop(LOCK_FD_ENV, None)  # this process's own environment only
            os.environ["QTS_OPS_PRIORITY"] = "normal"
            os.environ.update(env or {})
            importlib.reload(crashpoints)  # it reads QTS_OPS_CRASH_AT once, at import
            if os.environ.get(faultdest.ENV):
                faultdest.install()
            sys.argv = [str(path), "--config", str(sb.config_path), *args]
            if str(SCRIPTS) not in sys.path:
                sys.path.insert(0, str(SCRIPTS))
            runpy.run_path(str(path), run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    deadline = time.monotonic() + timeout
    status = None
    while status is None:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(st)
            break
        if time.monotonic() > deadline:
            with _suppress():
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            status = -999
            break
        time.sleep(0.002)
    try:
        out = out_path.read_bytes().decode(errors="replace")
        out_path.unlink()
    except FileNotFoundError:
        out = ""
    return Ran(status, out)


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], (OSError, ProcessLookupError))


def real_run(sb: Sandbox, *args: str, env: dict | None = None, timeout: float = 240) -> Ran:
    """scripts/maintenance.py as cron runs it: a new interpreter, steps as its children."""
    try:
        got = sb.run("maintenance", *args, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Ran(-999, "timed out")
    return Ran(got.returncode, got.stderr + got.stdout)


def fork_chain(sb: Sandbox, run_id: str | None, env: dict | None = None) -> tuple[str | None, Ran, str | None]:
    """scan, backup, verify, clean as separate processes on one run, stopping at the first
    failure, as maintenance does: (failed step or None, its result, run id)."""
    said = ""
    for step in STEPS:
        args = ("--run", run_id) if run_id else ()
        got = fork_run(sb, step, *args, env=env)
        said += f"\n[{step}]\n{got.out}"
        if run_id is None and sb.runs():
            run_id = sb.runs()[-1]
        if got.code != 0:
            return step, Ran(got.code, said), run_id
    return None, Ran(0, said), run_id
