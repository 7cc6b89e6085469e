"""Compaction of finished runs: months of state in a few files, nothing thrown away.

A run whose clean succeeded longer ago than ``compact_runs_after`` is packed, manifests and
entry files alike, into ``<state_dir>/compacted/<run_id>.tar.zst`` (written atomically,
then the run's directory is renamed away, durably, and removed). Its deletions are already in the catalogue, so
``make find`` and ``make restore FILE=`` keep working; the packed state can be read back
with ``tar -xf``.
"""

import contextlib
import os
import shutil
import stat
import time
from pathlib import Path

from ops.archive import ArchiveWriter
from ops.config import Config
from ops.errors import StepFailed
from ops.logs.steplog import StepLog
from ops.state.manifest import RUN_ID_RE, Run, list_runs
from ops.sys.atomic import atomic_file, ensure_private_dir, fsync_dir
from ops.sys.paths import NotPlainFile, open_plain_file
from ops.sys.sizes import CHUNK
from ops.sys.window import WINDOW

DIR = "compacted"


def _finished_at(run: Run) -> float | None:
    try:
        return run.ok_path("clean").stat().st_mtime
    except FileNotFoundError:
        return None


def _remove(run: Run) -> None:
    """The run's directory gone at once: renamed out of the run ids' reach and the rename
    made durable, then removed. A removal cut short (rmtree goes file by file) never leaves a
    run that looks finished with half its files, or unfinished and stuck."""
    doomed = run.dir.with_name(f".{run.id}.removing")
    os.rename(run.dir, doomed)
    fsync_dir(run.dir.parent)
    shutil.rmtree(doomed)


def _packed(target: Path) -> bool:
    """Whether the run's pack is there, in the toolkit's own compacted/ (no link followed)."""
    try:
        return stat.S_ISDIR(os.lstat(target.parent).st_mode) and stat.S_ISREG(os.lstat(target).st_mode)
    except FileNotFoundError:
        return False


def _leftovers(state_dir: Path) -> None:
    """Remove what an earlier ``_remove`` was cut short on."""
    runs = Path(state_dir) / "runs"
    if os.path.islink(runs):
        return  # not this state's runs: nothing is removed there (list_runs lists none either)
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(runs):
            if name.startswith(".") and name.endswith(".removing") and RUN_ID_RE.match(name[1 : -len(".removing")]):
                path = runs / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)


def compact_finished_runs(config: Config, log: StepLog, now: float | None = None) -> int:
    """Pack old finished runs; housekeeping, so an error here is logged, never a failed run."""
    try:
        return _compact(config, log, time.time() if now is None else now)
    except (OSError, StepFailed) as exc:
        log.event(
            "compaction_failed", f"compaction of old runs failed: {exc}; the runs stay as they are", level="warning"
        )
        return 0


def _compact(config: Config, log: StepLog, now: float) -> int:
    _leftovers(config.state_dir)
    runs = list_runs(config.state_dir)
    done = 0
    for run_id in runs[:-1]:  # never the newest: it decides what the next maintenance resumes
        WINDOW.check()  # between runs: each one is packed and removed whole, or left as it is
        run = Run(config.state_dir, run_id)
        linked = run.linked_dir()
        if linked:  # neither packed nor removed
            log.event("compaction_skipped", f"{linked} is a symbolic link; left as it is", level="warning")
            continue
        target = Path(config.state_dir) / DIR / f"{run_id}.tar.zst"
        if _packed(target):
            # Packed already: its directory is what a removal cut short left (a kill, a power
            # cut). Packing it again would replace the whole pack with the files left.
            _remove(run)
            log.event("compacted", f"run {run_id}: the rest of its directory removed", run_compacted=run_id)
            continue
        finished = _finished_at(run)
        if finished is None or now - finished < config.compact_runs_after.seconds:
            continue
        ensure_private_dir(target.parent, own=True)
        with atomic_file(target) as f:
            writer = ArchiveWriter(f, "zstd")
            for name in sorted(os.listdir(run.dir)):
                if name.startswith("."):
                    continue  # a temporary file of a crashed write: not part of the run's record
                try:
                    src = open_plain_file(run.dir / name)
                except NotPlainFile:
                    continue  # a link, FIFO or directory is not the toolkit's: never read through
                with src:
                    st = os.fstat(src.fileno())
                    writer.add(
                        f"{run_id}/{name}".encode(),
                        st.st_size,
                        int(st.st_mtime),
                        0o600,
                        st.st_uid,
                        st.st_gid,
                        iter(lambda src=src: src.read(CHUNK), b""),
                    )
            writer.close()
        _remove(run)
        log.event("compacted", f"run {run_id} state packed into {target}", run_compacted=run_id)
        done += 1
    return done
