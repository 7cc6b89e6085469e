"""The gentle pace really paces (ops/sys/pace.py): a backup never holds more than a step
of dirty archive data, whatever the file's size; clean commits small batches and rests;
what was rested is reported per step; and the operator's --pace / PACE= / pace: choose it.

The dirty-page count is the kernel's own, per file (the cachestat system call, Linux 6.5),
sampled from this test process while the real backup script writes its archive. The one
thing not real is the slow disk in the governor test: it is a sync_file_range replaced by
one that sleeps, since this machine's disk cannot be made slow on demand.
"""

import ctypes
import errno
import glob
import json
import os
import subprocess
import threading
import time

import pytest

from ops.maintenance.cleanup.step import GENTLE_UNLINK_BATCH, GENTLE_UNLINK_WORKERS, UNLINK_WORKERS
from ops.maintenance.cleanup.unlink import Unlinker
from ops.sys import atomic, pace, priority
from ops.sys.pace import PACE, Pace
from ops.sys.paths import stat_key
from ops.sys.sizes import CHUNK, MiB
from tools.sandbox import SCRIPTS

_CACHESTAT = 451  # the same number on every architecture (the generic syscall table)


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Stat(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("cache", "dirty", "writeback", "evicted", "recently_evicted")]


_libc = ctypes.CDLL(None, use_errno=True)


def dirty_bytes(fd: int) -> int:
    """Bytes of the file behind ``fd`` that are dirty in the page cache, as the kernel
    counts them (cachestat). ENOSYS (a kernel before 6.5) is raised as it is."""
    st = _Stat()
    if _libc.syscall(_CACHESTAT, fd, ctypes.byref(_Range(0, 0)), ctypes.byref(st), 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return st.dirty * os.sysconf("SC_PAGE_SIZE")


def _need_cachestat(tmp_path):
    """This machine's kernel (6.18) has cachestat, so here the test always runs; on a
    kernel before 6.5 the one thing it needs is missing, and it says so. Any other error
    of the call is the test's failure, not a skip."""
    probe = tmp_path / "probe"
    probe.write_bytes(b"x" * 8192)
    with open(probe, "rb") as f:
        try:
            dirty_bytes(f.fileno())
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
            pytest.skip("this kernel has no cachestat system call (Linux 6.5+) to count a file's dirty pages")


class DirtyWatch:
    """Samples, every half millisecond, the dirty bytes of every archive being staged under
    ``backups`` (the files of a ``.<run>.tmp-<pid>`` directory), and keeps the largest."""

    def __init__(self, backups):
        self.pattern = str(backups / ".*.tmp-*" / "*.tar*")
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._open: dict[str, int] = {}
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for path in glob.glob(self.pattern):
                if path not in self._open:
                    try:
                        self._open[path] = os.open(path, os.O_RDONLY)
                    except FileNotFoundError:
                        continue
            for fd in self._open.values():
                self.samples += 1
                self.peak = max(self.peak, dirty_bytes(fd))
            time.sleep(0.0005)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        for fd in self._open.values():
            os.close(fd)


def _big_source(sandbox, size: int) -> None:
    sandbox.config["backup"]["compression"] = "none"  # the archive's bytes are the file's: no codec to wait on
    sandbox.file("big/day.log", os.urandom(size))
    sandbox.write_config()


@pytest.mark.parametrize("chosen", ["gentle", "full"])
def test_a_gentle_backup_never_holds_more_than_a_step_of_dirty_archive(sandbox, tmp_path, chosen):
    _need_cachestat(tmp_path)
    _big_source(sandbox, 96 * MiB)
    assert sandbox.run("scan").returncode == 0
    with DirtyWatch(sandbox.backups) as watch:
        r = sandbox.run("backup", "--pace", chosen)
    assert r.returncode == 0, r.stderr
    assert watch.samples > 100, "the archive was never seen being written"
    bound = pace.WRITE_STEP + CHUNK  # a step, and the block being written when it was reached
    if chosen == "gentle":
        assert watch.peak <= bound, f"{watch.peak / MiB:.1f} MiB dirty at once, above {bound / MiB:.2f} MiB"
    else:  # the probe sees what it is for: at full pace the kernel is left a burst of writeback
        assert watch.peak > 4 * bound, f"only {watch.peak / MiB:.1f} MiB dirty at full pace"


def test_gentle_clean_commits_small_batches_and_reports_its_rests(sandbox):
    sandbox.config["metrics_file"] = "var/metrics/qts.prom"
    sandbox.write_config()
    files = GENTLE_UNLINK_BATCH * 3  # one directory: at full pace, one batch for one of 16 workers
    for i in range(files):
        sandbox.file(f"d/{i}.log", f"line {i}\n")
    r = sandbox.run("maintenance")
    assert r.returncode == 0, r.stderr
    clean = json.loads((sandbox.run_dir() / "clean.ok.json").read_text())
    assert (clean["pace"], clean["deleted"]) == ("gentle", files)
    assert (clean["unlink_workers"], clean["unlink_batches"]) == (GENTLE_UNLINK_WORKERS, 3)
    assert clean["throttled_s"] > 0, "clean rested after none of its batches"
    metrics = (sandbox.base / "var/metrics/qts.prom").read_text()
    assert f'qts_ops_step_throttled_seconds{{step="clean"}} {clean["throttled_s"]}' in metrics
    status = sandbox.run("status", env={"COLUMNS": "250"})
    assert "rested" in status.stdout, status.stdout


def test_full_pace_does_not_rest(sandbox):
    for i in range(GENTLE_UNLINK_BATCH * 3):
        sandbox.file(f"d/{i}.log", f"line {i}\n")
    sandbox.config["pace"] = "full"
    sandbox.write_config()
    assert sandbox.run("maintenance").returncode == 0
    for step in ("scan", "backup", "verify", "clean"):
        doc = json.loads((sandbox.run_dir() / f"{step}.ok.json").read_text())
        assert (doc["pace"], doc["throttled_s"]) == ("full", 0)
    assert (doc["unlink_workers"], doc["unlink_batches"]) == (UNLINK_WORKERS, 1)


def test_the_command_line_pace_wins_over_the_config_and_make_passes_it(sandbox):
    sandbox.file("a.log", "old\n")
    sandbox.config["pace"] = "full"
    sandbox.write_config()
    r = subprocess.run(
        ["make", "-s", "-C", str(SCRIPTS.parent), "maintenance", f"CONFIG={sandbox.config_path}", "PACE=gentle"],
        capture_output=True,
        text=True,
        env={**os.environ, "QTS_OPS_PRIORITY": "normal"},
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((sandbox.run_dir() / "clean.ok.json").read_text())["pace"] == "gentle"


@pytest.mark.parametrize("bad", ["fast", "", 3])
def test_an_unknown_pace_is_refused_naming_the_key_and_file(sandbox, bad):
    sandbox.config["pace"] = bad
    sandbox.write_config()
    r = sandbox.run("maintenance")
    assert r.returncode == 78
    assert "pace" in r.stderr and str(sandbox.config_path) in r.stderr
    r = sandbox.run("backup", "--pace", "fast")
    assert r.returncode == 64 and "--pace" in r.stderr


def test_a_slow_flush_is_followed_by_a_longer_rest(tmp_path, monkeypatch):
    """The governor: the slower the disk answers, the longer the step leaves it alone."""
    slow = []

    def slow_disk(fd, offset, length, flags):
        time.sleep(slow[-1])
        return 0

    monkeypatch.setattr(pace, "_sync_file_range", slow_disk)
    with open(tmp_path / "f", "wb") as f:
        for delay in (0.002, 0.02):
            gentle = Pace("gentle")
            slow.append(delay)
            started = time.monotonic()
            gentle.flush_range(f.fileno(), 0, 4096)
            took = time.monotonic() - started
            assert gentle.throttled_s >= delay * pace.REST_FACTOR
            assert took >= delay * (1 + pace.REST_FACTOR)
        full = Pace("full")
        full.flush_range(f.fileno(), 0, 4096)
        assert full.throttled_s == 0


def test_a_file_system_without_sync_file_range_is_paced_with_fdatasync(tmp_path, monkeypatch):
    """A file system that answers EINVAL (some FUSE ones) cannot be mounted here on demand,
    so that one call is replaced; the fdatasync it falls back to is real."""
    synced = []
    real = os.fdatasync

    def einval(fd, offset, length, flags):
        ctypes.set_errno(errno.EINVAL)
        return -1

    monkeypatch.setattr(pace, "_sync_file_range", einval)
    monkeypatch.setattr(pace.os, "fdatasync", lambda fd: synced.append(fd) or real(fd))
    with open(tmp_path / "f", "wb") as f:
        f.write(b"x" * 4096)
        Pace("gentle").flush_range(f.fileno(), 0, 4096)
        assert synced == [f.fileno()]


def test_rests_too_short_to_take_are_owed_not_forgotten():
    gentle = Pace("gentle")
    quick = pace.MIN_REST / pace.REST_FACTOR / 4  # a flush whose rest alone is a quarter of the shortest
    taken = [gentle.rest_after(quick) for _ in range(8)]
    assert taken.count(0.0) == 6 and sum(taken) == pytest.approx(8 * quick * pace.REST_FACTOR)
    assert gentle.throttled_s == pytest.approx(sum(taken))


def test_gentle_steps_yield_the_cpu_at_once(monkeypatch):
    """SCHED_IDLE at the gentle pace; at full the test's own policy is kept, with nice 10.
    Set in a forked child, which is what a step is (the test process keeps its own)."""
    monkeypatch.delenv("QTS_OPS_PRIORITY", raising=False)
    for gentle, policy in ((True, os.SCHED_IDLE), (False, os.sched_getscheduler(0))):
        pid = os.fork()
        if pid == 0:
            ok = False
            try:
                priority.lower_priority(gentle)
                ok = os.sched_getscheduler(0) == policy and os.getpriority(os.PRIO_PROCESS, 0) >= priority.NICE
            except BaseException:
                pass
            finally:
                os._exit(0 if ok else 1)
        assert os.waitpid(pid, 0)[1] == 0, f"gentle={gentle}: not {policy}"


def test_changing_the_pace_between_steps_continues_the_run(sandbox):
    """The pace decides nothing about deletion: it is no part of a run's identity."""
    sandbox.file("a.log", "old\n")
    assert sandbox.run("scan").returncode == 0
    run = sandbox.runs()[-1]
    sandbox.config["pace"] = "full"
    sandbox.write_config()
    r = sandbox.run("maintenance")
    assert r.returncode == 0, r.stderr
    assert sandbox.runs() == [run] and not (sandbox.data / "logs/a.log").exists()
    assert json.loads((sandbox.run_dir(run) / "clean.ok.json").read_text())["pace"] == "full"


def test_a_failed_commit_after_a_batch_of_unlinks_is_said_in_the_log(tmp_path, monkeypatch):
    """A directory fsync that fails with EIO cannot be produced for real here (it needs a
    failing disk), so that one call is replaced; the files and their unlinks are real."""
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    items = []
    for i in range(3):
        f = root / "d" / f"{i}.log"
        f.write_text("x")
        items.append((f"d/{i}.log", stat_key(os.lstat(f)), None))
    lines = []

    class Log:
        def line(self, event, msg="", level="info", **fields):
            return (json.dumps({"event": event, "msg": msg, "level": level, **fields}) + "\n").encode()

        def write(self, data):
            lines.extend(json.loads(x) for x in data.decode().splitlines())

    def eio(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(PACE, "gentle", True)
    monkeypatch.setattr(atomic.os, "fsync", eio)
    st = os.stat(root)
    results, rested = Unlinker(Log())(("logs", str(root), (st.st_dev, st.st_ino), items))
    assert [r[0] for r in results] == ["deleted"] * 3 and rested == 0
    failed = [x for x in lines if x["event"] == "commit_failed"]
    assert len(failed) == 1 and failed[0]["level"] == "warning" and "Input/output error" in failed[0]["msg"]


@pytest.mark.parametrize("chosen", ["gentle", "full"])
def test_restore_keeps_the_pace_and_says_so_in_its_log(sandbox, chosen):
    sandbox.file("big.log", os.urandom(2 * MiB))
    assert sandbox.run("maintenance").returncode == 0
    run = sandbox.runs()[-1]
    r = sandbox.run("restore", "--run", run, "--to", str(sandbox.base / "back"), "--pace", chosen)
    assert r.returncode == 0, r.stderr
    assert (sandbox.base / "back").exists()
    used = [
        json.loads(line)
        for path in sandbox.logs.glob("ops-*.log")
        for line in path.read_text().splitlines()
        if '"destination_used"' in line
    ]
    assert [u["pace"] for u in used] == [chosen]
    assert (used[0]["throttled_s"] > 0) == (chosen == "gentle")
