"""The power-cut layer: a FUSE file system passing every operation through to a backing
directory while its ``Ledger`` records what is not durable yet.

``Power`` mounts the layer in a child process; a power cut unmounts it, the child rebuilds
the backing directory from the durable state only, and a new child mounts it again. A cut
armed at an operation count comes first: the layer answers that operation and every later
one with EIO and SIGKILLs the process group that asked, as a power cut stops every
process at once: nothing after the cut reaches the disk.

Mutating operations and syncs are counted (``ops``); reads are not, since a cut between
two reads changes nothing.
"""

import contextlib
import errno
import fcntl
import json
import os
import random
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

try:
    import mfusepy

    _Operations, _FUSEBase = mfusepy.Operations, mfusepy.FUSE
except OSError:  # no libfuse on this host: fuse_missing() says so, and nothing mounts
    mfusepy = None
    _Operations = _FUSEBase = object

from tools.powercut.ledger import Ledger

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


class _Cut(Exception):
    pass


class PowerCutFS(_Operations):
    use_ns = True

    def __init__(self, ledger: Ledger, cut_at: int | None, spare_pgid: int):
        self.ledger = ledger
        self.root = ledger.root
        self.cut_at = cut_at
        self.spare_pgid = spare_pgid  # the campaign's own process group: never killed
        self.ops = 0
        self.dead = False
        self.cut_op = ""
        self.appending: set[int] = set()  # file handles opened with O_APPEND

    def _p(self, path: str) -> str:
        return self.root + path

    def _tick(self, what: str, path: str) -> None:
        """Count one mutating operation; at ``cut_at`` the power goes."""
        if self.dead:
            raise mfusepy.FuseOSError(errno.EIO)
        self.ops += 1
        if self.cut_at is not None and self.ops >= self.cut_at:
            self.dead = True
            self.cut_op = f"{what} {path}"
            _uid, _gid, pid = mfusepy.fuse_get_context()
            try:
                # pid 0: a request the kernel makes itself (getpgid(0) would name our own group)
                pgid = os.getpgid(pid) if pid > 0 else None
                if pgid not in (None, self.spare_pgid, os.getpgrp()):
                    os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            raise mfusepy.FuseOSError(errno.EIO)

    def _live(self) -> None:
        if self.dead:
            raise mfusepy.FuseOSError(errno.EIO)

    # -- reads ------------------------------------------------------------------------------

    def getattr(self, path, fh=None):
        self._live()
        if path.startswith(ARM):
            self.cut_at = self.ops + int(path[len(ARM) :])
            raise mfusepy.FuseOSError(errno.ENOENT)
        st = os.fstat(fh) if fh is not None else os.lstat(self._p(path))
        keys = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks", "st_blksize")
        got = {k: getattr(st, k) for k in keys}
        got.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
        return got

    def readdir(self, path, fh):
        self._live()
        # With use_ino the entries carry the backing inode: one of 0 is skipped by readdir(3).
        full = self._p(path)
        dots = [(n, {"st_ino": os.lstat(p).st_ino, "st_mode": stat.S_IFDIR}, 0) for n, p in ((".", full), ("..", full))]
        with os.scandir(full) as it:
            return dots + [(e.name, {"st_ino": e.inode(), "st_mode": _type(e)}, 0) for e in it]

    def readlink(self, path):
        self._live()
        return os.readlink(self._p(path))

    def statfs(self, path):
        self._live()
        sv = os.statvfs(self._p(path))
        keys = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_favail", "f_namemax")
        return {k: getattr(sv, k) for k in keys}

    def access(self, path, amode):
        self._live()
        if not os.access(self._p(path), amode, follow_symlinks=False):
            raise mfusepy.FuseOSError(errno.EACCES)
        return 0

    def open(self, path, flags):
        self._live()
        if flags & os.O_TRUNC:
            self._tick("truncate", path)
            fd = os.open(self._p(path), os.O_RDWR)
            try:
                self.ledger.before_truncate(fd, 0)
            finally:
                os.close(fd)
        if flags & os.O_ACCMODE == os.O_WRONLY:  # the ledger reads what a write overwrites
            flags = (flags & ~os.O_ACCMODE) | os.O_RDWR
        fd = os.open(self._p(path), flags & ~os.O_CREAT)
        if flags & os.O_APPEND:
            self.appending.add(fd)
        return fd

    def read(self, path, size, offset, fh):
        self._live()
        return os.pread(fh, size, offset)

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        self.appending.discard(fh)
        os.close(fh)
        return 0

    def opendir(self, path):
        self._live()
        return 0

    def releasedir(self, path, fh):
        return 0

    # -- data -------------------------------------------------------------------------------

    def _entry(self, what: str, path: str) -> str:
        """Count an operation on ``path``'s entry, its directory's durable entries kept first:
        the backing path to change."""
        self._tick(what, path)
        full = self._p(path)
        self.ledger.dir_changing(os.path.dirname(full))
        return full

    def create(self, path, mode, fi=None):
        return os.open(self._entry("create", path), os.O_RDWR | os.O_CREAT, mode)

    def write(self, path, data, offset, fh):
        self._tick("write", path)
        self.ledger.before_write(fh, offset, len(data), fh in self.appending)
        if fh in self.appending:
            return os.write(fh, data)
        return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        self._tick("truncate", path)
        fd = os.open(self._p(path), os.O_RDWR)
        try:
            self.ledger.before_truncate(fd, length)
            os.ftruncate(fd, length)
        finally:
            os.close(fd)
        return 0

    def fsync(self, path, datasync, fh):
        self._tick("fsync", path)
        self.ledger.file_synced(fh)
        return 0

    def fsyncdir(self, path, datasync, fh):
        self._tick("fsyncdir", path)
        self.ledger.dir_synced(self._p(path))
        return 0

    # -- directory entries ------------------------------------------------------------------

    def mkdir(self, path, mode):
        full = self._entry("mkdir", path)
        os.mkdir(full, mode)
        self.ledger.dir_created(full)
        return 0

    def rmdir(self, path):
        self._tick("rmdir", path)
        full = self._p(path)
        if os.listdir(full):
            raise mfusepy.FuseOSError(errno.ENOTEMPTY)
        self.ledger.dir_changing(os.path.dirname(full))
        self.ledger.bury(full)  # moves it away: the rmdir itself
        return 0

    def unlink(self, path):
        full = self._entry("unlink", path)
        self.ledger.bury(full)
        os.unlink(full)
        return 0

    def rename(self, old, new, flags=0):
        self._tick("rename", f"{old} -> {new}")
        src, dst = self._p(old), self._p(new)
        if flags & RENAME_EXCHANGE or flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE):
            raise mfusepy.FuseOSError(errno.EINVAL)
        os.lstat(src)  # ENOENT before anything is recorded
        if os.path.lexists(dst):
            if flags & RENAME_NOREPLACE:
                raise mfusepy.FuseOSError(errno.EEXIST)
            if stat.S_ISDIR(os.lstat(dst).st_mode) != stat.S_ISDIR(os.lstat(src).st_mode):
                raise mfusepy.FuseOSError(errno.EISDIR if stat.S_ISDIR(os.lstat(dst).st_mode) else errno.ENOTDIR)
            if stat.S_ISDIR(os.lstat(dst).st_mode) and os.listdir(dst):
                raise mfusepy.FuseOSError(errno.ENOTEMPTY)
        self.ledger.dir_changing(os.path.dirname(src))
        self.ledger.dir_changing(os.path.dirname(dst))
        if os.path.lexists(dst) and os.lstat(dst).st_ino != os.lstat(src).st_ino:
            self.ledger.bury(dst)
        os.rename(src, dst)
        return 0

    def link(self, target, source):
        os.link(self._p(source), self._entry("link", target), follow_symlinks=False)
        return 0

    def symlink(self, target, source):
        os.symlink(source, self._entry("symlink", target))
        return 0

    # -- metadata (kept as it is at the cut) ------------------------------------------------

    def chmod(self, path, mode):
        self._tick("chmod", path)
        os.chmod(self._p(path), mode)
        return 0

    def chown(self, path, uid, gid):
        self._tick("chown", path)
        os.lchown(self._p(path), uid, gid)
        return 0

    def utimens(self, path, times=None):
        self._tick("utimens", path)
        os.utime(self._p(path), ns=times, follow_symlinks=False)
        return 0


def _type(entry: os.DirEntry) -> int:
    return stat.S_IFMT(entry.stat(follow_symlinks=False).st_mode)


class _FUSE(_FUSEBase):
    """mfusepy drops rename's flags; restore relies on RENAME_NOREPLACE, so pass them on."""

    def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
        return self.operations.rename(
            old.decode(self.encoding, self.errors), new.decode(self.encoding, self.errors), flags
        )


# Every campaign and test on this host takes it to mount or unmount (``Power``).
LOCK = Path(tempfile.gettempdir()) / "qts-ops-powercut.lock"
SERVER_PID = "server.pid"  # beside a layer's backing directory: its server, for a clean-up after an interrupt
ARM = "/.powercut-arm-"  # stat of <mount>/.powercut-arm-<n>: the power goes at the n-th operation from now


def _serve(backing: Path, grave: Path, mnt: Path, seed: int, report: Path, spare: int) -> None:
    """The child: serve until unmounted, then rebuild from the durable state and report."""
    os.umask(0)  # the kernel applied the caller's umask already
    ledger = Ledger(str(backing), str(grave))
    fs = PowerCutFS(ledger, None, spare)
    _FUSE(fs, str(mnt), foreground=True, nothreads=True, fsname="powercut", use_ino=True)
    dropped = ledger.rebuild(random.Random(seed))
    doc = {"ops": fs.ops, "cut": fs.dead, "cut_op": fs.cut_op, **dropped.__dict__}
    tmp = report.with_name(report.name + ".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.rename(report)


class Power:
    """The layer over ``base``/backing, mounted at ``base``/mnt, and its power switch.

    ``cut`` is one power cut: unmount, rebuild from the durable state, mount again. Every
    mount and unmount runs under ``lock`` (shared by every campaign worker), so that the new
    mount gets back the device number the old one freed, as a disk keeps its number across
    a power cut: a policy root's device and inode are part of what scan recorded and clean
    compares.
    """

    def __init__(self, base: Path, lock: Path, seed: int = 0):
        self.base = base
        self.backing, self.grave, self.mnt = base / "backing", base / "grave", base / "mnt"
        for d in (self.backing, self.grave, self.mnt):
            d.mkdir(parents=True, exist_ok=True)
        self.lock = lock
        self.rng = random.Random(seed)
        self.report_path = base / "session.json"
        self.pid = 0
        self.lock_fd: int | None = None
        self.dev = None
        self.renumbered = 0  # cuts after which the mount came back with another device number

    def on(self) -> None:
        self.report_path.unlink(missing_ok=True)
        spare, seed = os.getpgrp(), self.rng.randrange(1 << 32)
        self.pid = os.fork()
        if self.pid == 0:
            code = 1
            try:
                if self.lock_fd is not None:
                    os.close(self.lock_fd)  # a child holding the campaign's lock would keep it forever
                os.setpgid(0, 0)  # never in the group a cut kills
                null = os.open(os.devnull, os.O_RDWR)
                log = os.open(self.base / "server.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                for fd, to in ((0, null), (1, null), (2, log)):
                    os.dup2(to, fd)
                _serve(self.backing, self.grave, self.mnt, seed, self.report_path, spare)
                code = 0
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        (self.base / SERVER_PID).write_text(str(self.pid))
        deadline = time.monotonic() + 10
        while not os.path.ismount(self.mnt):
            if time.monotonic() > deadline or os.waitpid(self.pid, os.WNOHANG)[0]:
                raise RuntimeError("the power-cut layer did not mount (is fuse3 installed and /dev/fuse there?)")
            time.sleep(0.002)
        dev = os.stat(self.mnt).st_dev
        self.renumbered += self.dev is not None and dev != self.dev
        self.dev = dev

    def arm(self, n: int) -> None:
        """The power goes at the ``n``-th mutating operation from now."""
        try:
            os.stat(f"{self.mnt}{ARM}{n}")
        except FileNotFoundError:
            pass

    def off(self) -> dict:
        """Unmount (the power goes, if the cut has not come already) and wait for the
        rebuild: its report (operations, whether it was cut, what was dropped)."""
        for attempt in range(200):
            r = subprocess.run(["fusermount3", "-u", "-q", str(self.mnt)], capture_output=True)
            if r.returncode == 0 or not os.path.ismount(self.mnt):
                break
            time.sleep(0.01 if attempt < 100 else 0.05)  # a killed process still closing its files
        else:
            subprocess.run(["fusermount3", "-u", "-z", "-q", str(self.mnt)], capture_output=True)
        if not self.pid:
            return {}  # off already
        _pid, status = os.waitpid(self.pid, 0)
        self.pid = 0
        if os.waitstatus_to_exitcode(status) != 0 or not self.report_path.exists():
            log = self.base / "server.log"
            said = log.read_text(errors="replace")[-800:] if log.exists() else ""
            raise RuntimeError(f"the power-cut layer failed (exit {os.waitstatus_to_exitcode(status)}): {said}")
        return json.loads(self.report_path.read_text())

    @contextlib.contextmanager
    def _switching(self):
        """Mounts and unmounts one at a time across the campaign's workers: a mount takes the
        lowest free device number, so a cut's new mount gets back the one its old mount freed."""
        self.lock_fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(self.lock_fd)
            self.lock_fd = None

    def cut(self) -> dict:
        """One power cut: off, rebuilt, on again; the report of the power-on that ended."""
        with self._switching():
            report = self.off()
            self.on()
        return report

    def __enter__(self) -> "Power":
        with self._switching():
            self.on()
        return self

    def __exit__(self, *exc) -> None:
        with self._switching():
            self.off()


_CAP_SYS_ADMIN = 21


def fuse_missing() -> str | None:
    """Why the layer cannot mount here, or None."""
    try:
        st = os.stat("/dev/fuse")
    except FileNotFoundError:
        return "/dev/fuse is missing (FUSE is not available on this machine)"
    if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != (10, 229):
        return "/dev/fuse is not the FUSE device (character device 10:229)"
    if not any(os.path.exists(p) for p in ("/bin/fusermount3", "/usr/bin/fusermount3")):
        return "fusermount3 is missing (apt-get install fuse3)"
    if mfusepy is None or mfusepy.fuse_version_major != 3:
        return "libfuse3 is missing (apt-get install fuse3)"
    if os.geteuid() != 0:
        return "mounting the layer needs root"
    with open("/proc/self/status") as f:
        caps = next((int(line.split()[1], 16) for line in f if line.startswith("CapEff:")), 0)
    if not caps >> _CAP_SYS_ADMIN & 1:
        return "mounting the layer needs CAP_SYS_ADMIN, which this process lacks (a container without it?)"
    return None
