"""What is durable on the power-cut layer, and the rebuild that keeps only that.

The model is POSIX's, as ext4 implements it, made stricter where that is cheap:

- a file's data is durable after ``fsync``/``fdatasync`` of that file; until then each
  write can be undone. At a cut, a random prefix of a file's writes since its last fsync
  survives, never all of them, and the first write lost may survive torn (a prefix of its
  bytes). Stricter than ext4, which often writes everything back in time;
- a directory's entries (create, link, rename, unlink, mkdir, rmdir) are durable after
  ``fsync`` of that directory. At a cut, every directory changed since its last fsync gets
  back the entries it had then, whole. Stricter than ext4, which commits a new file's name
  with the file's own fsync and keeps a rename whose journal transaction committed;
- inode metadata (mode, owner, times) is kept as it is at the cut.

The live tree is the backing directory itself; the ledger keeps what undoes it. Inodes
are named by their number in the backing file system: a file unlinked or replaced is
first linked into the graveyard (and a removed directory moved there), so its inode and
content live on until the cut decides whether a durable name still points at it. The
rebuild then undoes the writes not synced, and puts every changed directory back to its
durable entries in place, so every inode that survives keeps its number.
"""

import os
import random
import shutil
import stat
from dataclasses import dataclass, field


@dataclass
class Undo:
    """How to undo one write or truncate: write ``old`` back at ``offset``, then cut the
    file to ``old_size``. ``written``: how many bytes the write put there (0: a truncate)."""

    offset: int
    old_size: int
    old: bytes
    written: int


@dataclass
class Dropped:
    """What a rebuild left out: the counts the campaign's table reports."""

    writes: int = 0  # writes and truncates undone, whole or torn
    torn: int = 0
    entries: int = 0  # directory changes undone (entries added, removed or repointed)
    problems: list = field(default_factory=list)


class Ledger:
    def __init__(self, root: str, grave: str):
        self.root = root  # the backing directory: the live tree
        self.grave = grave  # same file system, outside the tree
        self.dirty: dict[int, dict[str, int]] = {}  # dir inode -> its entries at its last fsync
        self.undo: dict[int, list[Undo]] = {}  # file inode -> its writes since its last fsync

    # -- recording, called by the layer before each change ---------------------------------

    def dir_changing(self, path: str) -> None:
        """``path`` (a backing directory) is about to change: remember its durable entries."""
        ino = os.lstat(path).st_ino
        if ino not in self.dirty:
            self.dirty[ino] = {name: os.lstat(os.path.join(path, name)).st_ino for name in os.listdir(path)}

    def dir_created(self, path: str) -> None:
        """A new directory: none of its entries is durable yet (nor its own name)."""
        self.dirty[os.lstat(path).st_ino] = {}

    def dir_synced(self, path: str) -> None:
        self.dirty.pop(os.lstat(path).st_ino, None)

    def before_write(self, fd: int, offset: int, length: int, append: bool) -> None:
        st = os.fstat(fd)
        if append:
            offset = st.st_size
        overlap = max(0, min(offset + length, st.st_size) - offset)
        old = os.pread(fd, overlap, offset) if overlap else b""
        self.undo.setdefault(st.st_ino, []).append(Undo(offset, st.st_size, old, length))

    def before_truncate(self, fd: int, length: int) -> None:
        st = os.fstat(fd)
        old = os.pread(fd, st.st_size - length, length) if length < st.st_size else b""
        self.undo.setdefault(st.st_ino, []).append(Undo(length, st.st_size, old, 0))

    def file_synced(self, fd: int) -> None:
        self.undo.pop(os.fstat(fd).st_ino, None)

    def bury(self, path: str) -> None:
        """Keep the inode at ``path`` (about to be unlinked or replaced) alive in the graveyard."""
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            os.rename(path, os.path.join(self.grave, f"d{st.st_ino}"))
            return
        keep = os.path.join(self.grave, str(st.st_ino))
        if not os.path.lexists(keep):
            os.link(path, keep, follow_symlinks=False)

    # -- the cut ----------------------------------------------------------------------------

    def rebuild(self, rng: random.Random) -> Dropped:
        """Bring the backing tree back to its durable state, in place: every inode that
        survives keeps its number and, where nothing undid it, its ctime, as on a disk after
        a power cut (clean and backup compare both). The layer is unmounted."""
        dropped = Dropped()
        where = self._inodes()
        for ino, undos in self.undo.items():
            if ino in where:
                self._roll_back(where[ino], undos, rng, dropped)
        grave = os.open(self.grave, os.O_RDONLY | os.O_DIRECTORY)
        dirs = {ino: os.open(where[ino], os.O_RDONLY | os.O_DIRECTORY) for ino in self.dirty if ino in where}
        try:
            for ino, fd in dirs.items():  # first, everything not durable goes to the graveyard
                durable = self.dirty[ino]
                for name in os.listdir(fd):
                    st = os.lstat(name, dir_fd=fd)
                    if durable.get(name) != st.st_ino:
                        _take_out(name, st, fd, grave)
                        dropped.entries += 1
            for ino, fd in dirs.items():  # then each durable entry missing comes back
                for name, want in self.dirty[ino].items():
                    if _lexists(name, fd):
                        continue
                    if _lexists(f"d{want}", grave):
                        os.rename(f"d{want}", name, src_dir_fd=grave, dst_dir_fd=fd)
                    elif _lexists(str(want), grave):
                        os.link(str(want), name, src_dir_fd=grave, dst_dir_fd=fd, follow_symlinks=False)
                    elif want not in where:
                        dropped.problems.append(f"{where[ino]}/{name}: inode {want} is durable but was not kept")
                        continue
                    else:
                        continue  # a directory durable in two places (a rename half synced): it stays where it is
                    dropped.entries += 1
        finally:
            for fd in dirs.values():
                os.close(fd)
            os.close(grave)
        for name in os.listdir(self.grave):  # what no durable name points at is gone
            p = os.path.join(self.grave, name)
            shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
        self.dirty.clear()
        self.undo.clear()
        return dropped

    def _inodes(self) -> dict[int, str]:
        """inode -> one backing path of it, live tree and graveyard."""
        where: dict[int, str] = {}
        for top in (self.grave, self.root):  # the live path wins: it is the one written last
            for dirpath, dirnames, filenames in os.walk(top):
                where[os.lstat(dirpath).st_ino] = dirpath
                for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                    p = os.path.join(dirpath, name)
                    where[os.lstat(p).st_ino] = p
        return where

    @staticmethod
    def _roll_back(path: str, undos: list[Undo], rng: random.Random, dropped: Dropped) -> None:
        # The writes that made it to the disk: a prefix, never all of them (the cut came
        # before the last one was written back, at the latest).
        keep = rng.randint(0, len(undos) - 1)
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return
        fd = os.open(path, os.O_RDWR)
        try:
            for i in range(len(undos) - 1, keep - 1, -1):
                u = undos[i]
                torn = b""
                if i == keep and u.written > 1 and rng.random() < 0.5:
                    torn = os.pread(fd, rng.randint(1, u.written - 1), u.offset)
                if u.old:
                    os.pwrite(fd, u.old, u.offset)
                os.ftruncate(fd, u.old_size)
                if torn:
                    os.pwrite(fd, torn, u.offset)
                    dropped.torn += 1
                dropped.writes += 1
        finally:
            os.close(fd)


def _lexists(name: str, dir_fd: int) -> bool:
    try:
        os.lstat(name, dir_fd=dir_fd)
        return True
    except FileNotFoundError:
        return False


def _take_out(name: str, st: os.stat_result, fd: int, grave: int) -> None:
    """Move a name that is not durable out of its directory, keeping its inode in the graveyard."""
    if stat.S_ISDIR(st.st_mode):
        os.rename(name, f"d{st.st_ino}", src_dir_fd=fd, dst_dir_fd=grave)
        return
    if not _lexists(str(st.st_ino), grave):
        os.link(name, str(st.st_ino), src_dir_fd=fd, dst_dir_fd=grave, follow_symlinks=False)
    os.unlink(name, dir_fd=fd)
