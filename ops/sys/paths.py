"""Root-relative paths from manifests, and opening them without ever following a symlink.

Manifests are trusted only as far as they are checked: a path must be relative, without
'.', '..' or empty components. Files are then reached one component at a time from a
directory descriptor of the root with O_NOFOLLOW, so a directory swapped for a symlink
mid-run leads nowhere outside the root.
"""

import errno
import os
import stat
from contextlib import contextmanager
from pathlib import Path

from ops.errors import Refused
from ops.sys.atomic import PRIVATE_FILE, fsync_dir

# A directory opened where a symlink in its place must lead nowhere.
NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a file swapped for a FIFO must not hang the open.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# O_NOATIME: reading a file to back it up must not change it, nor dirty its inode (an
# atime update per file is a metadata write per file on the trading host), as GNU tar's
# --atime-preserve=system. Only the file's owner (or CAP_FOWNER) may ask: for anyone
# else the kernel answers EPERM, and the file is opened the plain way.
_NOATIME = getattr(os, "O_NOATIME", 0)


def unsafe_reason(path) -> str | None:
    """Why ``path`` (str or bytes) may not name a file beneath a root, or None if it may."""
    if isinstance(path, str):
        # Every manifest line passes here: a few substring searches clear a sound path;
        # only a suspect one is taken apart below to say why.
        framed = f"/{path}/"
        if (
            path
            and path[0] != "/"
            and "\x00" not in path
            and "//" not in framed
            and "/./" not in framed
            and "/../" not in framed
        ):
            return None
        path = os.fsencode(path)
    if not path:
        return "empty path"
    if path.startswith(b"/"):
        return "absolute path"
    if b"\x00" in path:
        return "NUL byte in path"
    for part in path.split(b"/"):
        if part in (b"", b".", b".."):
            return f"path component {part.decode() or '(empty)'!r}"
    return None


def check_manifest_path(path, where: str) -> str:
    reason = unsafe_reason(path)
    if reason:
        raise Refused(f"{where}: refusing path {path!r}: {reason}")
    return path


class NotPlainFile(OSError):
    """A symlink (errno ELOOP), or a FIFO, device, socket or directory (EINVAL), where a
    regular file was expected."""


def open_plain_fd(path, flags: int = os.O_RDONLY, mode: int = 0o600, dir_fd: int | None = None) -> int:
    """A descriptor of ``path`` (beneath ``dir_fd``, if given) opened with ``flags`` (with
    O_CREAT, a missing one is made) if it is a regular file reached without a symlink,
    else NotPlainFile (other OSErrors as they come).

    For the toolkit's own files (the run's state, the lock, the log, the metrics): anything
    else in their place was put by hand. Writing through a symlink would change whatever
    it points at; reading a FIFO could block a run that holds the lock, and a link to
    /dev/zero never ends.
    """
    try:
        fd = os.open(path, _FILE_FLAGS | flags, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotPlainFile(errno.ELOOP, "is a symbolic link", str(path)) from None
        if exc.errno in (errno.ENXIO, errno.EISDIR):  # a socket; a directory opened for writing
            raise NotPlainFile(errno.EINVAL, "is not a regular file", str(path)) from None
        raise
    try:
        _regular_stat(fd)
    except NotPlainFile as exc:
        raise NotPlainFile(exc.errno, exc.strerror, str(path)) from None
    os.set_blocking(fd, True)  # O_NONBLOCK was only for the open
    return fd


def open_plain_append(path) -> int:
    """``open_plain_fd`` for appending lines to one of the toolkit's own files (0600), made if
    missing. A file it makes has its name synced in its directory at once: otherwise a power
    cut could take every line written to it since, however each was flushed."""
    new = not os.path.lexists(path)
    fd = open_plain_fd(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE)
    if new:
        try:
            fsync_dir(Path(path).parent)
        except BaseException:
            os.close(fd)
            raise
    return fd


def open_dir_nofollow(path) -> int:
    """A descriptor of the directory ``path``, never of a symlink in its place: for a link,
    or anything else that is not a directory, NotADirectoryError saying so (a missing one:
    FileNotFoundError)."""
    try:
        return os.open(path, NOFOLLOW_DIR)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise NotADirectoryError(
                errno.ENOTDIR, "is not a directory (a symbolic link is never followed)", str(path)
            ) from None
        raise


def open_plain_file(path, writable: bool = False, dir_fd: int | None = None, buffering: int = -1):
    """``open_plain_fd`` for binary reading (and writing, if ``writable``), as a file object."""
    fd = open_plain_fd(path, os.O_RDWR if writable else os.O_RDONLY, dir_fd=dir_fd)
    return os.fdopen(fd, "rb+" if writable else "rb", buffering=buffering)


def read_plain_file(path) -> bytes:
    """The whole of a small file of the run's state (a manifest); see ``open_plain_file``."""
    with open_plain_file(path) as f:
        return f.read()


def _regular_stat(fd: int) -> os.stat_result:
    """The stat of an open descriptor of a regular file; else it is closed and NotPlainFile."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotPlainFile(errno.EINVAL, "is not a regular file")
    return st


def stat_key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """The identity clean compares before every unlink: (device, inode, size, mtime, ctime)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def entry_key(entry: dict) -> tuple[int, int, int, int, int]:
    return (entry["dev"], entry["ino"], entry["size"], entry["mtime_ns"], entry["ctime_ns"])


class RootChanged(Exception):
    pass


class Beneath:
    """A policy root held open by descriptor; files are reached beneath it only.

    The parent directory of the last path is cached, so consecutive files of one directory
    cost one openat each (one thread only). A caller about to delete uses ``fresh_parent``
    instead: the cached descriptor may still point at a directory the core has since moved
    out of the root (a symlink left in its place), so that walk starts again from the root,
    owns its descriptors, and is safe from any thread.
    """

    def __init__(self, root: Path, expect_dev_ino: tuple[int, int] | None = None):
        self.root = root
        self.fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        st = os.fstat(self.fd)
        if expect_dev_ino is not None and (st.st_dev, st.st_ino) != tuple(expect_dev_ino):
            os.close(self.fd)
            raise RootChanged(f"{root} is not the directory that was scanned (device/inode differ)")
        self._dir_rel: str | None = None
        self._dir_fd: int | None = None

    def close(self) -> None:
        self._drop_cache()
        os.close(self.fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _drop_cache(self) -> None:
        if self._dir_fd is not None and self._dir_fd != self.fd:
            os.close(self._dir_fd)
        self._dir_rel, self._dir_fd = None, None

    def _open_dir(self, dir_rel: str) -> int:
        """A new descriptor of ``dir_rel`` (the root's own for ""), one component at a time.

        Raises OSError (ELOOP, ENOTDIR, ENOENT) when a component is missing or is a symlink.
        """
        fd = self.fd
        try:
            for part in dir_rel.split("/") if dir_rel else ():
                nxt = os.open(part, NOFOLLOW_DIR, dir_fd=fd)
                if fd != self.fd:
                    os.close(fd)
                fd = nxt
        except OSError:
            if fd != self.fd:
                os.close(fd)
            raise
        return fd

    def parent(self, relpath: str) -> tuple[int, str]:
        """(descriptor of the parent directory, final name) for a checked relative path, cached."""
        dir_rel, _, name = relpath.rpartition("/")
        if dir_rel != self._dir_rel:
            self._drop_cache()
            self._dir_fd, self._dir_rel = self._open_dir(dir_rel), dir_rel
        return self._dir_fd, name

    @contextmanager
    def fresh_parent(self, relpath: str):
        """(descriptor of the parent directory, final name), walked anew from the root for this use only."""
        dir_rel, _, name = relpath.rpartition("/")
        fd = self._open_dir(dir_rel)
        try:
            yield fd, name
        finally:
            if fd != self.fd:
                os.close(fd)

    def open_regular(self, relpath: str) -> tuple[int, os.stat_result]:
        """Open a regular file for reading; a symlink, FIFO or device raises OSError."""
        dir_fd, name = self.parent(relpath)
        try:
            fd = os.open(name, _FILE_FLAGS | _NOATIME, dir_fd=dir_fd)
        except PermissionError as exc:
            if exc.errno != errno.EPERM or not _NOATIME:
                raise
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        return fd, _regular_stat(fd)

    def lstat(self, relpath: str) -> os.stat_result:
        dir_fd, name = self.parent(relpath)
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)


def describe_oserror(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "vanished"
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return "a path component is now a symlink or not a directory"
    return exc.strerror or str(exc)
