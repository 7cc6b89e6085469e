"""The campaign: trials planned from the seed (each its own seed and sandbox under the
work directory), run by a pool of warm forked workers, then counted for the report."""

import hashlib
import importlib
import multiprocessing
import random
import signal
import subprocess
import time
import traceback
from pathlib import Path

from tools.chaos.files import remove_tree
from tools.powercut.trial import CutOutcome, Trial

LOCK = ".power.lock"  # in the work directory: every worker's cuts take it (layer.Power)


def trial_seed(seed: int, i: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:powercut:{i}".encode()).digest()[:8], "big")


def run_trial(i: int, seed: int, work: Path, keep: bool = False) -> CutOutcome:
    out = CutOutcome("powercut", i, trial_seed(seed, i))
    tdir = work / f"trial-{i:04d}"
    tdir.mkdir(parents=True)
    t0 = time.monotonic()
    try:
        Trial(random.Random(out.seed), tdir, out, work / LOCK).run()
    except Exception:
        out.bad("the trial itself crashed:\n" + traceback.format_exc()[-1500:])
    finally:
        out.seconds = time.monotonic() - t0
        unmount_all(tdir)
        if not keep:
            remove_tree(tdir)
    return out


def unmount_all(top: Path) -> None:
    """Lazily unmount any layer left mounted under ``top`` (a trial that crashed, an interrupt)."""
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f if line.split()[0] == "powercut"]
    for p in points:
        if p.startswith(str(top)):
            subprocess.run(["fusermount3", "-u", "-z", "-q", p], capture_output=True)


def _init_worker() -> None:
    importlib.import_module("ops.cli")  # warm what the forked steps import
    importlib.import_module("ops.maintenance.chain")
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _task(args) -> CutOutcome:
    return run_trial(*args)


def run_campaign(
    seed: int, trials: int, work: Path, workers: int = 2, keep: bool = False, only: int | None = None, progress=None
) -> list[CutOutcome]:
    work.mkdir(parents=True, exist_ok=True)
    tasks = [(i, seed, work, keep) for i in range(trials) if only is None or i == only]
    results = []
    ctx = multiprocessing.get_context("fork")
    try:
        with ctx.Pool(workers, initializer=_init_worker, maxtasksperchild=50) as pool:
            for o in pool.imap_unordered(_task, tasks):
                results.append(o)
                if progress:
                    progress(o, len(results), len(tasks))
    finally:
        unmount_all(work)
    return sorted(results, key=lambda o: o.trial)
