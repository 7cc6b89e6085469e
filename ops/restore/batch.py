"""Restored files written, checked, made durable and named a batch at a time.

One fsync per file before its rename cost restore ten times what ``tar -xf`` followed by
``sha256sum -c`` and ``sync`` costs. So each member is written under a temporary name
beside its place and checked against its SHA-256, and only a batch at a time is made
durable: at the full pace with one ``syncfs`` of the target's file system (the data of
every file of the batch, and the directories made for them), then each gets its name by a
rename that never replaces (``rename_noreplace``), then one more ``syncfs`` makes the names
durable. On a file system whose syncfs may not reach the disk (FUSE, network file systems:
``syncfs_reaches_disk``) each file is fsynced instead, and each directory after the renames.
No file ever has its final name with content that was not checked and made durable
first: a crash leaves only temporary names, which the next restore removes. At
the gentle pace each file is flushed as it is written (ops/sys/pace.py) and fsynced on its
own, and each directory once per batch: slower, and never a flush of the whole file
system while the trading core writes to it.
"""

import hashlib
import itertools
import os
import queue
import secrets
import threading

from ops.archive import ArchiveReader
from ops.sys import crashpoints
from ops.sys.atomic import fsync_dir_fd, rename_noreplace, syncfs, syncfs_reaches_disk
from ops.sys.pace import PACE, Steps
from ops.sys.paths import NOFOLLOW_DIR
from ops.sys.sizes import CHUNK, MiB

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


def temp_stem(leaf: bytes) -> bytes:
    """What a temporary name is made of: the name itself, or for a name so long that the
    suffix would pass the 255-byte limit, a digest of it (found again the same way)."""
    return leaf if len(leaf) <= 200 else b"~" + hashlib.sha256(leaf).hexdigest()[:40].encode()


def dir_fd(target_fd: int, rel_dir: bytes, create: bool = False) -> int:
    """Descriptor of the directory ``rel_dir`` beneath the target ("" for the target itself),
    one component at a time, no symlink followed (created 0700 when asked; its entry in its
    parent is made durable at once, as restore promises every name it makes)."""
    fd = os.dup(target_fd)
    try:
        for part in rel_dir.split(b"/") if rel_dir else ():
            try:
                nxt = os.open(part, NOFOLLOW_DIR, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o700, dir_fd=fd)
                fsync_dir_fd(fd)
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


class _File:
    """One member of a batch: where it is, under what temporary name, and what became of it."""

    __slots__ = ("parent", "fd", "tmp", "leaf", "st", "on_written", "tag", "error", "data", "mode", "mtime", "sync")

    def __init__(self, parent: bytes, fd: int, leaf: bytes, on_written, tag, sync: bool):
        self.parent, self.fd, self.leaf, self.on_written, self.tag = parent, fd, leaf, on_written, tag
        self.sync = sync  # fsynced as it is made: the batch's syncfs would not make it durable
        self.tmp: bytes | None = None  # None: not created (yet)
        self.st: os.stat_result | None = None
        self.error: BaseException | None = None
        self.data, self.mode, self.mtime = (), 0, 0


class _Creators:
    """Threads that make the small files of a batch at the full pace. Making a file is mostly
    the file system's work, in the kernel and under its directory's lock; here it runs on
    the other core while the main thread reads, decompresses and checks the next members.
    Each directory's files go to one thread, so the threads do not wait on one lock."""

    THREADS = 2

    def __init__(self, name_for):
        self._name_for = name_for
        self._queues = [queue.Queue() for _ in range(self.THREADS)]
        self._threads = [threading.Thread(target=self._run, args=(q,), daemon=True) for q in self._queues]
        for t in self._threads:
            t.start()

    def put(self, f: _File) -> None:
        self._queues[hash(f.parent) % self.THREADS].put(f)

    def wait(self) -> None:
        for q in self._queues:
            q.join()

    def close(self) -> None:
        for q in self._queues:
            q.put(None)
        for t in self._threads:
            t.join()

    def _run(self, q: queue.Queue) -> None:
        while (f := q.get()) is not None:
            try:
                _create(f, self._name_for)
            except BaseException as exc:  # kept for the main thread, which raises it at the commit
                f.error = exc
            finally:
                f.data = ()
                q.task_done()
        q.task_done()


def _create(f: _File, name_for) -> None:
    """Make ``f`` under a temporary name with its checked content, mode and mtime."""
    what = repr(os.fsdecode(f.parent + b"/" + f.leaf if f.parent else f.leaf))
    while True:
        tmp = name_for(f.leaf)
        try:
            out = os.open(tmp, _NEW, 0o600, dir_fd=f.fd)
            break
        except FileExistsError:
            continue  # another restore's, or an interrupted one's: the next number
        except OSError as exc:
            raise TargetError(f"cannot write {what} at the restore target: {exc}") from None
    f.tmp = tmp
    try:
        for chunk in f.data:
            _write_all(out, chunk, what)
        os.fchmod(out, f.mode)
        os.utime(out, (f.mtime, f.mtime))
        if f.sync:
            os.fsync(out)
        if f.on_written is not None:
            f.st = os.fstat(out)  # only a mark needs it
    except OSError as exc:
        raise TargetError(f"writing {what}: {exc}") from None
    finally:
        os.close(out)


class Batch:
    """The members of one target written and checked since the last commit.

    ``write`` puts a member under a temporary name and checks it; ``commit`` makes the
    batch durable and gives each its name, returning what was named; ``discard`` removes
    the temporary files of a batch that will not be committed (its copy failed). The
    caller commits when ``full`` and at the end of each archive. At the full pace a member
    of at most one CHUNK is checked first, in memory, and made by a creator thread.
    """

    def __init__(self, target_fd: int, before_names=None):
        self.target_fd = target_fd
        self.dirs: dict[bytes, int] = {}  # parent (relative) -> descriptor, for the batch's life
        self.devices: dict[int, int] = {}  # each file system written to -> a descriptor on it
        self.whole = not PACE.gentle  # one syncfs makes the batch durable: no file system written to says otherwise
        self.pending: list[_File] = []
        self.bytes = 0
        self._serial = itertools.count(secrets.randbits(32))  # next() is atomic: the threads share it
        self._creators: _Creators | None = None
        self.before_names = before_names  # called once a batch is durable, before its files get their names

    def _temp(self, leaf: bytes) -> bytes:
        """``.<leaf>.tmp-restore-<8 hex>``: numbered from a random start, not drawn at random
        for each file (a getrandom call per file is a tenth of writing a small one)."""
        return b".%s.%s-%08x" % (temp_stem(leaf), TEMP_KIND.encode(), next(self._serial) & 0xFFFFFFFF)

    @property
    def full(self) -> bool:
        return len(self.pending) >= BATCH_FILES or self.bytes >= BATCH_BYTES

    def _dir(self, parent: bytes, what: str) -> int:
        fd = self.dirs.get(parent)
        if fd is None:
            try:
                fd = self.dirs[parent] = dir_fd(self.target_fd, parent, create=True)
                dev = os.fstat(fd).st_dev
                if dev not in self.devices:  # a file system mounted inside: synced too
                    self.devices[dev] = fd
                    self.whole = self.whole and syncfs_reaches_disk(fd)
            except OSError as exc:
                raise TargetError(f"cannot make the directory of {what} at the restore target: {exc}") from None
        return fd

    def write(self, reader: ArchiveReader, member, expected_sha: str, source: str, on_written=None, tag=None) -> None:
        """``member`` to a temporary name beside its place, checked against ``expected_sha``
        (Untrusted if it differs); ``on_written(stat)`` is told of it before its batch is named,
        and ``tag`` comes back from ``commit`` with its name."""
        what = repr(os.fsdecode(member.name))
        parent, _, leaf = member.name.rpartition(b"/")
        fd = self._dir(parent, what)
        f = _File(parent, fd, leaf, on_written, tag, sync=not self.whole)
        f.mode, f.mtime = member.mode & 0o777, member.mtime
        if not PACE.gentle and member.size <= CHUNK:
            f.data = [chunk for chunk in reader.chunks(member)]  # views into immutable blocks: kept valid
            crashpoints.reach("restore.after_chunk")
            if member.sha256 != expected_sha:
                raise Untrusted(f"{what} does not match its SHA-256 in {source}")
            if self._creators is None:
                self._creators = _Creators(self._temp)
            self.pending.append(f)
            self._creators.put(f)
        else:
            self._write_here(reader, member, f, what)
            if member.sha256 != expected_sha:
                _unlink(f.tmp, f.fd)
                raise Untrusted(f"{what} does not match its SHA-256 in {source}")
            self.pending.append(f)
        self.bytes += member.size

    def _write_here(self, reader: ArchiveReader, member, f: _File, what: str) -> None:
        """A large member, or any at the gentle pace: streamed by this thread (paced, and
        fsynced on its own at the gentle pace)."""
        f.data = ()
        _create(f, self._temp)
        try:
            out = os.open(f.tmp, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=f.fd)
        except OSError as exc:
            _unlink(f.tmp, f.fd)
            raise TargetError(f"cannot write {what} at the restore target: {exc}") from None
        try:
            steps = Steps(out)  # gentle: flushed a WRITE_STEP at a time, with rests; full: nothing
            for chunk in reader.chunks(member):  # the copy's errors stay the copy's: the next destination may do
                _write_all(out, chunk, what)
                steps.wrote(len(chunk))
                crashpoints.reach("restore.after_chunk")
            os.utime(out, (f.mtime, f.mtime))  # the writes moved it
            if f.sync:
                os.fsync(out)
            if f.on_written is not None:
                f.st = os.fstat(out)
        except OSError as exc:
            os.close(out)
            _unlink(f.tmp, f.fd)
            raise TargetError(f"writing {what}: {exc}") from None
        except BaseException:
            os.close(out)
            _unlink(f.tmp, f.fd)
            raise
        os.close(out)

    def commit(self) -> list:
        """Make the batch durable, then name each file; the tags of those named."""
        if not self.pending:
            return []
        if self._creators is not None:
            self._creators.wait()
        for f in self.pending:
            if f.error is not None:
                raise f.error
        crashpoints.reach("restore.before_sync")
        named = []
        try:
            if self.whole:
                self._durable("the restored files")  # every file's data and new directory
            else:
                # Each file was synced as it was made, but for any made before the batch met a
                # file system whose syncfs does not reach the disk.
                _sync_each(f for f in self.pending if not f.sync)
            for f in self.pending:
                if f.on_written is not None:
                    f.on_written(f.st)
            if self.before_names is not None:
                self.before_names()  # what records the files (restore's marks) durable before their names
            for f in self.pending:
                what = repr(os.fsdecode(f.parent + b"/" + f.leaf if f.parent else f.leaf))
                try:
                    rename_noreplace(f.tmp, f.leaf, f.fd)
                except FileExistsError:
                    raise TargetError(
                        f"{what} appeared at the restore target while restoring; it was not overwritten"
                    ) from None
                except OSError as exc:
                    raise TargetError(f"cannot put {what} in place: {exc}") from None
                named.append(f.tag)
                crashpoints.reach("restore.after_rename")
            if self.whole:
                self._durable("the restored names")
            else:
                _dirs_durable(self.dirs.values())
        finally:
            del self.pending[: len(named)]  # named: not to be removed as temporary files
            self.discard()
        return named

    def _durable(self, what: str) -> None:
        for fd in self.devices.values() or (self.target_fd,):
            _durable(fd, what)

    def discard(self) -> None:
        """Remove what is still under a temporary name, and forget the batch."""
        if self._creators is not None:
            self._creators.wait()  # nothing is made behind the removal's back
        for f in self.pending:
            if f.tmp is not None:
                _unlink(f.tmp, f.fd)
        self.pending.clear()
        self.bytes = 0

    def close(self) -> None:
        self.discard()
        if self._creators is not None:
            self._creators.close()
            self._creators = None
        for fd in self.dirs.values():
            os.close(fd)
        self.dirs.clear()
        self.devices.clear()


def _durable(fd: int, what: str) -> None:
    try:
        syncfs(fd)
    except OSError as exc:
        raise TargetError(f"making {what} durable: {exc}") from None


def _sync_each(files) -> None:
    try:
        for f in files:
            fd = os.open(f.tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=f.fd)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as exc:
        raise TargetError(f"making the restored files durable: {exc}") from None


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
