"""Every log line of every step goes to ``<log_dir>/ops-YYYY-MM.log`` and nowhere else.

One JSON object per line (time, level, run, step, event, message, fields), appended with
O_APPEND so concurrent writers never interleave within a line. Files are named by month so
an operator's own rotation (or none) works; the toolkit never deletes them.
"""

import contextlib
import os
import time
from pathlib import Path

from ops.errors import StepFailed
from ops.sys.atomic import ensure_private_dir
from ops.sys.jsonl import dumps_line
from ops.sys.paths import NotPlainFile, open_plain_append

_second: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text


def utc_seconds(now: float | None = None) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` in UTC, formatted once per second: clean stamps every file
    decision, and time.strftime costs more than the rest of a log line (glibc re-reads the
    time zone on each call). The cache is one tuple replaced whole, so threads share it safely."""
    global _second
    whole = int(time.time() if now is None else now)
    cached = _second
    if cached[0] != whole:
        cached = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return cached[1]


def log_file(log_dir: Path, when: float | None = None) -> Path:
    return Path(log_dir) / time.strftime("ops-%Y-%m.log", time.gmtime(when))


class StepLog:
    def __init__(self, log_dir: Path, step: str, run_id: str | None = None):
        self.path = log_file(ensure_private_dir(log_dir))
        self.step = step
        self.run_id = run_id
        try:
            self._fd = open_plain_append(self.path)
        except NotPlainFile as exc:
            raise StepFailed(
                f"{self.path} {exc.strerror}; the log must be a regular file of the toolkit's own. Nothing was changed",
                hint=f"move {self.path} away (the next run starts a new one)",
            ) from None

    def line(self, event: str, msg: str = "", level: str = "info", **fields) -> bytes:
        """One log line, stamped now, for ``write``."""
        now = time.time()
        record = {
            "ts": f"{utc_seconds(now)}.{int(now % 1 * 1000):03d}Z",
            "level": level,
            "run": self.run_id,
            "step": self.step,
            "event": event,
        }
        if msg:
            record["msg"] = msg
        record.update(fields)
        return dumps_line(record)

    def write(self, lines: bytes) -> None:
        """Whole lines in one write: an O_APPEND write is placed whole at the end of the
        file, so a crash loses at most the lines being written, never corrupts earlier ones.
        Clean hands over a batch of lines at once: each append is a journaled metadata
        change on ext4, and one per file cost about a tenth of clean's time there."""
        os.write(self._fd, lines)

    def event(self, event: str, msg: str = "", level: str = "info", **fields) -> None:
        self.write(self.line(event, msg, level, **fields))

    def close(self) -> None:
        # A step's lines reach the disk when it ends, one fdatasync a step (not a line): after
        # a power cut the log still tells what every finished step did. The log is the
        # record beside the manifests, so a failing flush here never fails the step.
        with contextlib.suppress(OSError):
            os.fdatasync(self._fd)
        os.close(self._fd)
