"""The stand-in core (scripts/core_latency.py): a 512-byte append and an fdatasync every
5 ms, as an order journal does, timed; used by ``make bench`` beside each row on MIXED.

Standard library only, like its script: it must run on any trading host, beside the real
core, with nothing installed. This one file also runs alone (``python3 core_latency.py``),
copied to a host that has no toolkit. ``main`` is the command line; ``run`` the measurement.
"""

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import time


class _Stopped(Exception):
    """SIGTERM or SIGINT: raised from the handler, so a long sleep between appends ends at once."""


def _stop(*_) -> None:
    raise _Stopped


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
    payload = (b"x" * (record - 1)) + b"\n"
    latencies: list[float] = []
    started = time.monotonic()
    deadline = started + seconds if seconds else float("inf")
    due = started
    handlers = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            os.write(fd, payload)
            os.fdatasync(fd)
            latencies.append(time.monotonic() - t0)
            # A fixed grid, as a core's clock: a slow write does not push later ones back,
            # and the ticks it overran are lost, not queued (they show as fewer writes).
            due += interval_s
            now = time.monotonic()
            if due > now:
                # The deadline may already have passed while due has not: never a negative sleep.
                time.sleep(max(0.0, min(due, deadline) - now))
            else:
                due = now
    except _Stopped:
        pass  # an append cut short by the signal is not counted
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
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
    if not (args.interval > 0 and math.isfinite(args.interval)) or args.record < 1:
        p.error("--interval and --record must be positive")
    if args.seconds is not None and not (args.seconds > 0 and math.isfinite(args.seconds)):
        p.error("--seconds must be positive (leave it out to run until Ctrl-C or SIGTERM)")
    # Where the figures go is opened before measuring (not found unwritable after a long run);
    # the journal's directory is checked by its first open.
    with contextlib.ExitStack() as stack:
        try:
            out = stack.enter_context(open(args.json, "w")) if args.json else None
            result = run(args.dir, args.seconds, args.interval / 1000, args.record)
        except OSError as exc:
            print(f"core_latency: {exc.filename or args.dir}: {exc.strerror}", file=sys.stderr)
            return 1
        report(result, out)
    return 0


def report(result: dict, out) -> None:
    print(
        f"{result['writes']} of {result['expected']} appends in {result['seconds']:.1f} s; append+fdatasync "
        f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, p99.9 {result['p999_ms']:.2f} ms, "
        f"max {result['max_ms']:.2f} ms"
    )
    if out is not None:
        json.dump(result, out)


if __name__ == "__main__":  # this file alone, copied to a host without the toolkit
    sys.exit(main(description=__doc__))
