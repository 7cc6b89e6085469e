"""The exit-code table, written once, and the exceptions that carry it.

Every script maps an escaping OpsError to its ``code``; nothing else decides an exit code.
"""

import errno
import os

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


class OutsideWindow(OpsError):
    """The maintenance window is closed: the step does nothing (or stops at a safe point,
    its run left to be resumed) and exits 0, like a run with nothing to do."""

    code = OK


class UsageError(OpsError):
    code = USAGE


class LockBusy(OpsError):
    code = LOCKED


class ConfigError(OpsError):
    code = CONFIG


def failure_of(exc: OSError) -> StepFailed:
    """What the host refused (a read-only or full file system, a permission) as the step's
    failure: the path, the system's own words, and what an operator can do about it.

    Every OSError that escapes a step or a script becomes this one paragraph and exit 1,
    never a traceback: it is the host's state, not a bug, and cron must alert on it.
    """
    named = os.fsdecode(exc.filename) if isinstance(exc.filename, (str, bytes)) else None
    path = named
    if named is not None and isinstance(exc.filename2, (str, bytes)):
        path = f"{named} -> {os.fsdecode(exc.filename2)}"
    reason = exc.strerror or str(exc)
    message = f"{reason}: {path}" if path else reason
    # The OS names no path for a write to a file already open (a full disk under the log).
    where = f"the file system holding {path}" if path else "a file system the step was writing to"
    if exc.errno == errno.EROFS:
        hint = f"{where} is read-only: remount it read-write, or point the config at a writable place"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        owner = _owner(named) if named else None
        hint = (
            f"this user (uid {os.geteuid()}) may not use {path or 'a file the step needed'}"
            + (f", which belongs to uid {owner}" if owner is not None else "")
            + ": run as the user that owns it (normally the one cron runs the toolkit as), or fix its permissions"
        )
    elif exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = f"{where} is full: free space there"
    else:
        hint = f"check {path}" if path else "check the log and the file systems the step uses"
    return StepFailed(message, hint=hint + ", then run again")


def _owner(path: str) -> int | None:
    """The owner of ``path``, or of its nearest ancestor this user may stat."""
    while True:
        try:
            return os.stat(path).st_uid
        except OSError:
            parent = os.path.dirname(path)
            if parent == path:
                return None
            path = parent


def as_failure(exc: BaseException) -> OpsError | None:
    """``exc`` as the failure an operator sees: an OpsError as it is, an OSError through
    ``failure_of``; None for anything else (a bug, whose traceback must be kept)."""
    if isinstance(exc, OpsError):
        return exc
    if isinstance(exc, OSError):
        return failure_of(exc)
    return None
