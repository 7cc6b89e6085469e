"""Files some process holds open for writing, found the way lsof and fuser find them.

``settle`` keeps a file modified recently; this keeps one the trading core holds open for
writing all day without touching it (a journal opened at the start of the session). One
sweep of ``/proc`` finds them all: each process's descriptors (``/proc/<pid>/fd``) whose
``/proc/<pid>/fdinfo`` flags say write-only or read-write, and each shared writable
mapping in ``/proc/<pid>/maps`` (a memory-mapped journal writes through one after closing
its descriptor), reduced to the (device, inode) of the regular files they lead to. A sweep
costs a few system calls per open descriptor on the host, so scan sweeps once and clean
once per batch, never once per file.

A process whose descriptors cannot be read (another user's, without privilege) hides its
files: ``hidden`` names it, and the caller says so once; the stat comparison before every
unlink still stands for its files.
"""

import os
import stat
from dataclasses import dataclass, field

PROC = "/proc"
_WRITING = (os.O_WRONLY, os.O_RDWR)


@dataclass
class Writers:
    files: dict[tuple[int, int], str] = field(default_factory=dict)  # (dev, ino) -> "pid 4242 (qts-core)"
    hidden: list[int] = field(default_factory=list)  # pids whose descriptors could not be read

    def holder(self, dev: int, ino: int) -> str | None:
        """Why the file is kept ("open for writing by pid 4242 (qts-core)"), or None."""
        who = self.files.get((dev, ino))
        return f"open for writing by {who}" if who else None


def _flags(pid: str, fd: str) -> int | None:
    try:
        with open(f"{PROC}/{pid}/fdinfo/{fd}", "rb") as f:
            for line in f:
                if line.startswith(b"flags:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None  # gone since the listing, or unreadable: not a writer we can name


def _name(pid: str) -> str:
    try:
        with open(f"{PROC}/{pid}/comm", "rb") as f:
            return f.read().strip().decode(errors="replace")
    except OSError:
        return "?"


def _mapped(pid: str) -> list[tuple[int, int]]:
    """(device, inode) of the files ``pid`` maps shared and writable ("rw-s")."""
    found = []
    try:
        with open(f"{PROC}/{pid}/maps", "rb") as f:
            for line in f:
                fields = line.split(None, 5)
                if len(fields) < 6 or fields[1][1:2] != b"w" or fields[1][3:4] != b"s" or fields[4] == b"0":
                    continue
                major, _, minor = fields[3].partition(b":")
                found.append((os.makedev(int(major, 16), int(minor, 16)), int(fields[4])))
    except (OSError, ValueError):
        pass  # gone, or not ours to read: its descriptors said so already
    return found


def open_for_writing() -> Writers:
    """Every regular file some other process has open for writing now."""
    found = Writers()
    me = str(os.getpid())
    try:
        pids = [p for p in os.listdir(PROC) if p.isdigit() and p != me]
    except OSError:
        return found  # no /proc (a container without it): nothing can be known; the stat check stands
    for pid in pids:
        fd_dir = f"{PROC}/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except PermissionError:
            found.hidden.append(int(pid))
            continue
        except OSError:  # it exited meanwhile
            continue
        name = None
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if not target.startswith("/"):  # a socket, pipe or anonymous inode: no file of a root
                continue
            flags = _flags(pid, fd)
            if flags is None or flags & os.O_ACCMODE not in _WRITING:
                continue
            try:
                st = os.stat(f"{fd_dir}/{fd}")  # the open file itself, even if renamed or unlinked since
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                name = name or _name(pid)
                found.files[(st.st_dev, st.st_ino)] = f"pid {pid} ({name})"
        for key in _mapped(pid):
            name = name or _name(pid)
            found.files.setdefault(key, f"pid {pid} ({name}, a shared writable mapping)")
    return found


def hidden_message(writers: Writers) -> str | None:
    if not writers.hidden:
        return None
    return (
        f"cannot inspect {len(writers.hidden)} processes of other users (pids "
        f"{', '.join(map(str, writers.hidden[:10]))}{', ...' if len(writers.hidden) > 10 else ''}): a file they "
        "hold open for writing is not known as such, only the stat comparison guards it; run the toolkit as root, "
        "or as the user the trading core runs as"
    )


def report_hidden(log, ui, writers: Writers) -> None:
    """Say once, in the step's log (a StepLog) and on a terminal, which processes could not
    be inspected: the guard is blind to their files. Not mailed by cron every night (a
    toolkit run as another user than root always meets some); scan records the count, and
    status lists it among the problems."""
    msg = hidden_message(writers)
    if msg:
        log.event("writers_unknown", msg, level="warning", pids=writers.hidden[:100])
        ui.warn(msg)
