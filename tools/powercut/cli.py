"""The command line of the power-cut campaign (scripts/powercut.py, make powercut): the
self-check first, a line per trial, the table, where the cuts landed, the failures and how
to reproduce them."""

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

from tools.chaos.files import remove_tree
from tools.powercut import campaign, report
from tools.powercut.layer import fuse_missing
from tools.powercut.selfcheck import self_check

DESCRIPTION = """The power-cut campaign (make powercut): the state directory, the destinations and the
policy roots live on a FUSE layer that forgets what was not made durable (fsync of a file
for its data, of a directory for its entries). Each trial runs maintenance, a single step
or a restore, cuts the power at a random operation, brings the layer back with only what
was durable, and checks that no file was lost, no run was published with files that were
not durable, and no step accepted a manifest whose contents were lost. Then one
maintenance must recover. Exits 1 if the self-check fails or any file was lost (or any
other invariant broke).

The campaign lives in tools/powercut/; it needs /dev/fuse and fuse3, and root."""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="scripts/powercut.py", description=DESCRIPTION)
    p.add_argument("--seed", type=int, default=None, help="campaign seed (default: a new one, printed)")
    p.add_argument(
        "--trials", type=int, default=700, help="trials, each up to 5 cuts (default: %(default)s: over 1,000 cuts)"
    )
    p.add_argument("--trial", type=int, help="only trial number N (to reproduce one)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--keep", action="store_true", help="keep the sandboxes (and print where)")
    args = p.parse_args(argv)
    missing = fuse_missing() or (None if os.geteuid() == 0 else "mounting the layer needs root")
    if missing:
        print(f"powercut: cannot run: {missing}")
        return 1
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1 << 31)
    work = Path(tempfile.mkdtemp(prefix="qts-powercut-"))
    print(f"powercut: seed {seed}, {args.trials} trials, {args.workers} workers, sandboxes under {work}", flush=True)
    t0 = time.monotonic()
    try:
        text, ok = report.self_check_lines(self_check(work / "self-check", work / campaign.LOCK))
        print("\nself-check: the layer forgets what was not made durable\n" + text, flush=True)
        if not ok:
            print("\nthe self-check failed: no trial was run, since they could prove nothing")
            return 1
        print(flush=True)

        def progress(o, done, total):
            mark = "FAIL" if o.failed else "ok"
            print(f"  [{done:>4}/{total}] trial {o.trial:<4} {o.faults} cuts {o.seconds:5.1f}s  {mark}", flush=True)

        results = campaign.run_campaign(seed, args.trials, work, args.workers, args.keep, args.trial, progress)
    finally:
        campaign.unmount_all(work)
        if not args.keep:
            remove_tree(work)
    text, passed = report.table(results)
    print(f"\npower-cut campaign, seed {seed}, {args.trials} trials, {time.monotonic() - t0:.0f} s\n")
    print(text)
    extra = report.notes(results)
    if extra:
        print("\nnotes:\n" + extra)
    if not passed:
        print(report.failures(results, seed))
    print(f"\nreproduce: make powercut POWERCUT_SEED={seed} POWERCUT_TRIALS={args.trials}")
    if args.keep:
        print(f"sandboxes kept under {work}")
    return 0 if passed else 1
