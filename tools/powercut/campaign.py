"""The campaign: trials planned from the seed (each its own seed and sandbox under the
work directory), run by a pool of warm forked workers, then counted for the report."""

import multiprocessing
import os
import random
import signal
import subprocess
import time
import traceback
from pathlib import Path

from tools.chaos.campaign import init_worker, trial_seed
from tools.chaos.files import remove_tree
from tools.powercut.layer import LOCK, SERVER_PID
from tools.powercut.trial import CutOutcome, Trial


def run_trial(i: int, seed: int, work: Path, keep: bool = False) -> CutOutcome:
    out = CutOutcome("powercut", i, trial_seed(seed, "powercut", i))
    tdir = work / f"trial-{i:04d}"
    tdir.mkdir(parents=True)
    t0 = time.monotonic()
    try:
        Trial(random.Random(out.seed), tdir, out, LOCK).run()
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


def clean_up(work: Path, keep: bool = False) -> None:
    """After the campaign, or an interrupt: every layer under ``work`` unmounted, its server
    gone (an interrupted worker's server outlives it), then the sandboxes removed."""
    unmount_all(work)
    for pid_file in work.rglob(SERVER_PID):
        try:
            pid = int(pid_file.read_text())
            with open(f"/proc/{pid}/stat") as f:
                ours = int(f.read().rsplit(")", 1)[1].split()[2]) == pid  # its own group, as a server makes
            if ours:
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 5
                while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                    time.sleep(0.01)
        except (OSError, ValueError, IndexError):
            continue  # gone already
    if not keep:
        remove_tree(work)


def _init_worker() -> None:
    init_worker()  # chaos's: warm imports, SIGINT left to the campaign's process
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the pool's end: quietly, not as the cli's interrupt


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
