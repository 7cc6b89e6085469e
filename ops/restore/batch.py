"""Restored files written, checked, made durable and named a batch at a time.

One fsync per file before its rename cost restore ten times what ``tar -xf`` followed by
``sha256sum -c`` and ``sync`` costs. So each member is written under a temporary name
beside its place and checked against its SHA-256, and only a batch at a time is made
durable: at the full pace with one ``syncfs`` of the target's file system (the data of
every file of the batch, and the directories made for them), then each gets its name by a
rename that never replaces (``rename_noreplace``), then one more ``syncfs`` makes the names
durable. No file ever has its final name with content that was not checked and made
durable first: a crash leaves only temporary names, which the next restore removes. At
the gentle pace each file is flushed as it is written (ops/sys/pace.py) and fsynced on its
own, and each directory once per batch: slower, and never a flush of the whole file
system while the trading core writes to it.
"""

import os
from collections.abc import Callable

from ops.archive import ArchiveReader
from ops.sys import crashpoints
from ops.sys.atomic import fsync_dir_fd, rename_noreplace, syncfs, temp_name
from ops.sys.pace import PACE, Steps
from ops.sys.paths import NOFOLLOW_DIR
from ops.sys.sizes import MiB

TEMP_KIND = "tmp-restore"  # ``.<name>.tmp-restore-<8 hex>`` beside the file it becomes
BATCH_BYTES = 512 * MiB
# Files per batch. Tests make it small (QTS_OPS_RESTORE_BATCH) to kill a restore between batches.
_asked = os.environ.get("QTS_OPS_RESTORE_BATCH", "")
BATCH_FILES = int(_asked) if _asked.isdigit() and int(_asked) > 0 else 4096
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class Untrusted(Exception):
    """A copy on a destination that is hostile, or disagrees with a record of it."""


class TargetError(Exception):
    """The restore target failed, not the copy (disk full, a file appeared, a link in the
    way): another destination would meet the same, so none is tried."""


def dir_fd(target_fd: int, rel_dir: bytes, create: bool = False) -> int:
    """Descriptor of the directory ``rel_dir`` beneath the target ("" for the target itself),
    one component at a time, no symlink followed (created 0700 when asked)."""
    fd = os.dup(target_fd)
    try:
        for part in rel_dir.split(b"/") if rel_dir else ():
            try:
                nxt = os.open(part, NOFOLLOW_DIR, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o700, dir_fd=fd)
                nxt = os.open(part, NOFOLLOW_DIR, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data, what: str) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except OSError as exc:
            raise TargetError(f"writing {what}: {exc}") from None


class Batch:
    """The members of one target written and checked since the last commit.

    ``write`` puts a member under a temporary name and checks it; ``commit`` makes the
    batch durable and gives each its name, returning what was named; ``discard`` removes
    the temporary files of a batch that will not be committed (its copy failed). The
    caller commits when ``full`` and at the end of each archive.
    """

    def __init__(self, target_fd: int):
        self.target_fd = target_fd
        self.dirs: dict[bytes, int] = {}  # parent (relative) -> descriptor, for the batch's life
        self.pending: list[tuple[bytes, bytes, bytes, os.stat_result | None, Callable | None, object]] = []
        self.bytes = 0

    @property
    def full(self) -> bool:
        return len(self.pending) >= BATCH_FILES or self.bytes >= BATCH_BYTES

    def _dir(self, parent: bytes, what: str) -> int:
        fd = self.dirs.get(parent)
        if fd is None:
            try:
                fd = self.dirs[parent] = dir_fd(self.target_fd, parent, create=True)
            except OSError as exc:
                raise TargetError(f"cannot make the directory of {what} at the restore target: {exc}") from None
        return fd

    def write(self, reader: ArchiveReader, member, expected_sha: str, source: str, on_written=None, tag=None) -> None:
        """``member`` to a temporary name beside its place, checked against ``expected_sha``
        (Untrusted if it differs); ``on_written(stat)`` is told of it just before it is named,
        and ``tag`` comes back from ``commit`` with its name."""
        what = repr(os.fsdecode(member.name))
        parent, _, leaf = member.name.rpartition(b"/")
        fd = self._dir(parent, what)
        tmp = temp_name(os.fsdecode(leaf), TEMP_KIND).encode("utf-8", "surrogateescape")
        try:
            out = os.open(tmp, _NEW, 0o600, dir_fd=fd)
        except OSError as exc:
            raise TargetError(f"cannot write {what} at the restore target: {exc}") from None
        named = False
        try:
            try:
                steps = Steps(out)  # gentle: flushed a WRITE_STEP at a time, with rests; full: nothing
                for chunk in reader.chunks(member):  # the copy's errors stay the copy's: the next destination may do
                    _write_all(out, chunk, what)
                    steps.wrote(len(chunk))
                    crashpoints.reach("restore.after_chunk")
                if member.sha256 != expected_sha:
                    raise Untrusted(f"{what} does not match its SHA-256 in {source}")
                os.fchmod(out, member.mode & 0o777)
                os.utime(out, (member.mtime, member.mtime))
                if PACE.gentle:
                    os.fsync(out)
                st = os.fstat(out) if on_written is not None else None  # only a mark needs it
            except OSError as exc:
                raise TargetError(f"writing {what}: {exc}") from None
            finally:
                os.close(out)
            self.pending.append((parent, tmp, leaf, st, on_written, tag))
            self.bytes += member.size
            named = True
        finally:
            if not named:
                _unlink(tmp, fd)

    def commit(self) -> list:
        """Make the batch durable, then name each file; the tags of those named."""
        if not self.pending:
            return []
        crashpoints.reach("restore.before_sync")
        named = []
        try:
            if not PACE.gentle:
                _durable(self.target_fd, "the restored files")  # every file's data and new directory
            for parent, tmp, leaf, st, on_written, tag in self.pending:
                if on_written is not None:
                    on_written(st)
                what = repr(os.fsdecode(parent + b"/" + leaf if parent else leaf))
                try:
                    rename_noreplace(tmp, leaf, self.dirs[parent])
                except FileExistsError:
                    raise TargetError(
                        f"{what} appeared at the restore target while restoring; it was not overwritten"
                    ) from None
                except OSError as exc:
                    raise TargetError(f"cannot put {what} in place: {exc}") from None
                named.append(tag)
                crashpoints.reach("restore.after_rename")
            if PACE.gentle:
                _dirs_durable(self.dirs.values())
            else:
                _durable(self.target_fd, "the restored names")
        finally:
            del self.pending[: len(named)]  # named: not to be removed as temporary files
            self.discard()
        return named

    def discard(self) -> None:
        """Remove what is still under a temporary name, and forget the batch."""
        for parent, tmp, _leaf, _st, _on, _tag in self.pending:
            _unlink(tmp, self.dirs[parent])
        self.pending.clear()
        self.bytes = 0

    def close(self) -> None:
        self.discard()
        for fd in self.dirs.values():
            os.close(fd)
        self.dirs.clear()


def _durable(fd: int, what: str) -> None:
    try:
        syncfs(fd)
    except OSError as exc:
        raise TargetError(f"making {what} durable: {exc}") from None


def _dirs_durable(fds) -> None:
    try:
        for fd in fds:
            fsync_dir_fd(fd)
    except OSError as exc:
        raise TargetError(f"making the restored names durable: {exc}") from None


def _unlink(name: bytes, fd: int) -> None:
    try:
        os.unlink(name, dir_fd=fd)
    except FileNotFoundError:
        pass  # named since, or never made
