"""Trials of the guard rails for a trading host: the maintenance window closing part-way
through a step, and the deletion brake holding a policy back. Neither may lose a file,
and a run the window stopped must be the run the next one finishes."""

import time
from datetime import UTC, datetime

from ops.state.manifest import STEPS
from ops.sys.window import SKEW_ENV
from tools.chaos.dataset import configure, dataset
from tools.chaos.oracle import after_fault, data_ids, recover_and_judge
from tools.chaos.runner import real_run


def trial_window_close(rng, sb, scratch, out):
    """maintenance starts inside a window (00:00-12:00 UTC) that closes a random fraction
    of a second to seconds later (the window's clock is skewed to just before 12:00), with
    large files and an I/O budget so small that backup and verify take seconds. The run must exit 0 paused
    (or finished, if it was quicker); nothing may be lost; with the window opened again the
    next maintenance must finish that same run."""
    configure(sb, rng)
    ds = dataset(sb, rng, 6, 30)
    for i in range(rng.randint(1, 3)):  # seconds of backup and verify at the I/O budget below
        ds.add("logs", b"big%d.log" % i, rng.randbytes(rng.randint(1, 3) << 20), rng.uniform(32, 400), True)
    sb.config["io_limit"] = f"{rng.choice([1, 2])}MiB/s"
    sb.config["window"] = {"timezone": "UTC", "allow": ["Mon-Sun 00:00-12:00"]}
    sb.write_config()
    delay = rng.uniform(0.1, 4.0)
    noon = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0).timestamp()
    got = real_run(sb, env={SKEW_ENV: str(noon - delay - time.time())})
    out.faults += 1
    if got.code != 0:
        out.bad(f"maintenance with the window closing {delay:.1f} s in exited {got.code}: {got.out[-300:]}")
    run = sb.run_dir() if sb.runs() else None
    paused = [s for s in STEPS if run and (run / f"{s}.paused.json").exists()]
    out.notes.append(f"window closed {delay:.1f} s in: {'paused in ' + paused[0] if paused else 'not paused'}")
    after_fault(sb, ds, out, "the window closing")
    sb.config["window"]["allow"] = ["Mon-Sun 00:00-24:00"]  # neither key is among the run's rules
    del sb.config["io_limit"]
    sb.write_config()
    recover_and_judge(sb, ds, scratch, out)
    if paused and not (run / "clean.ok.json").exists():
        out.bad(f"run {run.name}, paused in {paused[0]}, was not the run the next maintenance finished")


def trial_brake(rng, sb, scratch, out):
    """A policy's max_delete set so low that its expiries exceed it: maintenance must exit 1
    naming it with none of its files deleted, the other policy cleaned; one run with
    --allow-large-delete then deletes; and with the brake removed everything settles."""
    configure(sb, rng, journals=True)
    ds = dataset(sb, rng, 8, 30, expired_p=0.85)
    policy = rng.choice(sb.config["policies"])
    policy["max_delete"] = rng.choice(["1%", "5%", "1B"])
    sb.write_config()
    root = policy["root"].rpartition("/")[2].encode() + b"/"
    mine = {k for k in data_ids(sb) if k.startswith(root)}
    held = any(f.expired and f.key in mine and f.content for f in ds.files.values())
    got = real_run(sb)
    out.faults += 1
    out.notes.append(f"max_delete {policy['max_delete']} on {policy['name']}: {'held' if held else 'nothing to hold'}")
    if held and (got.code != 1 or f"policy {policy['name']} would have deleted" not in got.out):
        out.bad(f"the brake on {policy['name']} did not hold: exit {got.code}: {got.out[-300:]}")
    if held and {k for k in data_ids(sb) if k.startswith(root)} != mine:
        out.bad(f"the brake held {policy['name']}, yet files of it were deleted")
    after_fault(sb, ds, out, "the brake")
    allowed = real_run(sb, "--allow-large-delete", policy["name"])
    if allowed.code != 0:
        out.bad(f"maintenance --allow-large-delete {policy['name']} exited {allowed.code}: {allowed.out[-300:]}")
    del policy["max_delete"]
    sb.write_config()
    recover_and_judge(sb, ds, scratch, out)
