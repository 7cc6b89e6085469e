"""The one lock: ``fcntl.flock`` on ``<state_dir>/lock``, held by the whole chain.

flock belongs to the open file description, so the kernel drops it when the holder dies
(no stale locks), and a child that inherits the descriptor (the chain's steps) holds it
too. A child learns of the inherited descriptor through QTS_OPS_LOCK_FD.
"""

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

from ops.errors import LockBusy, StepFailed
from ops.sys import child
from ops.sys.atomic import PRIVATE_FILE, ensure_private_dir
from ops.sys.paths import NotPlainFile, open_plain_fd

LOCK_FD_ENV = "QTS_OPS_LOCK_FD"


def lock_path(state_dir: Path) -> Path:
    return Path(state_dir) / "lock"


def not_plain(path: Path, exc: OSError) -> str:
    """What is wrong with a lock that is not a regular file (see paths.NotPlainFile)."""
    return f"{path} {exc.strerror}; the lock must be a regular file of the toolkit's own"


def describe_holder(holder: dict) -> str:
    """'pid 42 (run <id>, step backup)', or without the run while the holder has none yet
    (maintenance takes the lock before it knows which run it resumes or starts)."""
    said = ", ".join(f"{k} {holder[k]}" for k in ("run", "step") if holder.get(k))
    return f"pid {holder.get('pid', '?')}" + (f" ({said})" if said else "")


def record_run(fd: int, run_id: str) -> None:
    """Add the run id to the record of the lock ``fd`` holds, once the holder knows it.

    Only what status and a refused rival say depends on it, so a failure is ignored. The
    new record is longer than the old one: nothing of the old is left after its end.
    """
    try:
        data = json.dumps(dict(json.loads(os.pread(fd, 4096, 0)), run=run_id)).encode()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    except (OSError, ValueError, TypeError):
        pass


def read_holder(state_dir: Path) -> dict | None:
    """Who holds the lock now, or None when nobody does; NotPlainFile if the lock is not a
    regular file (a FIFO there would block the reader)."""
    path = lock_path(state_dir)
    try:
        fd = open_plain_fd(path)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                return {}
        return None
    finally:
        os.close(fd)


def _inherited(path: Path) -> int | None:
    value = os.environ.get(LOCK_FD_ENV)
    if not value:
        return None
    try:
        fd = int(value)
        st, want = os.fstat(fd), os.lstat(path)
    except (ValueError, OSError):
        return None
    return fd if os.path.samestat(st, want) else None


@contextlib.contextmanager
def hold_lock(state_dir: Path, who: dict):
    """Hold the lock for the block, or raise LockBusy at once (exit 75)."""
    ensure_private_dir(state_dir)
    path = lock_path(state_dir)
    fd = _inherited(path)
    if fd is not None:
        # Re-locking through the same open file description succeeds only if that
        # description still holds it: proof the parent chain is alive and owns it.
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockBusy(f"inherited lock descriptor does not hold {path}") from None
        with child.parent_only(fd):  # a helper forked to help the holder does not keep the lock
            yield fd
        return
    try:
        fd = open_plain_fd(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
    except NotPlainFile as exc:
        # Not LockBusy: no run holds this; every run would fail the same way until it is gone.
        raise StepFailed(
            f"{not_plain(path, exc)}. Nothing was changed", hint=f"remove {path} (the next run makes it again)"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(state_dir) or {}
            raise LockBusy(
                f"another run holds the lock {path}: {describe_holder(holder)}; nothing was changed",
                hint="cron will retry on its next tick",
            ) from None
        info = dict(who, pid=os.getpid(), since=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        with child.parent_only(fd):  # a helper forked to help the holder does not keep the lock
            yield fd
    finally:
        os.close(fd)
