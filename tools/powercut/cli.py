"""The command line of the power-cut campaign (scripts/powercut.py, make powercut): the
self-check first, a line per trial, the table, where the cuts landed, the failures and how
to reproduce them."""

import argparse
import os
import random
import signal
import tempfile
import time
from pathlib import Path

from tools.powercut import campaign, report
from tools.powercut.layer import LOCK, fuse_missing
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


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {n}")
    return n


def _terminated(signum, frame):
    raise KeyboardInterrupt  # SIGTERM ends the campaign as Ctrl-C does: unmounted and cleaned up


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="scripts/powercut.py", description=DESCRIPTION)
    p.add_argument("--seed", type=int, default=None, help="campaign seed (default: a new one, printed)")
    p.add_argument(
        "--trials",
        type=_positive,
        default=800,
        help="trials, each up to 5 cuts (default: %(default)s: over 1,000 cuts)",
    )
    p.add_argument("--trial", type=int, help="only trial number N of the --trials (to reproduce one)")
    p.add_argument("--workers", type=_positive, default=os.cpu_count() or 2)
    p.add_argument("--keep", action="store_true", help="keep the sandboxes (and print where)")
    args = p.parse_args(argv)
    if args.trial is not None and not 0 <= args.trial < args.trials:
        p.error(f"--trial {args.trial}: the trials are numbered 0 to {args.trials - 1} (raise --trials)")
    missing = fuse_missing()
    if missing:
        print(f"powercut: cannot run: {missing}")
        return 1
    signal.signal(signal.SIGTERM, _terminated)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1 << 31)
    work = Path(tempfile.mkdtemp(prefix="qts-powercut-"))
    runs = f"trial {args.trial} of {args.trials}" if args.trial is not None else f"{args.trials} trials"
    print(f"powercut: seed {seed}, {runs}, {args.workers} workers, sandboxes under {work}", flush=True)
    t0 = time.monotonic()
    try:
        text, ok = report.self_check_lines(self_check(work / "self-check", LOCK))
        print("\nself-check: the layer forgets what was not made durable\n" + text, flush=True)
        if not ok:
            print("\nthe self-check failed: no trial was run, since they could prove nothing")
            return 1
        print(flush=True)

        def progress(o, done, total):
            mark = "FAIL" if o.failed else "ok"
            print(f"  [{done:>4}/{total}] trial {o.trial:<4} {o.faults} cuts {o.seconds:5.1f}s  {mark}", flush=True)

        results = campaign.run_campaign(seed, args.trials, work, args.workers, args.keep, args.trial, progress)
    except KeyboardInterrupt:
        print("\npowercut: interrupted; every layer unmounted" + ("" if args.keep else ", the sandboxes removed"))
        return 130
    finally:
        campaign.clean_up(work, keep=args.keep)
    text, passed = report.table(results)
    print(f"\npower-cut campaign, seed {seed}, {runs}, {time.monotonic() - t0:.0f} s\n")
    print(text)
    extra = report.notes(results)
    if extra:
        print("\nnotes:\n" + extra)
    if not passed:
        print(report.failures(results, seed, args.trials))
    again = f" --trial {args.trial}" if args.trial is not None else ""
    print(f"\nreproduce: scripts/powercut.py --seed {seed} --trials {args.trials}{again}")
    if args.keep:
        print(f"sandboxes kept under {work} (each trial's state after its recovery: trial-N/layer/backing/sb)")
    return 0 if passed else 1
