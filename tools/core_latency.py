"""The stand-in core (scripts/core_latency.py): a 512-byte append and an fdatasync every
5 ms, as an order journal does, timed; used by ``make bench`` beside each row on MIXED.

Standard library only, like its script: it must run on any trading host, beside the real
core, with nothing installed. ``main`` is the command line; ``run`` the measurement.
"""

import argparse
import json
import os
import signal
import time


def percentile(ordered: list[float], q: float) -> float:
    """The q-quantile (0..1) of sorted values, nearest rank: a value that was measured."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))]


def summary(latencies_s: list[float], seconds: float, interval_s: float) -> dict:
    ordered = sorted(latencies_s)
    ms = {
        f"{name}_ms": round(percentile(ordered, q) * 1000, 3)
        for name, q in (("p50", 0.50), ("p99", 0.99), ("p999", 0.999), ("max", 1.0))
    }
    return {"writes": len(ordered), "expected": int(seconds / interval_s), "seconds": round(seconds, 3), **ms}


def run(directory: str, seconds: float | None, interval_s: float, record: int) -> dict:
    path = os.path.join(directory, f".core-latency-{os.getpid()}.journal")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    payload = (b"x" * (record - 1)) + b"\n"
    latencies: list[float] = []
    started = time.monotonic()
    deadline = started + seconds if seconds else float("inf")
    due = started
    try:
        while not stop and time.monotonic() < deadline:
            t0 = time.monotonic()
            os.write(fd, payload)
            os.fdatasync(fd)
            latencies.append(time.monotonic() - t0)
            # A fixed grid, as a core's clock: a slow write does not push later ones back,
            # and the ticks it overran are lost, not queued (they show as fewer writes).
            due += interval_s
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            else:
                due = now
    finally:
        os.close(fd)
        os.unlink(path)
    return summary(latencies, time.monotonic() - started, interval_s)


def main(argv=None, description: str = "") -> int:
    p = argparse.ArgumentParser(
        prog="scripts/core_latency.py", description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dir", default=".", help="directory on the core's disk for the journal file (default: .)")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long (default: at Ctrl-C / SIGTERM)")
    p.add_argument("--interval", type=float, default=5.0, help="milliseconds between appends (default: 5)")
    p.add_argument("--record", type=int, default=512, help="bytes per append (default: 512)")
    p.add_argument("--json", default=None, help="also write the figures to this file as JSON")
    args = p.parse_args(argv)
    if args.interval <= 0 or args.record < 1:
        p.error("--interval and --record must be positive")
    result = run(args.dir, args.seconds, args.interval / 1000, args.record)
    print(
        f"{result['writes']} of {result['expected']} appends in {result['seconds']:.1f} s; append+fdatasync "
        f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, p99.9 {result['p999_ms']:.2f} ms, "
        f"max {result['max_ms']:.2f} ms"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f)
    return 0
