"""Every log line of every step goes to ``<log_dir>/ops-YYYY-MM.log`` and nowhere else.

One JSON object per line (time, level, run, step, event, message, fields), appended with
O_APPEND so concurrent writers never interleave within a line. Files are named by month so
an operator's own rotation (or none) works; the toolkit never deletes them.
"""

import os
import time
from pathlib import Path

from ops.atomic import PRIVATE_FILE, ensure_private_dir
from ops.jsonl import dumps_line


def log_file(log_dir: Path, when: float | None = None) -> Path:
    return Path(log_dir) / time.strftime("ops-%Y-%m.log", time.gmtime(when))


class StepLog:
    def __init__(self, log_dir: Path, step: str, run_id: str | None = None):
        self.path = log_file(ensure_private_dir(log_dir))
        self.step = step
        self.run_id = run_id
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)

    def event(self, event: str, msg: str = "", level: str = "info", **fields) -> None:
        now = time.time()
        record = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
            "level": level,
            "run": self.run_id,
            "step": self.step,
            "event": event,
        }
        if msg:
            record["msg"] = msg
        record.update(fields)
        # One write per line: an O_APPEND write is placed whole at the end of the file,
        # so a crash loses at most the line being written, never corrupts earlier ones.
        os.write(self._fd, dumps_line(record))

    def close(self) -> None:
        os.close(self._fd)
