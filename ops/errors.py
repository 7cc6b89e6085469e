"""The exit-code table, written once, and the exceptions that carry it.

Every script maps an escaping OpsError to its ``code``; nothing else decides an exit code.
"""

OK = 0
FAILED = 1  # the step failed; nothing unverified was deleted
REFUSED = 2  # the predecessor's success manifest is missing, invalid or tampered
USAGE = 64  # usage error
LOCKED = 75  # another run holds the lock; nothing was changed
CONFIG = 78  # configuration invalid

EXIT_STATUS_HELP = """\
exit status:
  0   done, already done, or nothing to do
  1   the step failed; nothing unverified was deleted
  2   refused: the predecessor's success manifest is missing, invalid or tampered
  64  usage error
  75  another run holds the lock; nothing was changed (retry later)
  78  configuration invalid
"""


class OpsError(Exception):
    """An error an operator must see; ``code`` is the process exit status."""

    code = FAILED

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class StepFailed(OpsError):
    code = FAILED


class Refused(OpsError):
    code = REFUSED


def refusal_of(check, *args, **kwargs) -> tuple[str, str | None] | None:
    """Run ``check``; its refusal as (message, hint), else None. For a check run in a
    forked worker: the answer crosses the pipe as plain data, and the step raises
    ``Refused(*answer)`` itself."""
    try:
        check(*args, **kwargs)
    except Refused as exc:
        return exc.message, exc.hint
    return None


class UsageError(OpsError):
    code = USAGE


class LockBusy(OpsError):
    code = LOCKED


class ConfigError(OpsError):
    code = CONFIG
