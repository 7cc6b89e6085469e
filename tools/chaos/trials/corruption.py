"""Trials that damage a run's manifests and entry files, or its archives and checksum files
on the destinations (bit flips, truncation, a byte appended, a swap with another run's):
the next step must refuse or fail, with the data untouched."""

import os
import random
import time
from pathlib import Path

from tools.chaos.dataset import configure, dataset
from tools.chaos.oracle import data_ids, destinations, judge, settle
from tools.chaos.outcome import TrialAbort
from tools.chaos.runner import fork_run, real_run
from tools.sandbox import Sandbox


def corrupt(rng: random.Random, path: Path, donor: Path | None) -> tuple[str, bytes] | None:
    """Damage ``path``; (what was done, its old bytes), or None when nothing would change."""
    old = path.read_bytes()
    ops = ["flip", "flip", "truncate", "append"] + (["swap"] * 2 if donor and donor.exists() else [])
    op = rng.choice(ops)
    if op in ("flip", "truncate") and not old:
        op = "append"
    if op == "flip":
        at = rng.randrange(len(old))
        new = old[:at] + bytes([old[at] ^ (1 << rng.randrange(8))]) + old[at + 1 :]
        what = f"bit flip at byte {at}"
    elif op == "truncate":
        at = rng.randrange(len(old))
        new, what = old[:at], f"truncated to {at} bytes"
    elif op == "append":
        new, what = old + bytes([rng.randrange(256)]), "one byte appended"
    else:
        new, what = donor.read_bytes(), f"swapped with {donor.parent.name}/{donor.name}"
    if new == old:
        return None
    path.write_bytes(new)
    return what, old


def _state_targets(sb: Sandbox, run_id: str, with_verify: bool) -> list[Path]:
    rdir = sb.state / "runs" / run_id
    names = [n for n in os.listdir(rdir) if n.endswith(".ok.json") or n.endswith(".jsonl")]
    return [
        rdir / n for n in sorted(names) if (with_verify or not n.startswith("verify")) and not n.startswith("clean")
    ]


def dest_files(sb: Sandbox, run_id: str) -> list[Path]:
    out = []
    for ddir in destinations(sb).values():
        if (ddir / run_id).is_dir():
            out += [ddir / run_id / n for n in sorted(os.listdir(ddir / run_id))]
    return out


def trial_corrupt(rng, sb, scratch, out, where: str):
    configure(sb, rng)
    ds = dataset(sb, rng, 4, 30, expired_p=0.85)
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{rng.randrange(1 << 16):04x}"
    donor = "19990101T000000Z-d0d0"  # an older run, so run_id stays the newest
    for step, rid in (("scan", run_id), ("backup", run_id), ("scan", donor), ("backup", donor)):
        got = fork_run(sb, step, "--run", rid)
        if got.code:
            out.bad(f"{step} --run {rid} without faults exited {got.code}: {got.out[-300:]}")
            raise TrialAbort
    before = data_ids(sb)

    def donor_of(path: Path) -> Path:
        return Path(str(path).replace(run_id, donor))

    def one(targets: list[Path], check_step: str) -> tuple[Path, str, bytes] | None:
        path = rng.choice(targets)
        done = corrupt(rng, path, donor_of(path))
        if done is None:
            return None
        what, old = done
        got = fork_run(sb, check_step, "--run", run_id)
        out.faults += 1
        label = f"{path.relative_to(sb.base)} ({what})"
        if got.code not in (1, 2):
            out.bad(f"{check_step} exited {got.code} after {label}: {got.out[-300:]}")
        if (sb.state / "runs" / run_id / f"{check_step}.ok.json").exists():
            out.bad(f"{check_step}.ok.json written after {label}")
            raise TrialAbort
        if data_ids(sb) != before:
            out.bad(f"data changed after {label}")
            raise TrialAbort
        return path, what, old

    # Before verify: damage state or destination; verify must refuse (2) or fail (1).
    targets = _state_targets(sb, run_id, False) if where == "state" else dest_files(sb, run_id)
    last = None
    want = out.faults + out.count(rng, 80, 160)
    for _ in range(3 * want):  # a swap with identical bytes is no fault: draw again
        if out.faults >= want:
            break
        done = one(targets, "verify")
        if done is not None:
            done[0].write_bytes(done[2])
    if where == "dest" and rng.random() < 0.5:
        last = one(targets, "verify")  # left in place: this run can never verify
    if last is None:
        got = fork_run(sb, "verify", "--run", run_id)
        if got.code:
            out.bad(f"verify after every corruption was undone exited {got.code}: {got.out[-300:]}")
            raise TrialAbort
        if where == "state":
            # Before clean: damage any manifest or entry file; clean must refuse.
            targets = _state_targets(sb, run_id, True)
            want = out.faults + out.count(rng, 30, 60)
            for _ in range(3 * want):
                if out.faults >= want:
                    break
                done = one(targets, "clean")
                if done is not None:
                    done[0].write_bytes(done[2])
            if rng.random() < 0.5:
                last = one(targets, "clean")
    rec = real_run(sb)
    if last is not None:
        if rec.code not in (1, 2):
            out.bad(f"maintenance exited {rec.code} on a run whose {last[0].name} is damaged ({last[1]})")
        if data_ids(sb) != before:
            out.bad(f"maintenance deleted files of a run whose {last[0].name} is damaged ({last[1]})")
        out.new_run = True  # what the operator does after the alert
        rec = real_run(sb, "--new-run")
    out.recovered = rec.code == 0
    if rec.code:
        out.bad(f"recovery maintenance exited {rec.code}: {rec.out[-400:]}")
    judge(sb, ds, scratch, out)
    settle(sb, ds, out)
