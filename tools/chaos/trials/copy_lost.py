"""Trials where verified copies are lost between verify and clean (removed, cut short,
extended, swapped for a same-size symlink, a run or a whole destination moved away):
clean must keep every file below the quorum and name the lost copies above it."""

import itertools
import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

from tools.chaos.dataset import configure, dataset, random_content
from tools.chaos.files import remove_tree
from tools.chaos.oracle import ARCHIVE_EXTS, after_fault, data_ids, destinations, read_json, recover_and_judge
from tools.chaos.outcome import Outcome, TrialAbort
from tools.chaos.runner import Ran, fork_run
from tools.chaos.trials.corruption import corrupt
from tools.sandbox import Sandbox, log_events

_aside = itertools.count()


def _set_aside(path: Path, stash: Path, out: Outcome, link_back: bool = False) -> Callable[[], None]:
    """Move ``path`` (a file or a whole directory) into ``stash``, leaving a symlink to it in
    its place if ``link_back``; the returned undo puts it back. A rename both ways, so what
    comes back is the very inode verify read, with its bytes and times: the oracle then
    judges the copies exactly as verify left them."""
    kept = stash / f"{next(_aside):04d}-{path.name}"
    os.rename(path, kept)
    if link_back:
        os.symlink(kept, path)

    def undo() -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            # Only a directory taken away whole can find one in its place: something
            # (clean, or whatever it called) made it again, on a destination that was gone.
            left = os.listdir(path)
            out.bad(f"{path} was moved away, and a directory holding {left[:5]} took its place")
            remove_tree(path)
        elif os.path.lexists(path):
            os.unlink(path)  # what the damage left in its place
        os.rename(kept, path)

    return undo


def _damage_file(rng: random.Random, path: Path, stash: Path, out: Outcome) -> tuple[str, Callable[[], None]]:
    """One published file of a run damaged as a lost or half-lost copy looks: (what, undo).

    Archives are checked by clean by their size (a look, not a re-read): cut short,
    extended, or a symlink to a file of the very same size, which only a look that does not
    follow links tells apart; .sha256 files likewise. MANIFEST.json and SHA256SUMS are
    checked by their bytes."""
    name = path.name
    label = (
        "MANIFEST.json"
        if name == "MANIFEST.json"
        else "SHA256SUMS"
        if name == "SHA256SUMS"
        else ".sha256"
        if name.endswith(".sha256")
        else "archive"
    )
    by_size = ["removed", "cut short", "extended", "symlink"]
    ops = {"archive": by_size, ".sha256": by_size}.get(label, ["removed", "altered"])
    op = rng.choice(ops)
    old = path.read_bytes()
    undo = _set_aside(path, stash, out)
    if op == "cut short" and old:
        n = rng.choice([1, rng.randint(1, len(old))])
        path.write_bytes(old[:-n])
        return f"{label} cut short by {'one byte' if n == 1 else 'some bytes'}", undo
    if op in ("cut short", "extended"):
        n = rng.choice([1, rng.randint(2, 4096)])
        path.write_bytes(old + rng.randbytes(n))
        return f"{label} extended by {'one byte' if n == 1 else 'some bytes'}", undo
    if op == "symlink":
        decoy = stash / f"{next(_aside):04d}-same-size-{name}"
        decoy.write_bytes(rng.randbytes(len(old)))
        os.symlink(decoy, path)
        return f"{label} replaced by a symlink to a same-size file", undo
    if op == "altered":
        path.write_bytes(old)
        if corrupt(rng, path, None) is not None:  # no donor: never a no-op, but be sure
            return f"{label} altered (bit flip, truncation or a byte appended)", undo
        path.unlink()
    return f"{label} removed", undo


def lose_copy(
    rng: random.Random, ddir: Path, run_id: str, backup: dict, stash: Path, out: Outcome
) -> list[tuple[str, Callable[[], None]]]:
    """Damage one destination's copy of ``run_id``: the whole run or destination directory
    moved away (an unmounted disk, a pruned run), or one or two of its files damaged.
    [(what, undo)], to be undone last first."""
    r = rng.random()
    if r < 0.12:
        return [("run directory moved away", _set_aside(ddir / run_id, stash, out))]
    if r < 0.16:  # the same files, but held elsewhere: not a copy this destination holds
        return [("run directory swapped for a symlink to it", _set_aside(ddir / run_id, stash, out, link_back=True))]
    if r < 0.22:
        return [("destination directory moved away", _set_aside(ddir, stash, out))]
    names = ["MANIFEST.json", "SHA256SUMS"] + [
        n for p in backup["policies"].values() for n in (p["archive"], p["sums"])
    ]
    # Archives are what is lost in earnest (and have the most ways to go): drawn more often.
    weights = [3 if n.endswith(ARCHIVE_EXTS) else 1 for n in names]
    picked = set()
    for _ in range(rng.choice([1, 1, 2])):
        picked.add(rng.choices(names, weights)[0])
    return [_damage_file(rng, ddir / run_id / n, stash, out) for n in sorted(picked)]


def _verified_run(sb: Sandbox, run_id: str, out: Outcome) -> tuple[dict, list[str]]:
    """scan, backup and verify of ``run_id`` without faults: (backup.ok.json, verified destinations)."""
    for step in ("scan", "backup", "verify"):
        got = fork_run(sb, step, "--run", run_id)
        if got.code:
            out.bad(f"{step} --run {run_id} without faults exited {got.code}: {got.out[-300:]}")
            raise TrialAbort
    rdir = sb.state / "runs" / run_id
    return read_json(rdir / "backup.ok.json"), read_json(rdir / "verify.ok.json")["verified"]


def _copy_missing_events(sb: Sandbox, run_id: str) -> list[str]:
    return [e.get("destination") for e in log_events(sb) if e.get("event") == "copy_missing" and e.get("run") == run_id]


def _judge_clean_on_lost(
    sb: Sandbox,
    out: Outcome,
    run_id: str,
    got: Ran,
    lost_on: list[str],
    held: list[str],
    need: int,
    before: dict,
    logged_before: list[str],
    what: str,
) -> None:
    """clean after ``lost_on`` lost their copies: below the quorum it fails (1) with the data
    untouched; with enough left it deletes (0) and names exactly the lost ones, in its log,
    in clean.ok.json, and by leaving them out of the catalogue."""
    logged = _copy_missing_events(sb, run_id)
    if logged[: len(logged_before)] != logged_before:
        out.bad(f"{what}: earlier copy_missing lines of run {run_id} changed")
    if sorted(logged[len(logged_before) :]) != sorted(lost_on):
        out.bad(f"{what}: clean logged copy_missing for {logged[len(logged_before) :]}, expected {sorted(lost_on)}")
    ok = read_json(sb.state / "runs" / run_id / "clean.ok.json")
    if len(held) < need:
        if got.code != 1:
            out.bad(
                f"{what}: {len(held)} of quorum {need} copies left, clean exited {got.code} (expected 1): "
                f"{got.out[-300:]}"
            )
        if data_ids(sb) != before:
            out.bad(f"{what}: {len(held)} of quorum {need} copies left, yet the data changed")
        if ok is not None:
            out.bad(f"{what}: clean.ok.json written below the quorum")
            raise TrialAbort
        return
    if got.code != 0 or not isinstance(ok, dict):
        out.bad(f"{what}: {len(held)} copies left for quorum {need}, clean exited {got.code}: {got.out[-300:]}")
        raise TrialAbort
    if sorted(ok.get("copies_missing") or {}) != sorted(lost_on):
        out.bad(
            f"{what}: clean.ok.json copies_missing is {sorted(ok.get('copies_missing') or {})}, "
            f"expected {sorted(lost_on)}"
        )
    try:
        lines = (sb.state / "catalogue" / f"{run_id}.jsonl").read_bytes().splitlines()
    except OSError:
        lines = []
    named = {tuple(json.loads(line)["destinations"]) for line in lines}
    if named - {tuple(held)}:
        out.bad(f"{what}: the catalogue names {sorted(named)} as holding the copies, only {held} do")


def trial_copy_lost(rng, sb, scratch, out):
    # Two destinations more often than elsewhere: only they can lose a copy and keep the quorum.
    configure(sb, rng, dests=rng.choice([1, 2, 2]))
    ds = dataset(sb, rng, 4, 20, expired_p=0.85)
    need = sb.config["backup"]["require_verified_copies"]
    dests = destinations(sb)
    stash = sb.base.parent / "stash"  # beside the sandbox, on its file system: renames, out of every root
    stash.mkdir()
    base = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 3600))
    roots = [(Path(p["root"]).name, p["include"][0].rpartition(".")[2]) for p in sb.config["policies"]]
    run_id, runs = None, 0
    for round_ in range(out.count(rng, 6, 12)):
        if run_id is None:  # the last run was cleaned: a new one, with new expired files to archive
            run_id, runs = f"{base}-{runs:04x}", runs + 1
            for i in range(rng.randint(1, 4)):
                root, ext = rng.choice(roots)
                ds.add(root, b"lost/r%02d-%d." % (runs, i) + ext.encode(), random_content(rng), 60, True)
            backup, verified = _verified_run(sb, run_id, out)
        lost_on = sorted(rng.sample(verified, k=rng.choice([1, 1, len(verified)])))
        held = [d for d in verified if d not in lost_on]
        done = []
        for dname in lost_on:
            done += [
                (f"{dname}: {what}", undo) for what, undo in lose_copy(rng, dests[dname], run_id, backup, stash, out)
            ]
        what = f"round {round_}, run {run_id}: " + "; ".join(w for w, _ in done)
        before, logged_before = data_ids(sb), _copy_missing_events(sb, run_id)
        got = fork_run(sb, "clean", "--run", run_id)
        out.faults += 1
        for w, _ in done:
            out.notes.append(w.partition(": ")[2])
        out.notes.append(
            f"{len(lost_on)} of {len(verified)} verified copies lost, quorum {need}: clean exited {got.code}"
        )
        _judge_clean_on_lost(sb, out, run_id, got, lost_on, held, need, before, logged_before, what)
        for _, undo in reversed(done):
            undo()
        after_fault(sb, ds, out, what)
        if got.code == 0:
            run_id = None
    recover_and_judge(sb, ds, scratch, out)
