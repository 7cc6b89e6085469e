"""How a script's or a step's outcome is said and counted, written once.

Any OpsError becomes its own exit code and one clear paragraph on stderr, and so does any
OSError (exit 1: a read-only or full file system, a permission). An exception nothing
expected is a bug: its traceback goes to the log, the terminal gets the paragraph and
exit 1. A failure of the chain or of one of its steps is counted in the metrics here,
once, whatever raised it. The scripts' shell (ops/cli.py) and the chain's forked steps
(ops/maintenance/chain.py) both run their work through a Guard.
"""

import os
import sys
import traceback
from collections.abc import Callable

from ops.config import Config
from ops.console import Console
from ops.errors import FAILED, OpsError, StepFailed, as_failure
from ops.logs import metrics
from ops.logs.steplog import StepLog
from ops.state.manifest import STEPS

# The scripts whose outcome the metrics count: the chain and its steps (what cron runs).
COUNTED = {"maintenance", *STEPS}


class Guard:
    """Runs ``body()`` for the script ``name``; ``ui`` and ``config`` are set by the body
    as soon as it has them, so a failure is said on the right console and counted under
    the right config."""

    def __init__(self, name: str):
        self.name = name
        self.ui = Console()
        self.config: Config | None = None

    def run(self, body: Callable[[], int]) -> int:
        try:
            return body()
        except BrokenPipeError:  # `... | head` closed our stdout: not an error of ours
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except KeyboardInterrupt:
            self.ui.error(OpsError("interrupted"), self.name)
            return FAILED
        except Exception as exc:
            failure = as_failure(exc) or self._bug(exc)
        self.ui.error(failure, self.name)
        if self.config is not None and self.name in COUNTED:
            metrics.record_step(self.config, self.name, failure.code, 0.0)  # never raises: metrics never fail a run
        return failure.code

    def _bug(self, exc: Exception) -> StepFailed:
        """An exception no code of ours expected: a bug. Its traceback goes to the log (on
        the terminal only when no log can be written, so it is never lost); the terminal
        gets the one paragraph and exit 1 like any failure."""
        trace = traceback.format_exc()
        try:
            log = StepLog(self.config.log_dir, self.name)
            try:
                log.event("traceback", trace, level="error")
            finally:
                log.close()
            self.ui.log_path = log.path
        except Exception:  # no config, or no log to write to
            sys.stderr.write(trace)
        return StepFailed(
            f"unexpected error: {type(exc).__name__}: {exc}",
            hint="this is a bug in the toolkit; the traceback is in the log: please report it",
        )
