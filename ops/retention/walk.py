"""Walking a policy root: iterative (no recursion limit), never following a symlink."""

import os
import stat
from pathlib import Path
from typing import Callable, Iterator

from ops.retention.policy import MARKER, FileInfo


def walk_files(root: Path, on_skip: Callable[[str, str], None]) -> Iterator[FileInfo]:
    """Yield every regular file under ``root`` with its root-relative path, sorted by name.

    Symlinks are never followed or yielded; anything that is neither a file nor a
    directory (FIFO, socket, device, symlink) goes to ``on_skip(path, why)`` instead.
    A directory holding a regular file named ``.ops-keep`` marks everything beneath it
    (the marker included) with that marker's path.
    """
    stack = [("", "")]
    while stack:
        rel, marker = stack.pop()
        try:
            with os.scandir(os.path.join(root, rel) if rel else root) as it:
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
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(path)
            elif stat.S_ISREG(st.st_mode):
                yield FileInfo(path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_dev, st.st_ino, marker)
            elif stat.S_ISLNK(st.st_mode):
                on_skip(path, "symbolic link (never followed)")
            else:
                on_skip(path, "not a regular file")
        stack.extend((d, marker) for d in reversed(subdirs))
