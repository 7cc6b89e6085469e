"""Files restore put back into their policy root, kept from expiry for ``restore_grace``.

A restored file keeps its old mtime, so the next run would expire it again at once (and
the catalogue would list it under a second run). Restore appends one line per file to
``<state_dir>/restored.jsonl`` (policy, path relative to the root, device, inode, mtime,
when), made durable before the file gets its name, so no scan ever sees it unmarked, even
after a power cut. Scan and plan read
the lines whose grace is not over, and the retention decision keeps a file only while that
same file is at that path (device, inode and mtime: an inode number is reused soon after
a delete), so a file written anew there is decided like any other.

The file only grows, by a line per file restored into a root (restores are rare); lines
past their grace are skipped when read.
"""

import os
import time
from pathlib import Path

from ops.config import Config
from ops.errors import StepFailed
from ops.sys.atomic import ensure_private_dir
from ops.sys.jsonl import decode_line, dumps_line
from ops.sys.paths import NotPlainFile, open_plain_append, open_plain_file

NAME = "restored.jsonl"


def _not_plain(path: Path, exc: NotPlainFile) -> StepFailed:
    return StepFailed(
        f"{path} {exc.strerror}; it must be a regular file of the toolkit's own, and it is never "
        "read or written through a link",
        hint=f"move {path} away (restore starts a new one)",
    )


class Marks:
    """The appending side, for one restore: ``add`` before each file is linked into place."""

    def __init__(self, state_dir: Path):
        self.path = ensure_private_dir(state_dir) / NAME
        self.at_ns = time.time_ns()
        try:
            self._fd = open_plain_append(self.path)
        except NotPlainFile as exc:
            raise _not_plain(self.path, exc) from None

    def add(self, policy: str, path: bytes, st: os.stat_result) -> None:
        # One O_APPEND write per line: a concurrent restore's lines never interleave with it.
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at_ns / 1e9))
        os.write(
            self._fd,
            dumps_line(
                {
                    "policy": policy,
                    "path": os.fsdecode(path),
                    "dev": st.st_dev,
                    "ino": st.st_ino,
                    "mtime_ns": st.st_mtime_ns,
                    "restored_at": at,
                    "restored_ns": self.at_ns,
                }
            ),
        )

    def sync(self) -> None:
        """The marks added so far made durable: called before their files get their names."""
        os.fsync(self._fd)

    def close(self) -> None:
        try:
            os.fsync(self._fd)
        finally:
            os.close(self._fd)


def load(config: Config, now_ns: int) -> dict[tuple[int, int], tuple[int, int, int]]:
    """{(dev, ino): (mtime_ns, restored_ns, kept_until_ns)} of the marks still in their
    grace; the newest line for a file wins. Keyed by the file itself, not by its policy and
    path: a restored file stays kept when the config gives it to another policy (a policy
    renamed, a nested root added) or it is moved. A line that cannot be read (torn by a
    power cut) is passed over: the file it named is then decided as any other, after a backup."""
    path = Path(config.state_dir) / NAME
    grace = config.restore_grace.ns
    marks: dict[tuple[int, int], tuple[int, int, int]] = {}
    try:
        f = open_plain_file(path)
    except FileNotFoundError:
        return marks
    except NotPlainFile as exc:
        raise _not_plain(path, exc) from None
    with f:
        for line in f:
            try:
                m = decode_line(line)
                key = (int(m["dev"]), int(m["ino"]))
                mtime_ns, restored_ns = int(m["mtime_ns"]), int(m["restored_ns"])
            except (ValueError, KeyError, TypeError):
                continue
            if restored_ns + grace > now_ns:
                marks[key] = (mtime_ns, restored_ns, restored_ns + grace)
    return marks
