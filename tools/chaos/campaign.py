"""The campaign: every kind's trials planned from the seed (each trial its own seed and
sandbox under the work directory), run in parallel by a pool of warm forked workers, and
returned in the order of ``KINDS`` for the report."""

import hashlib
import importlib
import multiprocessing
import os
import random
import signal
import tempfile
import time
import traceback
from pathlib import Path

from tools.chaos.files import remove_tree
from tools.chaos.outcome import Outcome, TrialAbort
from tools.chaos.trials import KINDS, TRIALS
from tools.sandbox import Sandbox


def trial_seed(seed: int, kind: str, i: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{kind}:{i}".encode()).digest()[:8], "big")


def run_trial(kind: str, i: int, seed: int, work: Path, keep: bool = False, budget: float = 1.0) -> Outcome:
    out = Outcome(kind, i, trial_seed(seed, kind, i), budget=budget)
    rng = random.Random(out.seed)
    tdir = work / f"{kind}-{i:04d}"
    tdir.mkdir(parents=True)
    os.chmod(tdir, 0o711)
    t0 = time.monotonic()
    try:
        # The deep tree sits under a long path, as /srv/<site>/<host>/... would: its
        # deepest absolute path is then longer than PATH_MAX, its relative path is not.
        sb = Sandbox(tdir / ("p" * 200 if kind == "hostile-deep" else "sb"))
        TRIALS[kind](rng, sb, tdir / "scratch", out)
    except TrialAbort:
        pass
    except Exception:
        out.bad("the trial itself crashed:\n" + traceback.format_exc()[-1500:])
    finally:
        out.seconds = time.monotonic() - t0
        if not keep:
            remove_tree(tdir)
    return out


def init_worker() -> None:
    # Warm the imports the forked step processes need, once per worker.
    importlib.import_module("ops.cli")
    importlib.import_module("ops.maintenance.chain")
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _task(args) -> Outcome:
    return run_trial(*args)


def plan(trials: int, kinds: list[str]) -> list[tuple[str, int]]:
    tasks = []
    for kind in kinds:
        per, _cost, _ = KINDS[kind]
        tasks += [(kind, i) for i in range(max(1, round(trials * per)))]
    tasks.sort(key=lambda t: -KINDS[t[0]][1])  # the longest first, for an even finish
    return tasks


def run_campaign(
    seed: int,
    trials: int,
    work: Path,
    kinds: list[str] | None = None,
    workers: int = 2,
    keep: bool = False,
    only: int | None = None,
    progress=None,
    budget: float = 1.0,
) -> list[Outcome]:
    kinds = kinds or list(KINDS)
    tasks = [(k, i, seed, work, keep, budget) for k, i in plan(trials, kinds) if only is None or i == only]
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o711)  # uid nobody (hostile-uid) must be able to reach its sandbox
    results = []
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers, initializer=init_worker, maxtasksperchild=20) as pool:
        for o in pool.imap_unordered(_task, tasks):
            results.append(o)
            if progress:
                progress(o, len(results), len(tasks))
    return sorted(results, key=lambda o: (list(KINDS).index(o.kind), o.trial))


def default_work_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="qts-chaos-"))
