"""Walking a policy root: iterative (no recursion limit), never following a symlink.

Directories are opened one component at a time beneath the root's descriptor, never by
their full path: a tree deeper than PATH_MAX (4096 bytes from /) is walked whole, and a
directory swapped for a symlink mid-walk is not entered.
"""

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from ops.maintenance.retention.policy import MARKER, FileInfo
from ops.sys.paths import NOFOLLOW_DIR

_MAX_OPEN = 64  # descriptors kept along the current path (the root always); deeper ones are reopened


class _DirChain:
    """Open directories from the root down to the last one listed, as (rel, fd)."""

    def __init__(self, root: Path):
        self.chain = [("", os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))]

    def open(self, rel: str) -> int:
        while len(self.chain) > 1 and not (rel == self.chain[-1][0] or rel.startswith(self.chain[-1][0] + "/")):
            os.close(self.chain.pop()[1])
        base, fd = self.chain[-1]
        for part in rel[len(base) :].lstrip("/").split("/") if rel != base else ():
            fd = os.open(part, NOFOLLOW_DIR, dir_fd=fd)
            base = f"{base}/{part}" if base else part
            self.chain.append((base, fd))
            if len(self.chain) > _MAX_OPEN:
                os.close(self.chain.pop(1)[1])
        return fd

    def close(self) -> None:
        for _rel, fd in self.chain:
            os.close(fd)
        self.chain = []


def walk_files(
    root: Path,
    on_skip: Callable[[str, str], None],
    prune: frozenset[str] = frozenset(),
    fenced: dict[tuple[int, int], str] | None = None,
) -> Iterator[FileInfo]:
    """Yield every regular file under ``root`` with its root-relative path, sorted by name.

    Directories whose root-relative path is in ``prune`` are not entered (another
    policy's root nested in this one: its files are that policy's to decide). Nothing
    whose (device, inode) is in ``fenced`` is entered or yielded: the toolkit's own places
    (state, logs, destinations, the config), which a bind mount can bring inside a root
    where no path says so; ``on_skip`` is told what it is.

    Symlinks are never followed or yielded; anything that is neither a file nor a
    directory (FIFO, socket, device, symlink) goes to ``on_skip(path, why)`` instead.
    A directory holding a regular file named ``.ops-keep`` marks everything beneath it
    (the marker included) with that marker's path.
    """
    stack = [("", "")]
    try:
        dirs = _DirChain(root)
    except OSError as exc:
        on_skip(".", f"cannot read directory: {exc.strerror}")
        return
    try:
        yield from _walk(dirs, stack, on_skip, prune, fenced or {})
    finally:
        dirs.close()


def _walk(
    dirs: _DirChain,
    stack: list,
    on_skip: Callable[[str, str], None],
    prune: frozenset[str],
    fenced: dict[tuple[int, int], str],
) -> Iterator[FileInfo]:
    while stack:
        rel, marker = stack.pop()
        try:
            with os.scandir(dirs.open(rel)) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            on_skip(rel or ".", f"cannot read directory: {exc.strerror}")
            continue
        if not marker and any(e.name == MARKER and e.is_file(follow_symlinks=False) for e in entries):
            marker = f"{rel}/{MARKER}" if rel else MARKER
        subdirs = []
        for entry in entries:
            path = f"{rel}/{entry.name}" if rel else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:  # vanished or unreadable between listing and stat
                on_skip(path, f"cannot stat: {exc.strerror}")
                continue
            own = fenced.get((st.st_dev, st.st_ino)) if fenced else None
            if own is not None:
                on_skip(path, f"is the toolkit's own {own} (reached through a mount or hard link); never touched")
                continue
            if stat.S_ISDIR(st.st_mode):
                if path not in prune:
                    subdirs.append(path)
            elif stat.S_ISREG(st.st_mode):
                yield FileInfo(path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_dev, st.st_ino, marker)
            elif stat.S_ISLNK(st.st_mode):
                on_skip(path, "symbolic link (never followed)")
            else:
                on_skip(path, "not a regular file")
        stack.extend((d, marker) for d in reversed(subdirs))
