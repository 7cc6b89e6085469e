"""Trials of scrub (make scrub): a finished run's copies damaged on the destinations, then one
scrub of every copy. The oracle, with GNU sha256sum alone: afterwards every catalogued run
has at least require_verified_copies intact copies (SHA256SUMS checks out in its
directory), or scrub exited 1 naming it; and, where a copy was left anywhere, no file the
toolkit deleted is lost (the archives, extracted by GNU tar, still hold it)."""

import os
import shutil
import subprocess

from tools.chaos.dataset import configure, dataset
from tools.chaos.oracle import destinations, judge
from tools.chaos.outcome import TrialAbort
from tools.chaos.runner import real_run
from tools.sandbox import Sandbox

SCRUB_FAULTS = ("bit-rot", "lost-one", "lost-all", "rewritten")


def _intact(run_dir) -> bool:
    if not (run_dir / "SHA256SUMS").is_file():
        return False
    r = subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=run_dir, capture_output=True)
    return r.returncode == 0


def _archives(run_dir) -> list:
    return sorted(p for p in run_dir.iterdir() if ".tar" in p.name)


def trial_scrub(rng, sb: Sandbox, scratch, out, fault: str):
    configure(sb, rng, dests=2)
    ds = dataset(sb, rng, 6, 24, expired_p=0.9)
    first = real_run(sb)
    if first.code != 0:
        out.bad(f"the maintenance before the fault exited {first.code}: {first.out[-300:]}")
        raise TrialAbort
    runs = [r for r in sb.runs() if any((d / r).is_dir() for d in destinations(sb).values())]
    if not runs:
        out.notes.append(f"{fault}: nothing was archived")
        return
    run_id = rng.choice(runs)
    dests = destinations(sb)
    holding = [n for n, d in dests.items() if (d / run_id).is_dir()]
    victims = holding if fault == "lost-all" else [rng.choice(holding)]
    for name in victims:
        run_dir = dests[name] / run_id
        if fault in ("lost-one", "lost-all"):
            shutil.rmtree(run_dir)
            continue
        archive = rng.choice(_archives(run_dir))
        data = bytearray(archive.read_bytes())
        if fault == "bit-rot":
            at = rng.randrange(len(data))
            data[at] ^= 1 << rng.randrange(8)
        else:  # rewritten in place: the same size, other bytes
            data = bytearray(rng.randbytes(len(data)))
        with open(archive, "r+b") as f:
            f.write(data)
    out.faults += 1
    out.notes.append(f"{fault} of run {run_id} on {', '.join(victims)}")
    got = sb.run("scrub", "--all")
    quorum = sb.config["backup"]["require_verified_copies"]
    catalogued = {n.removesuffix(".jsonl") for n in os.listdir(sb.state / "catalogue") if n.endswith(".jsonl")}
    for r in sorted(catalogued):
        intact = sum(_intact(d / r) for d in dests.values())
        if intact < quorum and (got.returncode != 1 or r not in got.stderr):
            out.bad(
                f"run {r} has {intact} intact copies of the {quorum} required, and scrub (exit "
                f"{got.returncode}) did not name it: {got.stderr[-300:]}"
            )
    if fault == "lost-all":
        out.recovered = got.returncode == 1  # what is left to do: say it, and find marks the files
        if got.returncode != 1:
            out.bad(f"every copy of run {run_id} gone, yet scrub exited {got.returncode}")
        return
    if got.returncode != 0:
        out.bad(f"scrub exited {got.returncode} with a copy of run {run_id} left: {got.stderr[-300:]}")
    judge(sb, ds, scratch, out)
    out.recovered = got.returncode == 0
