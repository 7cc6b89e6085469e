"""A local directory destination: ``<path>/<run_id>/`` per published run."""

import os
import shutil
from pathlib import Path
from typing import BinaryIO

from ops.atomic import PRIVATE_DIR, PRIVATE_FILE, ensure_private_dir, fsync_dir
from ops.destinations.base import Destination, DestinationError, Staging
from ops.manifest import RUN_ID_RE
from ops import crashpoints


class LocalStaging(Staging):
    def __init__(self, final: Path, staging: Path):
        self.final = final
        self.dir = staging
        self._files: list[BinaryIO] = []

    def create(self, name: str) -> BinaryIO:
        fd = os.open(self.dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
        f = os.fdopen(fd, "wb", buffering=1 << 20)
        self._files.append(f)
        return f

    def publish(self) -> None:
        # Data first, then the names: fsync every file, then the staging directory, then
        # rename it into place and fsync the parent, so after a crash the run is either
        # absent (staging left behind, ignored) or complete.
        for f in self._files:
            f.flush()
            os.fsync(f.fileno())
            f.close()
        self._files.clear()
        fsync_dir(self.dir)
        crashpoints.reach("publish.before_rename")
        if self.final.exists():
            raise DestinationError(f"{self.final} already exists; refusing to overwrite a published run")
        os.rename(self.dir, self.final)
        try:
            fsync_dir(self.final.parent)
        except OSError:
            # An fsync error is never retried and trusted: the run goes back to staging
            # (abort discards it), so no rerun can adopt a run that may not be on disk.
            os.rename(self.final, self.dir)
            raise

    def abort(self) -> None:
        for f in self._files:
            try:
                f.close()
            except OSError:
                pass  # a file whose flush fails (disk full) is discarded with the rest
        self._files.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


class LocalDestination(Destination):
    def __init__(self, name: str, path: Path):
        super().__init__(name)
        self.path = Path(path)

    def describe(self) -> str:
        return f"{self.name} ({self.path})"

    def has_run(self, run_id: str) -> bool:
        return (self.path / run_id).is_dir()

    def list_runs(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.path) if RUN_ID_RE.match(n) and (self.path / n).is_dir())
        except FileNotFoundError:
            return []

    def bytes_used(self) -> int:
        total = 0
        for run_id in self.list_runs():
            with os.scandir(self.path / run_id) as it:
                total += sum(e.stat(follow_symlinks=False).st_size for e in it if e.is_file(follow_symlinks=False))
        return total

    def begin_run(self, run_id: str) -> LocalStaging:
        ensure_private_dir(self.path)
        if self.has_run(run_id):
            raise DestinationError(f"{self.path / run_id} already exists; refusing to overwrite a published run")
        prefix = f".{run_id}.tmp-"
        for name in os.listdir(self.path):
            if name.startswith(prefix):  # an interrupted attempt at this very run
                shutil.rmtree(self.path / name)
        staging = self.path / f"{prefix}{os.getpid()}"
        os.mkdir(staging, PRIVATE_DIR)
        return LocalStaging(self.path / run_id, staging)

    def open_read(self, run_id: str, name: str) -> BinaryIO:
        try:
            return open(self.path / run_id / name, "rb", buffering=1 << 20)
        except FileNotFoundError:
            raise DestinationError(f"{self.describe()}: run {run_id} has no {name}") from None
