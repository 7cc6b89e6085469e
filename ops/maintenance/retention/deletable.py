"""Files the toolkit's user cannot delete: kept at scan, and counted wherever they show.

An expired file in a directory its user may read but not write (another owner, a
read-only mount) would be archived, then kept by clean ("unlink failed") every night, a
new archive each time and nothing said. So the walk's expired decisions go through
``keep_undeletable``: such a file is kept with rule ``undeletable`` and a reason naming
the directory and the user, and is never archived. The check is the kernel's own
(faccessat(2) for the effective user, which also answers "no" on a read-only mount), once
per directory; the decision itself (policy.decide) stays pure.

What still fails at clean's unlink (a sticky directory, an immutable file, a mode changed
after scan) is in clean's journal: ``unlink_failures`` counts it for status and metrics.
"""

import os
import pwd
from collections.abc import Iterable, Iterator

from ops.maintenance.retention.policy import Decision
from ops.sys.jsonl import decode_line
from ops.sys.paths import Beneath, open_plain_file

RULE = "undeletable"
UNLINK_FAILED = "unlink failed"  # how clean's journal begins the reason of a failed unlink
_EFFECTIVE = os.access in os.supports_effective_ids  # ask for the user the step runs as (faccessat AT_EACCESS)


def _user() -> str:
    uid = os.geteuid()
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _why_not(beneath: Beneath, path: str) -> str | None:
    """Why the running user cannot delete files in the directory of root-relative ``path``,
    or None if it can.

    The directory is reached by descriptor beneath the root, as the walk reached it: its
    path from / may be longer than PATH_MAX, where access() by path would only fail.
    """
    parent = path.rpartition("/")[0]
    where = os.path.join(beneath.root, parent) if parent else str(beneath.root)
    try:
        dir_fd, _ = beneath.parent(path)
        if os.access(".", os.W_OK | os.X_OK, dir_fd=dir_fd, effective_ids=_EFFECTIVE):
            return None
        read_only = os.fstatvfs(dir_fd).f_flag & os.ST_RDONLY
    except OSError:
        return None  # gone or swapped since the walk: backup and clean look again, and say why
    if read_only:
        return f"cannot be deleted: directory {where} is on a read-only file system (user {_user()})"
    return f"cannot be deleted: directory {where} is not writable by user {_user()}"


def keep_undeletable(decisions: Iterable[Decision], root) -> Iterator[Decision]:
    """``decisions`` with every expired file its user cannot delete turned into a keep."""
    verdicts: dict[str, str | None] = {}  # root-relative directory -> why not, asked once each
    beneath = None
    try:
        for d in decisions:
            if d.expire:
                parent = d.file.path.rpartition("/")[0]
                if parent not in verdicts:
                    try:
                        beneath = beneath or Beneath(root)
                        verdicts[parent] = _why_not(beneath, d.file.path)
                    except OSError:  # the root gone since the walk: backup and clean say so
                        verdicts[parent] = None
                if verdicts[parent]:
                    d = Decision(d.file, False, RULE, verdicts[parent])
            yield d
    finally:
        if beneath is not None:
            beneath.close()


def unlink_failures(journal) -> dict[str, tuple[int, dict]]:
    """Per policy, (failed unlinks, the first such line) in clean's journal ``journal``.

    Only lines that hold the words are decoded: a journal has a line per file of the run
    (200,000 on a big night), and status and the metrics read it after every clean.
    """
    found: dict[str, tuple[int, dict]] = {}
    marker = UNLINK_FAILED.encode()
    with open_plain_file(journal) as f:
        for raw in f:
            if marker not in raw:
                continue
            line = decode_line(raw)
            if not isinstance(line, dict) or line.get("outcome") != "kept":
                continue
            if str(line.get("reason")).startswith(UNLINK_FAILED):
                policy = str(line.get("policy"))
                count, first = found.get(policy, (0, line))
                found[policy] = (count + 1, first)
    return found
