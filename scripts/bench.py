#!/usr/bin/env python3
"""Benchmark QTS Ops (`make bench`) against a shell pipeline with the same guarantees,
restic and the disk's floor, on data built once under bench/ and reused.

Datasets (BENCH_SCALE=small or --quick shrinks each 20x):
  LARGE  2 GiB of 10 MiB incompressible files
  MANY   200,000 compressible CSV/log files of 1-4 KiB in 2,000 directories
  MIXED  both, as two policies of one run
  SCALE  1,000,000 empty files: scan and plan only, peak RSS at 100k and at 1M

The pipeline deletes what it archived, so every trial that deletes starts from a fresh
`cp -a` of the pristine tree (new inodes and ctimes, old mtimes); only the timed parts
are timed. Rows alternate within each repeat (BENCH_REPEAT, default 3); each figure is
the median with min-max. Results: a table on stdout, the figures in bench/results/*.json.
The page cache is warm throughout (nothing is dropped); `sync` runs untimed before each trial.
"""

import argparse
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

import _benchlib as lib
from _benchlib import MiB, Phase

REPO = Path(__file__).resolve().parent.parent
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
# Rows that leave the data as it was share one copy; the others delete it.
KEEPING_ROWS = ("tar", "floor", "restic")
DELETING_ROWS = ("maintenance", "maintenance-low", "steps", "shell")
ROW_TITLES = {
    "maintenance": "qts-ops maintenance",
    "maintenance-low": "qts-ops maintenance, low priority",
    "steps": "qts-ops steps one by one",
    "shell": "shell: find|sha256sum|tar+zstd|sync|check|rm",
    "restic": "restic backup + check --read-data",
    "floor": "floor: cat sources > 1 file, sync; read back",
    "tar": "GNU tar -cf (no compression)",
    "scan": "qts-ops scan",
    "plan": "qts-ops plan",
}
BASELINES = ("shell", "restic", "floor", "tar")


@dataclass
class Trial:
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
    def __init__(self, scale: lib.Scale, repeat: int, restic: str | None, logs: Path, rows: list[str]):
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

    def config(self, dataset: str, roots: dict[str, Path]) -> Path:
        """A retention.yaml (JSON is YAML) with one simple older_than policy per root."""
        doc = {
            "version": 1,
            "state_dir": str(self.var / "state"),
            "log_dir": str(self.var / "log"),
            "backup": {"compression": "zstd", "require_verified_copies": 1,
                       "destinations": [{"name": "local", "type": "local", "path": str(self.var / "backups")}]},
            "policies": [{"name": name, "root": str(root), "older_than": f"{OLDER_THAN_DAYS}d", "settle": "10m",
                          "keep_last": 0, "missing_ok": False, **(PER_POLICY.get(name, {}) if per_policy_compression() else {})}
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
            lib.rmtree(self.data / name)
            self.data.mkdir(parents=True, exist_ok=True)
            lib.copy_tree(self.pristine / name, self.data / name)
            self.intact[name] = True
            say(f"  fresh copy of {name} ({time.monotonic() - started:.1f} s, untimed)")

    def reset_outputs(self) -> None:
        lib.rmtree(self.var)
        lib.rmtree(self.out)
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

    def row_maintenance(self, ds: str, rep: int, low: bool = False) -> list[Phase]:
        cfg = self.config(ds, {n: self.data / n for n in ROOTS[ds]})
        row = "maintenance-low" if low else "maintenance"
        p = lib.timed("maintenance", [PY, SCRIPTS / "maintenance.py", "--config", cfg], self.log(ds, row, rep),
                      env=self.env(low_priority=low))
        p.extra["work_s"] = step_work_times(self.var / "log", None)
        return [p]

    def row_steps(self, ds: str, rep: int) -> list[Phase]:
        cfg = self.config(ds, {n: self.data / n for n in ROOTS[ds]})
        run_id = new_run_id()
        phases = []
        for step in STEPS:
            p = lib.timed(step, [PY, SCRIPTS / f"{step}.py", "--config", cfg, "--run", run_id],
                          self.log(ds, "steps", rep), env=self.env())
            phases.append(p)
            if not p.ok:
                break
        work = step_work_times(self.var / "log", run_id)
        for p in phases:
            p.extra["work_s"] = work.get(p.name)
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
            phases.append(lib.shell(name, script, log, cwd))
            if not phases[-1].ok:
                return phases
        # Not counted: a real script must also remove its extraction, but this keeps the
        # baseline conservative (faster), so the targets are not met by its overheads.
        phases.append(lib.shell("rm -rf extraction", "rm -rf ../out/x", log, cwd, counted=False))
        return phases

    def row_restic(self, ds: str, rep: int) -> list[Phase]:
        self.write_list(ROOTS[ds])
        env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=str(self.out / "restic"),
                   RESTIC_CACHE_DIR=str(self.out / "restic-cache"))
        log = self.log(ds, "restic", rep)
        init = lib.timed("init", [self.restic, "init", "-q"], log, env=env, counted=False)
        if not init.ok:
            return [init]
        backup = lib.timed("backup", [self.restic, "backup", "-q", "--files-from-raw", "../out/list"], log,
                           env=env, cwd=self.data)
        if not backup.ok:
            return [init, backup]
        return [init, backup, lib.timed("check --read-data", [self.restic, "check", "-q", "--read-data"], log, env=env)]

    def row_floor(self, ds: str, rep: int) -> list[Phase]:
        self.write_list(ROOTS[ds])
        log = self.log(ds, "floor", rep)
        write = lib.shell("cat > 1 file; sync", "xargs -0 cat -- < ../out/list > ../out/floor.bin && sync", log, self.data)
        if not write.ok:
            return [write]
        return [write, lib.shell("cat file > /dev/null (warm)", "cat ../out/floor.bin > /dev/null", log, self.data)]

    def row_tar(self, ds: str, rep: int) -> list[Phase]:
        self.write_list(ROOTS[ds])
        log = self.log(ds, "tar", rep)
        tar = lib.shell("tar -cf", "tar --null -T ../out/list -cf ../out/plain.tar", log, self.data)
        if not tar.ok:
            return [tar]
        return [tar, lib.shell("sync", "sync", log, self.data, counted=False)]

    # ------------------------------------------------------------------ running

    def rows_for(self, rep: int) -> list[str]:
        deleting = [r for r in DELETING_ROWS if r in self.rows]
        k = rep % len(deleting) if deleting else 0
        keeping = [r for r in KEEPING_ROWS if r in self.rows and (r != "restic" or self.restic)]
        return keeping + deleting[k:] + deleting[:k]

    def run_trial(self, ds: str, row: str, rep: int) -> Trial:
        roots = ROOTS[ds]
        self.fresh(roots)
        self.reset_outputs()
        os.sync()  # the copy's and the last trial's writeback must not land in this trial's time
        load, busy, own, t0 = os.getloadavg(), lib.cpu_busy_s(), lib.own_cpu_s(), time.monotonic()
        fn = {"maintenance": lambda: self.row_maintenance(ds, rep),
              "maintenance-low": lambda: self.row_maintenance(ds, rep, low=True),
              "steps": lambda: self.row_steps(ds, rep), "shell": lambda: self.row_shell(ds, rep),
              "restic": lambda: self.row_restic(ds, rep), "floor": lambda: self.row_floor(ds, rep),
              "tar": lambda: self.row_tar(ds, rep)}[row]
        phases = fn()
        trial = Trial(ds, row, rep, phases, load, noise(busy, own), time.monotonic() - t0)
        if row in DELETING_ROWS:
            for name in roots:
                self.intact[name] = False
            trial.facts["left_files"] = sum(lib.tree_totals(self.data / n)[0] for n in roots)
        trial.facts["out_bytes"] = self.output_bytes(row)
        return trial

    def output_bytes(self, row: str) -> int | None:
        if row in ("maintenance", "maintenance-low", "steps"):
            return lib.tree_totals(self.var / "backups")[1]
        name = {"shell": "shell.tar.zst", "floor": "floor.bin", "tar": "plain.tar"}.get(row)
        if name:
            p = self.out / name
            return p.stat().st_size if p.exists() else None
        if row == "restic":
            return lib.tree_totals(self.out / "restic")[1]
        return None

    def run_dataset(self, ds: str) -> None:
        for rep in range(self.repeat):
            for row in self.rows_for(rep):
                say(f"{ds} {row} ({rep + 1}/{self.repeat})")
                t = self.run_trial(ds, row, rep)
                self.trials.append(t)
                status = "ok" if t.ok else "FAILED: " + ", ".join(f"{p.name} exit {p.exit_code}" for p in t.phases if not p.ok)
                left = t.facts.get("left_files")
                say(f"  {t.total_s:.2f} s, peak RSS {t.peak_rss_kib / 1024:.0f} MiB, {status}"
                    + (f", {left} files left" if left else ""))
        self.reset_outputs()

    def run_scale(self) -> None:
        root = self.pristine / "scale"
        s = self.scale
        points = {f"SCALE-{lib.count_label(s.scale_files // s.scale_dirs * s.scale_point_dirs)}": root / "a",
                  f"SCALE-{lib.count_label(s.scale_files)}": root}
        for rep in range(self.repeat):
            for ds, policy_root in points.items():
                cfg = self.config(ds, {"scale": policy_root})
                for row in ("scan", "plan"):
                    say(f"{ds} {row} ({rep + 1}/{self.repeat})")
                    self.reset_outputs()
                    os.sync()
                    load, busy, own, t0 = os.getloadavg(), lib.cpu_busy_s(), lib.own_cpu_s(), time.monotonic()
                    cmd = [PY, SCRIPTS / f"{row}.py", "--config", cfg]
                    p = lib.timed(row, cmd, self.log(ds, row, rep), env=self.env())
                    t = Trial(ds, row, rep, [p], load, noise(busy, own), time.monotonic() - t0)
                    self.trials.append(t)
                    say(f"  {t.total_s:.2f} s, peak RSS {t.peak_rss_kib / 1024:.0f} MiB, "
                        f"{'ok' if t.ok else f'FAILED: exit {p.exit_code}'}")
        self.reset_outputs()


def noise(busy_before: float, own_before: float) -> float:
    """CPU seconds that processes other than the bench and its children used since then."""
    return max(0.0, (lib.cpu_busy_s() - busy_before) - (lib.own_cpu_s() - own_before))


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


# ---------------------------------------------------------------------------- summary

def summarise(trials: list[Trial], stamps: dict) -> list[dict]:
    """One entry per (dataset, row) and per (dataset, row, phase): medians over good trials."""
    out = []
    keys = []
    for t in trials:
        if (t.dataset, t.row) not in keys:
            keys.append((t.dataset, t.row))
    for ds, row in keys:
        ts = [t for t in trials if t.dataset == ds and t.row == row]
        good = [t for t in ts if t.ok]
        files, size = dataset_size(ds, stamps)
        entry = {"dataset": ds, "row": row, "phase": None, "trials": len(ts), "ok": len(good),
                 "wall_s": lib.spread([t.total_s for t in good]),
                 "peak_rss_mib": max((t.peak_rss_kib for t in good), default=0) / 1024 or None,
                 "cpu_s": lib.spread([sum(p.cpu_s for p in t.phases if p.counted) for t in good]),
                 "files": files, "bytes": size,
                 "out_bytes": lib.spread([t.facts["out_bytes"] for t in good if t.facts.get("out_bytes") is not None]),
                 "left_files": max((t.facts.get("left_files", 0) for t in good), default=None),
                 "failures": sorted({f"{p.name}: exit {p.exit_code}" for t in ts for p in t.phases if not p.ok})}
        out.append(entry)
        names = []
        for t in ts:
            for p in t.phases:
                if p.name not in names:
                    names.append(p.name)
        if len(names) > 1 or row in ("steps", "maintenance", "maintenance-low"):
            for name in names:
                ps = [p for t in good for p in t.phases if p.name == name]
                works = [p.extra["work_s"] for p in ps if isinstance(p.extra.get("work_s"), (int, float))]
                # maintenance: the per-step work of its chained children, from their log lines
                if row.startswith("maintenance"):
                    for step in STEPS:
                        steps_work = [p.extra["work_s"].get(step) for p in ps if isinstance(p.extra.get("work_s"), dict)]
                        steps_work = [w for w in steps_work if w is not None]
                        if steps_work:
                            entry.setdefault("step_work_s", {})[step] = lib.spread(steps_work)
                    continue
                out.append({"dataset": ds, "row": row, "phase": name, "counted": all(p.counted for p in ps) if ps else True,
                            "wall_s": lib.spread([p.wall_s for p in ps]),
                            "work_s": lib.spread(works),
                            "peak_rss_mib": max((p.peak_rss_kib for p in ps), default=0) / 1024 or None,
                            "cpu_s": lib.spread([p.cpu_s for p in ps]), "files": files, "bytes": size})
    return out


def dataset_size(ds: str, stamps: dict) -> tuple[int | None, int | None]:
    if ds in ROOTS:
        return (sum(stamps[n]["file_count"] for n in ROOTS[ds]), sum(stamps[n]["bytes"] for n in ROOTS[ds]))
    if ds.startswith("SCALE") and "scale" in stamps:
        st = stamps["scale"]
        per_dir = st["files"] // st["dirs"]
        n = st["files"] if ds.endswith(lib.count_label(st["files"])) else per_dir * st["point_dirs"]
        return n, 0
    return None, None


def median(summary: list[dict], ds: str, row: str, phase: str | None = None, key: str = "wall_s") -> float | None:
    for e in summary:
        if e["dataset"] == ds and e["row"] == row and e["phase"] == phase:
            v = e.get(key)
            return v["median"] if isinstance(v, dict) else v
    return None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def targets(summary: list[dict], scale: lib.Scale, restic_skipped: str | None) -> list[dict]:
    """The issue's targets, each PASS, FAIL or SKIP with the measured ratio and its limit."""
    out = []

    def add(name, value, limit, why_missing=None, unit="×"):
        if value is None:
            out.append({"target": name, "status": "SKIP", "value": None, "limit": limit, "unit": unit,
                        "why": why_missing or "a row it needs was not run or failed"})
        else:
            out.append({"target": name, "status": "PASS" if value <= limit else "FAIL", "value": round(value, 3),
                        "limit": limit, "unit": unit})

    def m(ds, row, phase=None):
        return median(summary, ds, row, phase)

    add("MIXED maintenance <= 0.5x shell pipeline", ratio(m("MIXED", "maintenance"), m("MIXED", "shell")), 0.5)
    add("LARGE maintenance <= 0.5x shell pipeline", ratio(m("LARGE", "maintenance"), m("LARGE", "shell")), 0.5)
    add("LARGE maintenance <= 0.5x restic backup+check", ratio(m("LARGE", "maintenance"), m("LARGE", "restic")), 0.5,
        restic_skipped and f"restic rows skipped: {restic_skipped}")
    add("LARGE maintenance <= 1.5x floor", ratio(m("LARGE", "maintenance"), m("LARGE", "floor")), 1.5)
    add("MANY maintenance <= 0.6x shell pipeline", ratio(m("MANY", "maintenance"), m("MANY", "shell")), 0.6)
    add("MANY backup step <= 2x GNU tar -cf", ratio(m("MANY", "steps", "backup"), m("MANY", "tar", "tar -cf")), 2.0)
    clean_work = median(summary, "MANY", "steps", "clean", key="work_s")
    add("MANY clean unlink phase <= 1.2x xargs -0 rm", ratio(clean_work, m("MANY", "shell", "rm")), 1.2)
    big, small = f"SCALE-{lib.count_label(scale.scale_files)}", \
        f"SCALE-{lib.count_label(scale.scale_files // scale.scale_dirs * scale.scale_point_dirs)}"

    def rss(ds):
        return max((v for v in (median(summary, ds, r, key="peak_rss_mib") for r in ("scan", "plan")) if v), default=None)

    add(f"{big} scan+plan peak RSS <= 150 MiB", rss(big), 150, unit=" MiB")
    add(f"scan+plan peak RSS flat from {small} to {big} (<= 1.25x)", ratio(rss(big), rss(small)), 1.25)
    return out


def print_report(summary: list[dict], tgts: list[dict], restic_skipped: str | None, trials: list[Trial],
                 result_path: Path) -> None:
    cols = ["dataset", "row / phase", "median s", "min–max s", "MB/s", "files/s", "peak RSS MiB", "CPU s",
            "×shell", "×restic", "×floor", "×tar", "note"]
    rows: list[list[str]] = []
    last_ds = None
    for e in summary:
        ds, row, phase = e["dataset"], e["row"], e["phase"]
        if last_ds is not None and ds != last_ds:
            rows.append(["---"])
        last_ds = ds
        w = e["wall_s"]
        med = w["median"] if w else None
        size, files = e.get("bytes"), e.get("files")
        note = ""
        ratios = ["", "", "", ""]
        if phase is None:
            label = ROW_TITLES.get(row, row)
            if not w:
                note = "FAILED " + "; ".join(e["failures"])
            else:
                if e["ok"] < e["trials"]:
                    note = f"{e['trials'] - e['ok']} trial(s) failed: " + "; ".join(e["failures"])
                if e.get("left_files"):
                    note += f" {e['left_files']} files left undeleted"
                if e.get("out_bytes") and size:
                    note += f" out {e['out_bytes']['median'] / MiB:,.0f} MiB ({e['out_bytes']['median'] / size:.0%})"
                if row in ("maintenance", "maintenance-low", "steps"):
                    ratios = [lib.fmt_ratio(ratio(med, median(summary, ds, b))) for b in BASELINES]
                    if e.get("step_work_s"):
                        note += " in-step work " + " ".join(f"{s} {lib.fmt_s(v['median'])}" for s, v in e["step_work_s"].items())
        else:
            label = "  · " + phase + ("" if e.get("counted", True) else " (not in total)")
            work = e.get("work_s")
            if work:
                note = f"in-step work {lib.fmt_s(work['median'])} s"
            if row == "steps" and phase == "backup":
                note += f"; {lib.fmt_ratio(ratio(med, median(summary, ds, 'tar', 'tar -cf')))} tar -cf"
            if row == "steps" and phase == "clean" and work:
                note += f"; {lib.fmt_ratio(ratio(work['median'], median(summary, ds, 'shell', 'rm')))} xargs rm"
        rows.append([
            ds, label, lib.fmt_s(med), f"{lib.fmt_s(w['min'])}–{lib.fmt_s(w['max'])}" if w else "-",
            lib.fmt_rate(size / med / 1e6) if med and size else "-",
            lib.fmt_rate(files / med) if med and files else "-",
            f"{e['peak_rss_mib']:.0f}" if e.get("peak_rss_mib") else "-",
            lib.fmt_s(e["cpu_s"]["median"]) if e.get("cpu_s") else "-",
            *ratios, note.strip(),
        ])
    lib.render_table("QTS Ops bench (median of good trials; ratios are row median / baseline median)", cols, rows,
                     right={2, 3, 4, 5, 6, 7, 8, 9, 10, 11})
    if restic_skipped:
        print(f"restic rows skipped: {restic_skipped}")
    span = sum(t.span_s for t in trials)
    if span:
        other = sum(t.other_cpu_s for t in trials)
        worst = max(trials, key=lambda t: t.other_cpu_s / t.span_s if t.span_s else 0)
        print(f"noise: other processes used {other:.0f} CPU s during {span:.0f} s of trials "
              f"({other / span / (os.cpu_count() or 1):.0%} of {os.cpu_count()} CPUs; worst trial "
              f"{worst.dataset} {worst.row} #{worst.repeat + 1}: {worst.other_cpu_s / worst.span_s / (os.cpu_count() or 1):.0%})")
    trow = []
    for t in tgts:
        v = "-" if t["value"] is None else f"{t['value']:.2f}{t['unit']}"
        trow.append([t["status"], t["target"], v, f"<= {t['limit']}{t['unit']}", t.get("why", "")])
    lib.render_table("Targets from the issue", ["", "target", "measured", "limit", "why skipped"], trow, right={2, 3})
    print(f"figures: {result_path}")


# ---------------------------------------------------------------------------- main

def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="every dataset 20x smaller (same as BENCH_SCALE=small)")
    p.add_argument("--repeat", type=int, default=None, help="trials per row (default: BENCH_REPEAT or 3)")
    p.add_argument("--only", default="LARGE,MANY,MIXED,SCALE", metavar="LIST",
                   help="datasets to run, comma-separated (default: %(default)s)")
    p.add_argument("--rows", default=",".join(KEEPING_ROWS + DELETING_ROWS), metavar="LIST",
                   help="rows to run on LARGE, MANY and MIXED (default: %(default)s)")
    p.add_argument("--no-install", action="store_true", help="do not try `apt-get install restic`")
    args = p.parse_args(argv)
    small = args.quick or os.environ.get("BENCH_SCALE", "full").lower() == "small"
    if os.environ.get("BENCH_SCALE", "full").lower() not in ("full", "small"):
        p.error("BENCH_SCALE must be full or small")
    scale = lib.SMALL if small else lib.FULL
    repeat = args.repeat if args.repeat is not None else int(os.environ.get("BENCH_REPEAT", "3"))
    if repeat < 1:
        p.error("--repeat / BENCH_REPEAT must be at least 1")
    only = [d.strip().upper() for d in args.only.split(",") if d.strip()]
    unknown = set(only) - {"LARGE", "MANY", "MIXED", "SCALE"}
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
    facts = lib.machine_facts()

    lib.rmtree(WORK)
    logs = BENCH / "results" / f"{stamp}-logs"
    bench = Bench(scale, repeat, restic, logs, rows)
    pristine = bench.pristine
    pristine.mkdir(parents=True, exist_ok=True)
    needed = sorted({n for d in only if d in ROOTS for n in ROOTS[d]} | ({"scale"} if "SCALE" in only else set()))
    for name in needed:
        bench.stamps[name] = lib.ensure_dataset(pristine, name, scale, say)

    try:
        for ds in ("LARGE", "MANY", "MIXED"):
            if ds in only:
                bench.run_dataset(ds)
        if "SCALE" in only:
            bench.run_scale()
    except KeyboardInterrupt:
        say("interrupted: reporting what was measured so far")
    finally:
        lib.rmtree(WORK)

    summary = summarise(bench.trials, bench.stamps)
    restic_skipped = None if restic or not wants_restic else restic_why
    tgts = targets(summary, scale, restic_skipped)
    facts["loadavg_end"] = os.getloadavg()
    results = BENCH / "results"
    results.mkdir(parents=True, exist_ok=True)
    result_path = results / f"{stamp}-{scale.name}.json"
    doc = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
           "elapsed_s": round(time.time() - started, 1), "scale": lib.as_dict(scale), "repeat": repeat,
           "machine": facts, "restic": restic_why,
           "policy_overrides": PER_POLICY if per_policy_compression() else {}, "datasets": bench.stamps, "summary": summary, "targets": tgts,
           "trials": [{"dataset": t.dataset, "row": t.row, "repeat": t.repeat, "ok": t.ok, "total_s": t.total_s,
                       "loadavg": t.loadavg, "other_cpu_s": round(t.other_cpu_s, 2), "span_s": round(t.span_s, 3), "facts": t.facts, "phases": [lib.as_dict(p) for p in t.phases]}
                      for t in bench.trials],
           "child_logs": str(logs)}
    result_path.write_text(json.dumps(doc, indent=1) + "\n")
    print_report(summary, tgts, restic_skipped, bench.trials, result_path)
    return 0 if bench.trials and all(t.ok for t in bench.trials) else 1


if __name__ == "__main__":
    sys.exit(main())
