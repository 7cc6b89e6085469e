"""Files the way the campaign writes and reads them: by directory descriptor, one
component at a time, so no depth or PATH_MAX stops it (``put_file``, ``read_tree``), the
SHA-256 the oracle compares, and ``remove_tree`` (rm -rf) for trees shutil cannot remove."""

import hashlib
import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _walk_parent(top, rel: bytes, create: bool) -> tuple[int, bytes]:
    """(fd of rel's parent directory, last name), one component at a time: any depth."""
    fd = os.open(top, DIR_FLAGS)
    *dirs, name = rel.split(b"/")
    for d in dirs:
        if create:
            try:
                os.mkdir(d, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
        nxt = os.open(d, DIR_FLAGS, dir_fd=fd)
        os.close(fd)
        fd = nxt
    return fd, name


def put_file(top, rel: bytes, content: bytes, mtime: float) -> None:
    fd, name = _walk_parent(top, rel, True)
    try:
        f = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644, dir_fd=fd)
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(f, view) :]
        finally:
            os.close(f)
        ns = int(mtime * 1e9)
        os.utime(name, ns=(ns, ns), dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(fd)


@dataclass
class Tree:
    files: dict  # rel bytes -> content
    ids: dict  # rel bytes -> (ino, size, mtime_ns, ctime_ns)
    links: dict  # rel bytes -> symlink target
    special: dict  # rel bytes -> "fifo" | "socket" | ...


def read_tree(top, content: bool = True) -> Tree:
    """Every entry beneath ``top`` by descriptor (no PATH_MAX, no recursion): bytes paths."""
    t = Tree({}, {}, {}, {})
    try:
        top_fd = os.open(top, DIR_FLAGS)
    except FileNotFoundError:
        return t

    def scan(fd: int, rel: bytes) -> list[bytes]:
        subdirs = []
        for entry in os.scandir(fd):
            name = os.fsencode(entry.name)
            path = rel + b"/" + name if rel else name
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(name)
            elif stat.S_ISLNK(st.st_mode):
                t.links[path] = os.readlink(name, dir_fd=fd)
            elif stat.S_ISREG(st.st_mode):
                t.ids[path] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                if content:
                    f = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                    with os.fdopen(f, "rb") as fh:
                        t.files[path] = fh.read()
            else:
                t.special[path] = (
                    "fifo" if stat.S_ISFIFO(st.st_mode) else "socket" if stat.S_ISSOCK(st.st_mode) else "other"
                )
        return sorted(subdirs, reverse=True)

    stack = [(b"", top_fd, scan(top_fd, b""))]
    while stack:
        rel, fd, pending = stack[-1]
        if not pending:
            os.close(fd)
            stack.pop()
            continue
        name = pending.pop()
        child = os.open(name, DIR_FLAGS, dir_fd=fd)
        crel = rel + b"/" + name if rel else name
        stack.append((crel, child, scan(child, crel)))
    return t


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def remove_tree(path: Path) -> None:
    """rm -rf: shutil.rmtree recurses and gives up on a 2,000-deep tree."""
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], capture_output=True)
