"""The command line of the fault campaign (scripts/chaos.py, make chaos): its options, the
progress line of each trial, the table, the notes, the failures and how to reproduce them."""

import argparse
import os
import random
import time

from tools.chaos import campaign, report
from tools.chaos.files import remove_tree
from tools.chaos.trials import KINDS

DESCRIPTION = """The fault campaign (make chaos): SIGKILLs, full disks, I/O errors, corruption, a racing
core, hostile trees and concurrent chains against the real scripts, each trial in a
throw-away sandbox under a temporary directory this creates and removes. Prints one row
per fault kind; exits 1 if any file was lost (or any other invariant broke).

The campaign itself lives in tools/chaos/."""


def main(argv=None) -> int:
    kinds = "\n".join(f"  {k:<16} {d}" for k, (_, _, d) in KINDS.items())
    p = argparse.ArgumentParser(
        prog="scripts/chaos.py",
        description=DESCRIPTION,
        epilog=f"fault kinds:\n{kinds}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seed", type=int, default=None, help="campaign seed (default: a new one, printed)")
    p.add_argument(
        "--trials",
        type=int,
        default=20,
        help="trials per unit; each kind runs a share of it (default: %(default)s: ~105 trials, "
        "~3,500 faults, 1-4 minutes on 2 cores)",
    )
    p.add_argument("--kind", action="append", choices=list(KINDS), help="only this kind (repeatable)")
    p.add_argument("--trial", type=int, help="only trial number N of each kind (to reproduce one)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--keep", action="store_true", help="keep the sandboxes (and print where)")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1 << 31)
    work = campaign.default_work_root()
    print(f"chaos: seed {seed}, CHAOS_TRIALS {args.trials}, {args.workers} workers, sandboxes under {work}", flush=True)
    t0 = time.monotonic()

    def progress(o, done, total):
        mark = "FAIL" if o.failed else "skip" if o.skipped else "ok"
        print(
            f"  [{done:>3}/{total}] {o.kind:<16} #{o.trial:<3} {o.faults:>4} faults {o.seconds:6.1f}s  {mark}",
            flush=True,
        )

    try:
        results = campaign.run_campaign(
            seed, args.trials, work, args.kind, args.workers, args.keep, args.trial, progress
        )
    finally:
        if not args.keep:
            remove_tree(work)
    text, passed = report.table(results)
    print(f"\nchaos campaign, seed {seed}, CHAOS_TRIALS {args.trials}, {time.monotonic() - t0:.0f} s\n")
    print(text)
    extra = report.notes(results)
    if extra:
        print("\nnotes:\n" + extra)
    if not passed:
        print(report.failures(results, seed))
    print(f"\nreproduce: make chaos CHAOS_SEED={seed} CHAOS_TRIALS={args.trials}")
    if args.keep:
        print(f"sandboxes kept under {work}")
    return 0 if passed else 1
