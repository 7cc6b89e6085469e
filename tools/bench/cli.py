"""The command line of the benchmark (scripts/bench.py, make bench): its options and
BENCH_SCALE / BENCH_REPEAT, the datasets it needs, the rows run on each, and the results
written to bench/results/ (the figures as JSON, the child processes' logs) and printed."""

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict

from tools.bench.datasets import FULL, SMALL, ensure_dataset, rmtree
from tools.bench.report import print_report, summarise, targets
from tools.bench.rows import (
    BENCH, DELETING_ROWS, KEEPING_ROWS, PER_POLICY, ROOTS, WORK, Bench, ensure_restic, per_policy_compression, say,
)
from tools.bench.timing import machine_facts

DESCRIPTION = """Benchmark QTS Ops (`make bench`) against a shell pipeline with the same guarantees,
restic and the disk's floor, on data built once under bench/ and reused.

Datasets (BENCH_SCALE=small or --quick shrinks each 20x):
  LARGE  2 GiB of 10 MiB incompressible files
  MANY   200,000 compressible CSV/log files of 1-4 KiB in 2,000 directories
  MIXED  both, as two policies of one run
  SCALE  1,000,000 empty files: scan and plan only, peak RSS at 100k and at 1M
  CATALOGUE  50,000,000 catalogued deletions (2M small): find's index built, then an exact
         path and a directory glob

The pipeline deletes what it archived, so every trial that deletes starts from a fresh
`cp -a` of the pristine tree (new inodes and ctimes, old mtimes); only the timed parts
are timed. Rows alternate within each repeat (BENCH_REPEAT, default 3); each figure is
the median with min-max. Results: a table on stdout, the figures in bench/results/*.json.
The page cache is warm throughout (nothing is dropped); `sync` runs untimed before each trial.
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench.py", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="every dataset 20x smaller (same as BENCH_SCALE=small)")
    p.add_argument("--repeat", type=int, default=None, help="trials per row (default: BENCH_REPEAT or 3)")
    p.add_argument("--only", default="LARGE,MANY,MIXED,SCALE,CATALOGUE", metavar="LIST",
                   help="datasets to run, comma-separated (default: %(default)s)")
    p.add_argument("--rows", default=",".join(KEEPING_ROWS + DELETING_ROWS), metavar="LIST",
                   help="rows to run on LARGE, MANY and MIXED (default: %(default)s)")
    p.add_argument("--no-install", action="store_true", help="do not try `apt-get install restic`")
    args = p.parse_args(argv)
    small = args.quick or os.environ.get("BENCH_SCALE", "full").lower() == "small"
    if os.environ.get("BENCH_SCALE", "full").lower() not in ("full", "small"):
        p.error("BENCH_SCALE must be full or small")
    scale = SMALL if small else FULL
    repeat = args.repeat if args.repeat is not None else int(os.environ.get("BENCH_REPEAT", "3"))
    if repeat < 1:
        p.error("--repeat / BENCH_REPEAT must be at least 1")
    only = [d.strip().upper() for d in args.only.split(",") if d.strip()]
    unknown = set(only) - {"LARGE", "MANY", "MIXED", "SCALE", "CATALOGUE"}
    if unknown:
        p.error(f"unknown dataset(s) {', '.join(sorted(unknown))}")
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    if set(rows) - set(KEEPING_ROWS + DELETING_ROWS):
        p.error(f"unknown row(s) {', '.join(sorted(set(rows) - set(KEEPING_ROWS + DELETING_ROWS)))}")
    for tool in ("find", "xargs", "tar", "zstd", "sha256sum", "cp", "rm", "sync", "cat"):
        if not shutil.which(tool):
            print(f"bench: {tool} is not on PATH; the shell baseline needs it", file=sys.stderr)
            return 1

    started = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    wants_restic = {"LARGE", "MANY", "MIXED"} & set(only) and "restic" in rows
    restic, restic_why = ensure_restic(not args.no_install) if wants_restic else (None, "not run")
    say(f"scale {scale.name}, {repeat} trial(s) per row, datasets {', '.join(only)}; restic: {restic_why}; "
        f"codec zstd" + (f", policy overrides {PER_POLICY}" if per_policy_compression() else ""))
    facts = machine_facts()

    rmtree(WORK)
    logs = BENCH / "results" / f"{stamp}-logs"
    bench = Bench(scale, repeat, restic, logs, rows)
    pristine = bench.pristine
    pristine.mkdir(parents=True, exist_ok=True)
    needed = sorted({n for d in only if d in ROOTS for n in ROOTS[d]} | ({"scale"} if "SCALE" in only else set()))
    for name in needed:
        bench.stamps[name] = ensure_dataset(pristine, name, scale, say)

    try:
        for ds in ("LARGE", "MANY", "MIXED"):
            if ds in only:
                bench.run_dataset(ds)
        if "SCALE" in only:
            bench.run_scale()
        if "CATALOGUE" in only:
            bench.run_catalogue()
    except KeyboardInterrupt:
        say("interrupted: reporting what was measured so far")
    finally:
        rmtree(WORK)

    summary = summarise(bench.trials, bench.stamps)
    restic_skipped = None if restic or not wants_restic else restic_why
    tgts = targets(summary, scale, restic_skipped)
    facts["loadavg_end"] = os.getloadavg()
    results = BENCH / "results"
    results.mkdir(parents=True, exist_ok=True)
    result_path = results / f"{stamp}-{scale.name}.json"
    doc = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
           "elapsed_s": round(time.time() - started, 1), "scale": asdict(scale), "repeat": repeat,
           "machine": facts, "restic": restic_why,
           "policy_overrides": PER_POLICY if per_policy_compression() else {}, "datasets": bench.stamps,
           "summary": summary, "targets": tgts,
           "trials": [{"dataset": t.dataset, "row": t.row, "repeat": t.repeat, "ok": t.ok, "total_s": t.total_s,
                       "loadavg": t.loadavg, "other_cpu_s": round(t.other_cpu_s, 2), "span_s": round(t.span_s, 3),
                       "facts": t.facts, "phases": [asdict(p) for p in t.phases]}
                      for t in bench.trials],
           "child_logs": str(logs)}
    result_path.write_text(json.dumps(doc, indent=1) + "\n")
    print_report(summary, tgts, restic_skipped, bench.trials, result_path)
    return 0 if bench.trials and all(t.ok for t in bench.trials) else 1
