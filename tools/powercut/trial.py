"""One trial of the power-cut campaign: a sandbox whose state, destinations and policy
roots all live on the layer; maintenance, a single step or a restore, each with the power
cut at a random operation; after each cut the oracle; at the end a recovery, settling, and
the oracle of ``make chaos`` on what is durable.

Each session ends with a cut: at its operation ``cut_at`` while the workload runs, or at
rest once it has finished (everything not made durable is lost then too, so a step that
exits 0 with its results still in the page cache is caught).
"""

import copy
import json
import os
import random
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path

from ops.state.manifest import STEPS
from tools.chaos.dataset import Dataset, configure, dataset, random_content
from tools.chaos.files import read_tree, sha
from tools.chaos.oracle import _check_archives, archived, destinations, policy_roots, read_json, settle
from tools.chaos.outcome import Outcome
from tools.chaos.runner import Ran, fork_run
from tools.powercut.layer import Power
from tools.sandbox import Sandbox, published_runs

RESTORED = "restored"
_TEMP = re.compile(r"\.tmp-restore-")


@dataclass
class CutOutcome(Outcome):
    rest_cuts: int = 0  # sessions that ended at rest (the workload had finished)
    dropped_writes: int = 0
    dropped_entries: int = 0
    torn: int = 0
    where: list = field(default_factory=list)  # what each mid-run cut interrupted
    resumed: int = 0  # runs a cut left unfinished that the next maintenance finished
    restarted: int = 0  # ... that were left for a new run (the run could not finish)
    restores: int = 0  # restores cut and completed by a second restore
    restores_whole: int = 0  # restores that exited 0 and were whole after the cut at rest that followed


def rebased(sb: Sandbox, base: Path) -> Sandbox:
    """The same sandbox seen under another path (the mount), without writing anything."""
    view = copy.copy(sb)
    for name in ("data", "config_path", "state", "logs", "backups"):
        setattr(view, name, base / getattr(sb, name).relative_to(sb.base))
    view.base = base
    return view


class Trial:
    def __init__(self, rng: random.Random, tdir: Path, out: CutOutcome, lock: Path):
        self.rng, self.out = rng, out
        self.layer = tdir / "layer"
        self.scratch = tdir / "scratch"
        self.layer.mkdir(parents=True)
        self.power = Power(self.layer, lock, rng.randrange(1 << 32))
        self.sb = Sandbox(self.power.backing / "sb")  # written straight to the backing: durable
        self.sbm = rebased(self.sb, self.power.mnt / "sb")  # what the workload sees
        self.estimate: dict[str, int] = {}
        self.cache: dict = {}

    # -- sessions ---------------------------------------------------------------------------

    def session(self, what: str, run, cut_at: int | None) -> tuple[Ran, bool]:
        """One power-on: ``run`` the workload on the mount, then cut (at ``cut_at`` or at
        rest); what it returned, and whether the cut came while it ran."""
        if cut_at is not None:
            self.power.arm(cut_at)
        got = run()
        rep = self.power.cut()
        if rep["problems"]:
            self.out.bad(f"the layer's rebuild after {what}: {rep['problems'][:3]}")
        self.out.dropped_writes += rep["writes"]
        self.out.dropped_entries += rep["entries"]
        self.out.torn += rep["torn"]
        if rep["cut"]:
            self.out.faults += 1
            self.out.where.append(phase(what, rep["cut_op"]))
            if got.code != -signal.SIGKILL and got.code != 0:
                # The process that met the cut was killed; another (a helper) may have failed first.
                self.out.notes.append(f"{what} exited {got.code} at the cut")
        else:
            self.out.rest_cuts += 1
            self.estimate[what] = max(self.estimate.get(what, 0), rep["ops"])
        self.check_durable(f"the cut after {what}" + (f" at {rep['cut_op']!r}" if rep["cut"] else " at rest"))
        return got, rep["cut"]

    def fork(self, script: str, *args: str) -> Ran:
        return fork_run(self.sbm, script, *args, out_dir=self.layer)

    def cut_point(self, what: str, fallback: int) -> int:
        return self.rng.randint(1, max(2, self.estimate.get(what, fallback)))

    def maintenance(self, cut: bool, *args: str) -> tuple[Ran, bool]:
        cut_at = self.cut_point("maintenance", 400) if cut else None
        return self.session("maintenance", lambda: self.fork("maintenance", *args), cut_at)

    def step(self) -> tuple[Ran, bool]:
        """The next step due on the newest run (scan of a new run if it is finished)."""
        runs = self.sb.runs()
        rdir = self.sb.state / "runs" / runs[-1] if runs else None
        due = next((s for s in STEPS if rdir is not None and not (rdir / f"{s}.ok.json").exists()), None)
        args = ("--run", runs[-1]) if due and due != "scan" else ()
        due = due or "scan"
        cut_at = self.cut_point(due, self.estimate.get("maintenance", 400) // 3)
        return self.session(due, lambda: self.fork(due, *args), cut_at)

    def restore(self, cut: bool, again: tuple | None = None) -> tuple[tuple, dict, bool] | None:
        """A verified run's policy restored under restored/<run>-<policy>/ (or ``again``, one
        cut before): its arguments, what it must restore (path -> SHA-256, read from the run's
        records when it was chosen, before compaction packs them), and whether the cut came
        while it ran. A restore that exited 0 is checked whole at once, after its cut at rest."""
        if again is None:
            held = {}  # verified runs that copied something, with their records: (run, policy) -> records
            for r in self.sb.runs():
                rdir = self.sb.state / "runs" / r
                backup = read_json(rdir / "backup.ok.json")
                if not ((rdir / "verify.ok.json").exists() and backup and backup.get("destinations")):
                    continue
                for policy in sorted(backup.get("policies") or {}):
                    if (rdir / f"backup.{policy}.jsonl").exists():
                        held[(r, policy)] = rdir / f"backup.{policy}.jsonl"
            if not held:
                return None
            run_id, policy = self.rng.choice(sorted(held))
            lines = [json.loads(line) for line in held[(run_id, policy)].read_bytes().splitlines()]
            want = {os.fsencode(r["path"]): r["sha256"] for r in lines if r.get("status") == "archived"}
            to = self.sbm.base / RESTORED / f"{run_id}-{policy}"
            pace = self.rng.choice(["full", "gentle"])
            args = ("--run", run_id, "--policy", policy, "--to", str(to), "--pace", pace)
        else:
            args, want = again
        cut_at = self.cut_point("restore", 200) if cut else None
        got, was_cut = self.session("restore", lambda: self.fork("restore", *args), cut_at)
        if not was_cut:
            if got.code:
                self.out.bad(f"restore {' '.join(args[:4])} exited {got.code}: {got.out[-400:]}")
            else:
                self._check_restore_complete(args, want)
                self.out.restores_whole += 1
        return args, want, was_cut

    # -- the oracle after every cut ---------------------------------------------------------

    def check_durable(self, what: str) -> None:
        """What a cut must never break, read on the backing (the durable state only)."""
        out = self.out
        vouched = {(d, r) for d, ddir in destinations(self.sb).items() for r in published_runs(ddir)}
        have = read_tree(self.sb.data)
        missing = {k: f for k, f in self.ds.files.items() if have.files.get(k) != f.content}
        arch = archived(self.sb, self.scratch, out, self.cache, vouched) if missing or vouched else {}
        for key, spec in missing.items():
            if key in have.files:
                out.bad(f"after {what}: {key!r} is still there but its content changed")
            elif sha(spec.content) not in arch.get(key, ()):
                out.bad(f"after {what}: {key!r} is gone and no published run on any destination holds it")
                if key not in out.lost:  # a file, not each cut that found it gone
                    out.lost.append(key)
        self._check_manifests(what)
        self._check_restored(what)

    def _check_manifests(self, what: str) -> None:
        """Every published manifest is whole, and so is every entry file it names."""
        runs_dir = self.sb.state / "runs"
        for run_id in self.sb.runs():
            for step in STEPS:
                ok = runs_dir / run_id / f"{step}.ok.json"
                if not ok.exists():
                    continue
                try:
                    doc = json.loads(ok.read_bytes())
                    files = doc["files"]
                except (ValueError, KeyError, TypeError):
                    self.out.bad(f"after {what}: {run_id}/{ok.name} was published but its contents were lost")
                    continue
                for name, digest in files.items():
                    p = runs_dir / run_id / name
                    if not p.exists():
                        self.out.bad(f"after {what}: {run_id}/{name}, named by {ok.name}, is gone")
                    elif sha(p.read_bytes()) != digest:
                        self.out.bad(f"after {what}: {run_id}/{name}, named by {ok.name}, lost its contents")

    def _check_restored(self, what: str) -> None:
        """No restored file has its final name with content that is not the original's."""
        top = self.sb.base / RESTORED
        if not top.exists():
            return
        roots = policy_roots(self.sb)
        for target in top.iterdir():
            for policy, root in roots.items():
                pdir = target / policy
                if not pdir.exists():
                    continue
                for rel, data in read_tree(pdir).files.items():
                    if _TEMP.search(os.fsdecode(rel)):
                        continue
                    spec = self.ds.files.get(root.encode() + b"/" + rel)
                    if spec is None or sha(data) != sha(spec.content):
                        self.out.bad(
                            f"after {what}: restored {target.name}/{policy}/{rel!r} has its name, not its content"
                        )

    # -- the trial --------------------------------------------------------------------------

    def run(self) -> None:
        configure(self.sb, self.rng)
        if self.rng.random() < 0.5:  # finished runs packed at once: compaction in every maintenance
            self.sb.config["compact_runs_after"] = "0s"
            self.sb.write_config()
        self.ds: Dataset = dataset(self.sb, self.rng, 4, 14)
        with self.power:
            self._sessions()
        self.out.notes += [f"device number changed at {self.power.renumbered} cut(s)"] if self.power.renumbered else []

    def _sessions(self) -> None:
        rng, out = self.rng, self.out
        if rng.random() < 0.7:  # a finished run first: compaction, the catalogue, restore
            self.maintenance(False)
            self._more_files()
        cut_restore = None
        for _ in range(rng.randint(2, 5)):
            r = rng.random()
            if r < 0.15:
                restored = self.restore(True)
                if restored is not None:
                    if restored[2]:
                        cut_restore = restored[:2]
                    continue
            if r < 0.35:
                self.step()
            else:
                before = self._unfinished()
                got, was_cut = self.maintenance(True)
                if not was_cut and got.code:
                    out.bad(f"maintenance exited {got.code} with no cut: {got.out[-400:]}")
                self._recovered(before)
            if rng.random() < 0.3:
                self._more_files()
        before = self._unfinished()
        rec, _ = self.maintenance(False)
        out.recovered = rec.code == 0
        if rec.code:
            out.bad(f"recovery maintenance exited {rec.code}: {rec.out[-400:]}")
        self._recovered(before)
        if cut_restore is not None:
            before = len(out.violations)
            self.restore(False, again=cut_restore)
            out.restores += len(out.violations) == before
        settle(self.sb, self.ds, out, run=lambda: self.maintenance(False)[0])  # each run a session, cut at rest
        _check_archives(self.sb, out)

    def _more_files(self) -> None:
        """New files of the core, straight to the backing (durable, as the dataset's), right
        after a cut: no directory is changed since then, so no cut can undo them."""
        roots = list(policy_roots(self.sb).values())
        for i in range(self.rng.randint(1, 5)):
            expired = self.rng.random() < 0.7
            age = self.rng.uniform(32, 400) if expired else self.rng.uniform(0, 25)
            name = b"late/%d-%d.%s" % (len(self.ds.files), i, b"jsonl" if roots[-1] == "journals" else b"log")
            self.ds.add(roots[-1], name, random_content(self.rng), age, expired)

    def _unfinished(self) -> str | None:
        runs = self.sb.runs()
        if runs and not (self.sb.state / "runs" / runs[-1] / "clean.ok.json").exists():
            return runs[-1]
        return None

    def _recovered(self, left: str | None) -> None:
        if left is None:
            return
        if (self.sb.state / "runs" / left / "clean.ok.json").exists():
            self.out.resumed += 1
        elif self.sb.runs()[-1] != left:
            self.out.restarted += 1

    def _check_restore_complete(self, args: tuple, want: dict) -> None:
        run_id, policy, to = args[1], args[3], Path(args[5])
        got = read_tree(self.sb.base / to.relative_to(self.sbm.base) / policy).files
        for rel, digest in want.items():
            if sha(got.get(rel, b"\0missing")) != digest:
                self.out.bad(f"restore of {run_id}/{policy} exited 0, then a cut: {rel!r} not there whole")


def phase(what: str, op: str) -> str:
    """Where a cut landed, from the operation it stopped: the step and the kind of file."""
    kind, _, path = op.partition(" ")
    path = path.split(" -> ")[-1]
    name = path.rsplit("/", 1)[-1].lstrip(".")
    if what == "restore":
        return "restore"
    if "/var/state/runs/" in path:
        if "/" not in path.split("/var/state/runs/", 1)[1]:
            return "a run's directory"
        step = name.split(".")[0]
        return f"{step} manifest" if ".ok.json" in name else f"{step} entries"
    if "/var/state/" in path:
        part = path.split("/var/state/", 1)[1].split("/", 1)[0]
        return {"catalogue": "catalogue", "compacted": "compaction", "runs": "a run's directory"}.get(
            part, f"state: {part.lstrip('.').split('.')[0]}"
        )
    if "/var/backups" in path or "/var/offsite" in path:
        return "backup: publish" if kind in ("rename", "fsyncdir") else "backup: archive"
    if "/data/" in path:
        return "clean" if kind in ("unlink", "rmdir", "fsyncdir") else f"data: {kind}"
    if "/var/log" in path:
        return "log"
    return f"{kind} of a parent directory"
