"""The benchmark's rows and how they run: where the work happens (bench/work/), the rows
(qts-ops maintenance and its steps, the shell pipeline with the same guarantees, restic, the
disk's floor, GNU tar), each timed on a fresh copy of the pristine data, and the SCALE
points (scan and plan on many empty files); ``Trial``, one row's run."""

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tools.bench.datasets import (
    Scale, build_catalogue, catalogue_path, copy_tree, count_label, index_bytes, rmtree, tree_totals,
)
from tools.bench.timing import Phase, cpu_busy_s, noise, own_cpu_s, shell, timed

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
BENCH = REPO / "bench"
WORK = BENCH / "work"
PY = sys.executable
STEPS = ("scan", "backup", "verify", "clean")
OLDER_THAN_DAYS = 30

# Which working copies (under bench/work/data/) each dataset's run covers.
ROOTS = {"LARGE": ("large",), "MANY": ("many",), "MIXED": ("large", "many")}
# Incompressible data is stored uncompressed where the config allows it per policy (an
# operator would); otherwise it goes through the one global codec, zstd.
PER_POLICY = {"large": {"compression": "none"}}
# Rows that leave the data as it was share one copy; the others delete it. "maintenance",
# "maintenance-low" and "steps" run at pace full (the fastest run); "maintenance-gentle" at
# the default pace gentle, with its priorities (SCHED_IDLE), as cron runs it.
KEEPING_ROWS = ("idle", "tar", "floor", "restic")
DELETING_ROWS = ("maintenance", "maintenance-gentle", "maintenance-low", "steps", "shell", "restore")
TAR_RESTORE = "tar -xf + sha256sum -c + sync"
# On MIXED the stand-in core (scripts/core_latency.py: 512-byte appends with fdatasync every
# 5 ms, on the same disk) runs beside these rows; "idle" is the core alone, for IDLE_S.
CORE_DATASET = "MIXED"
CORE_ROWS = ("idle", "maintenance", "maintenance-gentle", "shell")
IDLE_S = 10.0


@dataclass
class Trial:
    """One row run once on one dataset: its timed phases and what the machine did meanwhile."""
    dataset: str
    row: str
    repeat: int
    phases: list[Phase]
    loadavg: tuple
    other_cpu_s: float = 0.0   # CPU the rest of the machine used while this trial ran (noise)
    span_s: float = 0.0
    facts: dict = field(default_factory=dict)  # out_bytes, left_files, ...

    @property
    def ok(self) -> bool:
        return bool(self.phases) and all(p.ok for p in self.phases)

    @property
    def total_s(self) -> float:
        return sum(p.wall_s for p in self.phases if p.counted)

    @property
    def peak_rss_kib(self) -> int:
        return max((p.peak_rss_kib for p in self.phases if p.counted), default=0)


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def per_policy_compression() -> bool:
    """Whether this checkout's retention.yaml schema has a per-policy ``compression`` key."""
    sys.path.insert(0, str(REPO))
    try:
        from ops.config import POLICY_KEYS
    except ImportError:
        return False
    finally:
        sys.path.remove(str(REPO))
    return "compression" in POLICY_KEYS


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(2)


def ensure_restic(allow_install: bool) -> tuple[str | None, str]:
    """restic's path, or None and why not; tries `apt-get install restic` once if allowed."""
    path = shutil.which("restic")
    if path:
        return path, "on PATH"
    if not allow_install:
        return None, "restic is not on PATH (--no-install given)"
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return None, "restic is not on PATH and apt-get is unavailable (or not root) to install it"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    say("restic not found: trying apt-get install -y restic ...")
    for attempt in (["apt-get", "install", "-y", "-q", "restic"], ["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "restic"]):
        r = subprocess.run(attempt, capture_output=True, text=True, env=env)
        if attempt[1] == "install" and r.returncode == 0 and shutil.which("restic"):
            return shutil.which("restic"), "installed with apt-get"
    last = (r.stderr or r.stdout).strip().splitlines()
    return None, "apt-get install restic failed" + (f": {last[-1]}" if last else "")


class Bench:
    """One benchmark run: the rows it times on working copies under bench/work/, and their trials."""

    def __init__(self, scale: Scale, repeat: int, restic: str | None, logs: Path, rows: list[str]):
        self.scale = scale
        self.rows = rows
        self.repeat = repeat
        self.restic = restic
        self.logs = logs
        self.pristine = BENCH / "pristine" / scale.name
        self.data = WORK / "data"
        self.var = WORK / "var"
        self.out = WORK / "out"
        self.intact: dict[str, bool] = {}
        self.trials: list[Trial] = []
        self.stamps: dict[str, dict] = {}

    # ------------------------------------------------------------------ set-up

    def env(self, low_priority: bool = False) -> dict:
        env = {k: v for k, v in os.environ.items()
               if k not in ("QTS_OPS_LOCK_FD", "QTS_OPS_CRASH_AT", "VERBOSE", "QTS_OPS_PRIORITY")}
        if not low_priority:
            env["QTS_OPS_PRIORITY"] = "normal"
        return env

    def config(self, dataset: str, roots: dict[str, Path], pace: str = "full") -> Path:
        """A retention.yaml (JSON is YAML) with one simple older_than policy per root."""
        doc = {
            "version": 1,
            "pace": pace,
            "state_dir": str(self.var / "state"),
            "log_dir": str(self.var / "log"),
            "backup": {"compression": "zstd", "require_verified_copies": 1,
                       "destinations": [{"name": "local", "type": "local", "path": str(self.var / "backups")}]},
            "policies": [{"name": name, "root": str(root), "older_than": f"{OLDER_THAN_DAYS}d", "settle": "10m",
                          "keep_last": 0, "missing_ok": False,
                          **(PER_POLICY.get(name, {}) if per_policy_compression() else {})}
                         for name, root in roots.items()],
        }
        path = WORK / "config" / f"{dataset.lower()}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1) + "\n")
        return path

    def fresh(self, roots: tuple[str, ...]) -> None:
        """Each root a copy of its pristine tree unless the previous row left it intact."""
        for name in roots:
            if self.intact.get(name):
                continue
            started = time.monotonic()
            rmtree(self.data / name)
            self.data.mkdir(parents=True, exist_ok=True)
            copy_tree(self.pristine / name, self.data / name)
            self.intact[name] = True
            say(f"  fresh copy of {name} ({time.monotonic() - started:.1f} s, untimed)")

    def reset_outputs(self) -> None:
        rmtree(self.var)
        rmtree(self.out)
        self.out.mkdir(parents=True)

    def write_list(self, roots: tuple[str, ...]) -> Path:
        """The NUL-separated list of expired files, relative to bench/work/data (untimed)."""
        lst = self.out / "list"
        with open(lst, "wb") as f:
            subprocess.run(["find", *roots, "-type", "f", "-mtime", f"+{OLDER_THAN_DAYS}", "-print0"],
                           cwd=self.data, stdout=f, check=True)
        return lst

    def log(self, dataset: str, row: str, rep: int) -> Path:
        return self.logs / f"{dataset.lower()}-{row}-{rep + 1}.log"

    # ------------------------------------------------------------------ rows

    def row_maintenance(self, ds: str, rep: int, low: bool = False, pace: str = "full") -> list[Phase]:
        cfg = self.config(ds, {n: self.data / n for n in ROOTS[ds]}, pace)
        row = "maintenance-low" if low else "maintenance" if pace == "full" else f"maintenance-{pace}"
        p = timed("maintenance", [PY, SCRIPTS / "maintenance.py", "--config", cfg], self.log(ds, row, rep),
                  env=self.env(low_priority=low or pace == "gentle"))
        p.extra["work_s"] = step_work_times(self.var / "log", None)
        return [p]

    def row_steps(self, ds: str, rep: int) -> list[Phase]:
        cfg = self.config(ds, {n: self.data / n for n in ROOTS[ds]})
        run_id = new_run_id()
        phases = []
        for step in STEPS:
            p = timed(step, [PY, SCRIPTS / f"{step}.py", "--config", cfg, "--run", run_id],
                      self.log(ds, "steps", rep), env=self.env())
            phases.append(p)
            if not p.ok:
                break
        work = step_work_times(self.var / "log", run_id)
        for p in phases:
            p.extra["work_s"] = work.get(p.name)
        clean = self.var / "state" / "runs" / run_id / "clean.ok.json"
        if clean.exists():  # what adding the run's deletions to the catalogue's index cost clean
            phases[-1].extra["indexed_s"] = json.loads(clean.read_text()).get("indexed_s")
        return phases

    def row_shell(self, ds: str, rep: int) -> list[Phase]:
        """The homemade pipeline an operator would write, with the same guarantees:
        hash the sources, archive, sync, re-read the archive and check every file, delete."""
        roots = " ".join(ROOTS[ds])
        log, cwd = self.log(ds, "shell", rep), self.data
        steps = [
            ("find", f"find {roots} -type f -mtime +{OLDER_THAN_DAYS} -print0 > ../out/list"),
            ("sha256sum", "xargs -0 sha256sum -- < ../out/list > ../out/sums"),
            ("tar+zstd", "tar --null -T ../out/list -I 'zstd -3 -T0' -cf ../out/shell.tar.zst"),
            ("sync", "sync"),
            ("extract+check", "mkdir ../out/x && tar -I zstd -xf ../out/shell.tar.zst -C ../out/x && "
                              "cd ../out/x && sha256sum -c --quiet ../sums"),
            ("rm", "xargs -0 rm -f -- < ../out/list"),
        ]
        phases = []
        for name, script in steps:
            phases.append(shell(name, script, log, cwd))
            if not phases[-1].ok:
                return phases
        # Not counted: a real script must also remove its extraction, but this keeps the
        # baseline conservative (faster), so the targets are not met by its overheads.
        phases.append(shell("rm -rf extraction", "rm -rf ../out/x", log, cwd, counted=False))
        return phases

    def row_restic(self, ds: str, rep: int) -> list[Phase]:
        self.write_list(ROOTS[ds])
        env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=str(self.out / "restic"),
                   RESTIC_CACHE_DIR=str(self.out / "restic-cache"))
        log = self.log(ds, "restic", rep)
        init = timed("init", [self.restic, "init", "-q"], log, env=env, counted=False)
        if not init.ok:
            return [init]
        backup = timed("backup", [self.restic, "backup", "-q", "--files-from-raw", "../out/list"], log,
                       env=env, cwd=self.data)
        if not backup.ok:
            return [init, backup]
        return [init, backup, timed("check --read-data", [self.restic, "check", "-q", "--read-data"], log, env=env)]

    def row_restore(self, ds: str, rep: int) -> list[Phase]:
        """A whole run restored at the full pace (every file checked, durable when it exits)
        beside what an operator would type for the same guarantees on the same archives."""
        cfg = self.config(ds, {n: self.data / n for n in ROOTS[ds]})
        log = self.log(ds, "restore", rep)
        prep = timed("maintenance", [PY, SCRIPTS / "maintenance.py", "--config", cfg], log, env=self.env(),
                     counted=False)
        if not prep.ok:
            return [prep]
        run_id = sorted(os.listdir(self.var / "state" / "runs"))[-1]
        run_dir = self.var / "backups" / run_id
        # Untimed: the first files created after clean's mass unlink wait for the file system
        # to settle that unlink (ext4 here is mounted with discard); whichever of the two
        # timed phases came first would pay for it. One extraction pays it (and is left in
        # place until the trial ends: removing it would leave a new debt of the same kind).
        settle = shell("settle: tar -xf, sync", " && ".join(
            f"mkdir -p ../out/settle/{n} && tar -xf {run_dir}/{n}.tar* -C ../out/settle/{n}" for n in ROOTS[ds])
            + " && sync", log, self.data, counted=False)
        def restore():
            return timed("restore", [PY, SCRIPTS / "restore.py", "--config", cfg, "--run", run_id, "--to",
                                     self.out / "restored", "--pace", "full"], log, env=self.env())
        script = " && ".join(
            f"mkdir -p ../out/tar/{n} && tar -xf {run_dir}/{n}.tar* -C ../out/tar/{n} && "
            f"(cd ../out/tar/{n} && sha256sum -c --quiet {run_dir}/{n}.sha256)" for n in ROOTS[ds]) + " && sync"
        os.sync()
        # Alternately first and second: what the file system still owes lands on neither alone.
        if rep % 2:
            tar = shell(TAR_RESTORE, script, log, self.data)
            return [prep, settle, restore(), tar]
        ours = restore()
        return [prep, settle, ours, shell(TAR_RESTORE, script, log, self.data)]

    def run_catalogue(self) -> None:
        """find on a synthetic catalogue of scale.catalogue_entries deletions (blocks of
        catalogue_block per run, as clean writes them): the index built on first use, then
        an exact path and a directory glob, with the sizes on disk of the blocks and the index."""
        s = self.scale
        ds = f"CATALOGUE-{count_label(s.catalogue_entries)}"
        state = self.var / "state"
        say(f"{ds}: writing {s.catalogue_entries:,} catalogue lines (untimed)")
        blocks = build_catalogue(state / "catalogue", s.catalogue_entries, s.catalogue_block)
        probe = blocks // 2
        exact = catalogue_path(probe, probe * 7919 % s.catalogue_block)
        glob = f"/data/qts/ticks/{probe:04d}/123/*"
        for rep in range(self.repeat):
            for row, pattern in (("find (index build)", exact), ("find exact", exact), ("find glob", glob)):
                if row == "find (index build)" and rep:
                    continue
                say(f"{ds} {row} ({rep + 1}/{self.repeat})")
                load, busy, own, t0 = os.getloadavg(), cpu_busy_s(), own_cpu_s(), time.monotonic()
                log = self.log(ds, row.replace(" ", "-").replace("(", "").replace(")", ""), rep)
                p = timed(row, [PY, "-m", "tools.bench.findtime", state, pattern], log, env=self.env(), cwd=REPO)
                t = Trial(ds, row, rep, [p], load, noise(busy, own), time.monotonic() - t0)
                if p.ok:  # the child's own figures: the index's sync and the query, without its start
                    said = [line for line in log.read_text().splitlines() if line.startswith("{")]
                    t.facts.update(json.loads(said[-1]))
                t.facts["blocks_bytes"] = tree_totals(state / "catalogue")[1] - index_bytes(state / "catalogue")
                t.facts["index_bytes"] = index_bytes(state / "catalogue")
                self.trials.append(t)
                say(f"  {t.total_s:.2f} s, {t.facts.get('found')} found, sync {t.facts.get('sync_s')} s, "
                    f"query {t.facts.get('query_s')} s, {'ok' if t.ok else f'FAILED: exit {p.exit_code}'}")
        self.reset_outputs()

    def row_idle(self, ds: str, rep: int) -> list[Phase]:
        """Nothing but the stand-in core, for its idle latency (not timed as work)."""
        return [shell("core alone", f"sleep {IDLE_S}", self.log(ds, "idle", rep), self.data, counted=False)]

    def row_floor(self, ds: str, rep: int) -> list[Phase]:
        self.write_list(ROOTS[ds])
        log = self.log(ds, "floor", rep)
        write = shell("cat > 1 file; sync", "xargs -0 cat -- < ../out/list > ../out/floor.bin && sync", log,
                      self.data)
        if not write.ok:
            return [write]
        return [write, shell("cat file > /dev/null (warm)", "cat ../out/floor.bin > /dev/null", log, self.data)]

    def row_tar(self, ds: str, rep: int) -> list[Phase]:
        self.write_list(ROOTS[ds])
        log = self.log(ds, "tar", rep)
        tar = shell("tar -cf", "tar --null -T ../out/list -cf ../out/plain.tar", log, self.data)
        if not tar.ok:
            return [tar]
        return [tar, shell("sync", "sync", log, self.data, counted=False)]

    # ------------------------------------------------------------------ running

    def rows_for(self, rep: int) -> list[str]:
        deleting = [r for r in DELETING_ROWS if r in self.rows]
        k = rep % len(deleting) if deleting else 0
        keeping = [r for r in KEEPING_ROWS if r in self.rows and (r != "restic" or self.restic)]
        return keeping + deleting[k:] + deleting[:k]

    def wanted(self, ds: str, row: str) -> bool:
        """The idle row only where the core is measured; every other row everywhere."""
        return row != "idle" or ds == CORE_DATASET

    def run_trial(self, ds: str, row: str, rep: int) -> Trial:
        roots = ROOTS[ds]
        self.fresh(roots)
        self.reset_outputs()
        os.sync()  # the copy's and the last trial's writeback must not land in this trial's time
        load, busy, own, t0 = os.getloadavg(), cpu_busy_s(), own_cpu_s(), time.monotonic()
        fn = {"maintenance": lambda: self.row_maintenance(ds, rep),
              "maintenance-gentle": lambda: self.row_maintenance(ds, rep, pace="gentle"),
              "idle": lambda: self.row_idle(ds, rep),
              "maintenance-low": lambda: self.row_maintenance(ds, rep, low=True),
              "steps": lambda: self.row_steps(ds, rep), "shell": lambda: self.row_shell(ds, rep),
              "restic": lambda: self.row_restic(ds, rep), "floor": lambda: self.row_floor(ds, rep),
              "restore": lambda: self.row_restore(ds, rep),
              "tar": lambda: self.row_tar(ds, rep)}[row]
        core = ds == CORE_DATASET and row in CORE_ROWS
        with CoreStandIn(self.out / "core", self.log(ds, row, rep)) if core else contextlib.nullcontext() as stand_in:
            phases = fn()
        trial = Trial(ds, row, rep, phases, load, noise(busy, own), time.monotonic() - t0)
        if stand_in is not None:
            trial.facts["core"] = stand_in.result
        if row in DELETING_ROWS:
            for name in roots:
                self.intact[name] = False
            trial.facts["left_files"] = sum(tree_totals(self.data / n)[0] for n in roots)
        trial.facts["out_bytes"] = self.output_bytes(row)
        return trial

    def output_bytes(self, row: str) -> int | None:
        if row in ("maintenance", "maintenance-gentle", "maintenance-low", "steps"):
            return tree_totals(self.var / "backups")[1]
        name = {"shell": "shell.tar.zst", "floor": "floor.bin", "tar": "plain.tar"}.get(row)
        if name:
            p = self.out / name
            return p.stat().st_size if p.exists() else None
        if row == "restic":
            return tree_totals(self.out / "restic")[1]
        return None

    def run_dataset(self, ds: str) -> None:
        for rep in range(self.repeat):
            for row in self.rows_for(rep):
                if not self.wanted(ds, row):
                    continue
                say(f"{ds} {row} ({rep + 1}/{self.repeat})")
                t = self.run_trial(ds, row, rep)
                self.trials.append(t)
                status = "ok" if t.ok else "FAILED: " + ", ".join(f"{p.name} exit {p.exit_code}"
                                                                   for p in t.phases if not p.ok)
                left = t.facts.get("left_files")
                core = t.facts.get("core")
                say(f"  {t.total_s:.2f} s, peak RSS {t.peak_rss_kib / 1024:.0f} MiB, {status}"
                    + (f", {left} files left" if left else "")
                    + (f"; core p99 {core['p99_ms']:.2f} ms, p99.9 {core['p999_ms']:.2f} ms" if core else ""))
        self.reset_outputs()

    def run_scale(self) -> None:
        root = self.pristine / "scale"
        s = self.scale
        points = {f"SCALE-{count_label(s.scale_files // s.scale_dirs * s.scale_point_dirs)}": root / "a",
                  f"SCALE-{count_label(s.scale_files)}": root}
        for rep in range(self.repeat):
            for ds, policy_root in points.items():
                cfg = self.config(ds, {"scale": policy_root})
                for row in ("scan", "plan"):
                    say(f"{ds} {row} ({rep + 1}/{self.repeat})")
                    self.reset_outputs()
                    os.sync()
                    load, busy, own, t0 = os.getloadavg(), cpu_busy_s(), own_cpu_s(), time.monotonic()
                    cmd = [PY, SCRIPTS / f"{row}.py", "--config", cfg]
                    p = timed(row, cmd, self.log(ds, row, rep), env=self.env())
                    t = Trial(ds, row, rep, [p], load, noise(busy, own), time.monotonic() - t0)
                    self.trials.append(t)
                    say(f"  {t.total_s:.2f} s, peak RSS {t.peak_rss_kib / 1024:.0f} MiB, "
                        f"{'ok' if t.ok else f'FAILED: exit {p.exit_code}'}")
        self.reset_outputs()


class CoreStandIn:
    """scripts/core_latency.py running beside a trial, on the same disk (under bench/work/),
    from just before the row starts until just after it ends; ``result`` its figures."""

    def __init__(self, where: Path, log: Path):
        self.where, self.log = where, log
        self.result: dict | None = None

    def __enter__(self):
        self.where.mkdir(parents=True, exist_ok=True)
        self.figures = self.where / "core.json"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            # Not nice, no SCHED_IDLE: the stand-in is the core, at the core's priority.
            self.proc = subprocess.Popen([PY, SCRIPTS / "core_latency.py", "--dir", self.where,
                                          "--json", self.figures], stdout=log, stderr=log)
        time.sleep(0.3)  # its first appends are made before the row starts
        return self

    def __exit__(self, *exc):
        time.sleep(0.3)
        self.proc.terminate()
        self.proc.wait()
        try:
            self.result = json.loads(self.figures.read_text())
        except (OSError, ValueError):
            self.result = None


def step_work_times(log_dir: Path, run_id: str | None) -> dict[str, float]:
    """Seconds from each step's own `start` to its `done` log line: the step's work without
    interpreter start-up, imports, lock and chain check (its log timestamps are in ms)."""
    marks: dict[str, dict[str, float]] = {}
    for path in sorted(Path(log_dir).glob("ops-*.log")):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("event") not in ("start", "done") or rec.get("step") not in STEPS:
                    continue
                if run_id is not None and rec.get("run") != run_id:
                    continue
                ts = datetime.strptime(rec["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
                marks.setdefault(rec["step"], {})[rec["event"]] = ts
    return {step: round(m["done"] - m["start"], 3) for step, m in marks.items() if "start" in m and "done" in m}
