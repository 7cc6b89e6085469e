"""The one atomic-write mechanism: temporary name starting with '.', fsync, rename, fsync dir.

A reader (an operator, the next step, a crash-recovering rerun) sees either the old file
or the whole new one, never a prefix.
"""

import contextlib
import ctypes
import errno
import os
import secrets
import stat
from pathlib import Path

from ops.errors import StepFailed
from ops.sys.pace import PacedWriter
from ops.sys.sizes import CHUNK

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fsync_dir_fd(fd)
    finally:
        os.close(fd)


def fsync_dir_fd(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems cannot fsync a directory (EINVAL); the rename is then as durable
        # as that filesystem allows. Any other error is real and must surface.
        if exc.errno != errno.EINVAL:
            raise


_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def syncfs(fd: int) -> None:
    """Everything written to the file system holding ``fd`` made durable, in one call: what
    one fsync per file would do for a whole batch of files (their data, their directories)."""
    if _libc.syncfs(ctypes.c_int(fd)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


# File systems whose syncfs(2) writes everything to the device. Elsewhere it may reach no
# further than the kernel: FUSE passes no syncfs to its server (sshfs, s3fs, mergerfs), and
# network file systems decide for themselves. Magic numbers from linux/magic.h.
SYNCFS_REACHES_DISK = {
    0xEF53: "ext2/3/4",
    0x58465342: "xfs",
    0x9123683E: "btrfs",
    0xF2F52010: "f2fs",
    0x2FC12FC1: "zfs",
    0x794C7630: "overlay",  # syncs its upper file system
    0x01021994: "tmpfs",  # nothing to reach
}
_STATFS_BYTES = 120  # struct statfs on 64-bit Linux; f_type is its first field, a long


def fs_type(fd: int) -> int:
    """The file system type (statfs f_type) of the one holding ``fd``."""
    buf = ctypes.create_string_buffer(_STATFS_BYTES)
    if _libc.fstatfs(ctypes.c_int(fd), buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def syncfs_reaches_disk(fd: int) -> bool:
    return fs_type(fd) in SYNCFS_REACHES_DISK


def rename_noreplace(src: bytes, dst: bytes, dir_fd: int) -> None:
    """``src`` renamed to ``dst`` in the directory ``dir_fd``, failing with FileExistsError
    if ``dst`` exists: nothing is ever replaced. One system call (renameat2); where the file
    system has no RENAME_NOREPLACE, a link, which refuses an existing name too, and an unlink."""
    if _libc.renameat2(dir_fd, src, dir_fd, dst, _RENAME_NOREPLACE) == 0:
        return
    err = ctypes.get_errno()
    if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        raise OSError(err, os.strerror(err), os.fsdecode(dst))
    os.link(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    os.unlink(src, dir_fd=dir_fd)


def make_dirs(path: Path, mode: int = 0o777) -> None:
    """``mkdir -p`` whose new names survive a power cut: each directory created is made
    durable in its parent (an fsync of the parent), or the files written below it later,
    however well synced, can vanish with it. The leaf gets ``mode``, parents the default."""
    path = Path(path)
    missing = []
    while not path.exists():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for i, d in enumerate(reversed(missing)):
        try:
            os.mkdir(d, mode if i == len(missing) - 1 else 0o777)
        except FileExistsError:
            if not d.is_dir():
                raise
            continue  # made by someone else meanwhile: theirs to make durable
        fsync_dir(d.parent)


def ensure_private_dir(path: Path, own: bool = False) -> Path:
    """Create ``path`` (and parents) if missing; the leaf is ours, so it is made 0700.

    A configured location (state_dir, log_dir, a destination's path) may be a symlink: the
    operator named it. A directory the toolkit names itself inside one (``own``: runs/, a
    run's, the catalogue) may not: a link there was put by hand, and the toolkit would
    chmod, and write its state, wherever it points.
    """
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode if own else None
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISDIR(mode):
        what = "a symbolic link" if stat.S_ISLNK(mode) else "not a directory"
        raise StepFailed(
            f"{path} is {what}; it must be a directory of the toolkit's own, and nothing is written through it",
            hint="put the directory it points at in its place, or remove it",
        )
    make_dirs(path, PRIVATE_DIR)
    st = os.stat(path)
    if (st.st_mode & 0o777) != PRIVATE_DIR:
        path.chmod(PRIVATE_DIR)
    return path


def temp_name(final_name: str, kind: str = "tmp") -> str:
    """``.<final_name>.<kind>-<8 hex>``: a ``kind`` of its own lets a writer know its
    leftovers again (restore's, in directories that are not the toolkit's)."""
    return f".{final_name}.{kind}-{secrets.token_hex(4)}"


@contextlib.contextmanager
def atomic_file(path: Path, mode: int = PRIVATE_FILE):
    """Yield a binary file; on clean exit it replaces ``path`` durably, else it vanishes."""
    path = Path(path)
    tmp = path.with_name(temp_name(path.name))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb", buffering=CHUNK) as f:
            yield PacedWriter(f)
            f.flush()
            os.fsync(f.fileno())
        if mode != PRIVATE_FILE:
            os.chmod(tmp, mode)  # the umask may have narrowed a deliberately wider mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    try:
        fsync_dir(path.parent)
    except OSError:
        # The new name may not survive a crash, and an fsync error is never retried and
        # trusted: take the file away, so the step fails without leaving a result that
        # a rerun would believe (a success manifest above all).
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise


def atomic_write(path: Path, data: bytes, mode: int = PRIVATE_FILE) -> None:
    with atomic_file(path, mode) as f:
        f.write(data)
