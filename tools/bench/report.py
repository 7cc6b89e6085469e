"""What the benchmark reports: each (dataset, row) and (dataset, row, phase) summarised as
medians with min-max over its good trials, the targets each marked PASS, FAIL or SKIP, and
the tables on stdout (rich on a terminal, aligned plain text otherwise)."""

import os
import statistics
import sys
from pathlib import Path

from tools.bench.datasets import MiB, Scale, count_label
from tools.bench.rows import CORE_DATASET, ROOTS, STEPS, TAR_RESTORE, Trial

ROW_TITLES = {
    "maintenance": "qts-ops maintenance, pace full",
    "maintenance-gentle": "qts-ops maintenance, pace gentle",
    "idle": "the stand-in core alone",
    "maintenance-low": "qts-ops maintenance, low priority",
    "steps": "qts-ops steps one by one",
    "shell": "shell: find|sha256sum|tar+zstd|sync|check|rm",
    "restic": "restic backup + check --read-data",
    "floor": "floor: cat sources > 1 file, sync; read back",
    "tar": "GNU tar -cf (no compression)",
    "scan": "qts-ops scan",
    "plan": "qts-ops plan",
    "restore": "qts-ops restore RUN=, pace full; beside it tar -xf, sha256sum -c, sync",
    "find (index build)": "find, the index built on first use",
    "find exact": "find, an exact path",
    "find glob": "find, a directory glob",
}
# The baselines a qts-ops row's median is divided by, in the order of the table's × columns.
BASELINES = ("shell", "restic", "floor", "tar")


def spread(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.0f}"


def fmt_rate(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}{unit}" if x >= 100 else f"{x:.1f}{unit}"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}×"


def render_table(title: str, columns: list[str], rows: list[list[str]], right: set[int]) -> None:
    """One table on stdout: rich on a terminal, aligned plain text otherwise (logs, CI)."""
    if sys.stdout.isatty():
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            pass
        else:
            t = Table(title=title, title_justify="left")
            for i, c in enumerate(columns):
                t.add_column(c, justify="right" if i in right else "left", no_wrap=i < 2)
            for r in rows:
                if r and r[0] == "---":
                    t.add_section()
                    continue
                t.add_row(*r)
            Console().print(t)
            return
    body = [r for r in rows if not (r and r[0] == "---")]
    widths = [max(len(c), *(len(r[i]) for r in body)) if body else len(c) for i, c in enumerate(columns)]

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    print(f"== {title}")
    print(line(columns))
    print(line(["-" * w for w in widths]))
    for r in rows:
        if r and r[0] == "---":
            print()
            continue
        print(line(r))
    print()


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
                 "wall_s": spread([t.total_s for t in good]),
                 "peak_rss_mib": max((t.peak_rss_kib for t in good), default=0) / 1024 or None,
                 "cpu_s": spread([sum(p.cpu_s for p in t.phases if p.counted) for t in good]),
                 "files": files, "bytes": size,
                 "out_bytes": spread([t.facts["out_bytes"] for t in good if t.facts.get("out_bytes") is not None]),
                 "left_files": max((t.facts.get("left_files", 0) for t in good), default=None),
                 "failures": sorted({f"{p.name}: exit {p.exit_code}" for t in ts for p in t.phases if not p.ok})}
        for key in ("sync_s", "query_s", "found", "blocks_bytes", "index_bytes"):  # CATALOGUE's finds
            if any(key in t.facts for t in good):
                entry[key] = spread([t.facts[key] for t in good if key in t.facts])
        cores = [t.facts["core"] for t in good if t.facts.get("core")]
        if cores:
            entry["core"] = {k: spread([c[k] for c in cores]) for k in ("p50_ms", "p99_ms", "p999_ms", "max_ms")}
            entry["core"]["writes_share"] = spread([c["writes"] / c["expected"] for c in cores if c["expected"]])
        out.append(entry)
        names = []
        for t in ts:
            for p in t.phases:
                if p.name not in names:
                    names.append(p.name)
        if len(names) > 1 or row in ("steps", "maintenance", "maintenance-gentle", "maintenance-low"):
            for name in names:
                ps = [p for t in good for p in t.phases if p.name == name]
                works = [p.extra["work_s"] for p in ps if isinstance(p.extra.get("work_s"), (int, float))]
                # maintenance: the per-step work of its chained children, from their log lines
                if row.startswith("maintenance"):
                    for step in STEPS:
                        steps_work = [p.extra["work_s"].get(step) for p in ps
                                      if isinstance(p.extra.get("work_s"), dict)]
                        steps_work = [w for w in steps_work if w is not None]
                        if steps_work:
                            entry.setdefault("step_work_s", {})[step] = spread(steps_work)
                    continue
                out.append({"dataset": ds, "row": row, "phase": name,
                            "counted": all(p.counted for p in ps) if ps else True,
                            "wall_s": spread([p.wall_s for p in ps]),
                            "work_s": spread(works),
                            "indexed_s": spread([p.extra["indexed_s"] for p in ps if "indexed_s" in p.extra]),
                            "peak_rss_mib": max((p.peak_rss_kib for p in ps), default=0) / 1024 or None,
                            "cpu_s": spread([p.cpu_s for p in ps]), "files": files, "bytes": size})
    return out


def dataset_size(ds: str, stamps: dict) -> tuple[int | None, int | None]:
    if ds in ROOTS:
        return (sum(stamps[n]["file_count"] for n in ROOTS[ds]), sum(stamps[n]["bytes"] for n in ROOTS[ds]))
    if ds.startswith("SCALE") and "scale" in stamps:
        st = stamps["scale"]
        per_dir = st["files"] // st["dirs"]
        n = st["files"] if ds.endswith(count_label(st["files"])) else per_dir * st["point_dirs"]
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


def targets(summary: list[dict], scale: Scale, restic_skipped: str | None) -> list[dict]:
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

    def core(row, key):
        c = next((e["core"] for e in summary if (e["dataset"], e["row"], e["phase"]) == (CORE_DATASET, row, None)
                  and e.get("core")), None)
        return c[key]["median"] if c and c.get(key) else None

    add("core p99 during gentle maintenance <= 1.5x idle",
        ratio(core("maintenance-gentle", "p99_ms"), core("idle", "p99_ms")), 1.5)
    add("core p99.9 during gentle maintenance <= 3x idle",
        ratio(core("maintenance-gentle", "p999_ms"), core("idle", "p999_ms")), 3.0)
    add("MIXED gentle maintenance <= 1.0x shell pipeline",
        ratio(m("MIXED", "maintenance-gentle"), m("MIXED", "shell")), 1.0)
    add("MIXED maintenance (full) <= 0.5x shell pipeline", ratio(m("MIXED", "maintenance"), m("MIXED", "shell")), 0.5)
    add("LARGE maintenance (full) <= 0.5x shell pipeline", ratio(m("LARGE", "maintenance"), m("LARGE", "shell")), 0.5)
    add("LARGE maintenance (full) <= 0.5x restic backup+check", ratio(m("LARGE", "maintenance"), m("LARGE", "restic")), 0.5,
        restic_skipped and f"restic rows skipped: {restic_skipped}")
    add("LARGE maintenance <= 1.5x floor", ratio(m("LARGE", "maintenance"), m("LARGE", "floor")), 1.5)
    add("MANY maintenance <= 0.6x shell pipeline", ratio(m("MANY", "maintenance"), m("MANY", "shell")), 0.6)
    add("MANY backup step <= 2x GNU tar -cf", ratio(m("MANY", "steps", "backup"), m("MANY", "tar", "tar -cf")), 2.0)
    clean_work = median(summary, "MANY", "steps", "clean", key="work_s")
    add("MANY clean unlink phase <= 1.2x xargs -0 rm", ratio(clean_work, m("MANY", "shell", "rm")), 1.2)
    big, small = f"SCALE-{count_label(scale.scale_files)}", \
        f"SCALE-{count_label(scale.scale_files // scale.scale_dirs * scale.scale_point_dirs)}"

    def rss(ds):
        return max((v for v in (median(summary, ds, r, key="peak_rss_mib") for r in ("scan", "plan")) if v),
                   default=None)

    for ds in ("LARGE", "MANY", "MIXED"):
        add(f"{ds} restore (full) <= 1.0x tar -xf + sha256sum -c + sync",
            ratio(m(ds, "restore", "restore"), m(ds, "restore", TAR_RESTORE)), 1.0)
    cat = f"CATALOGUE-{count_label(scale.catalogue_entries)}"
    add(f"{cat} find, exact path <= 0.1 s", median(summary, cat, "find exact", key="query_s"), 0.1, unit=" s")
    add(f"{cat} find, directory glob <= 1 s", median(summary, cat, "find glob", key="query_s"), 1.0, unit=" s")
    add("MANY indexing a run's deletions <= 10% of its clean",
        ratio(median(summary, "MANY", "steps", "clean", key="indexed_s"), clean_work), 0.1)
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
                if row in ("maintenance", "maintenance-gentle", "maintenance-low", "steps"):
                    ratios = [fmt_ratio(ratio(med, median(summary, ds, b))) for b in BASELINES]
                    if e.get("step_work_s"):
                        note += " in-step work " + " ".join(f"{s} {fmt_s(v['median'])}"
                                                            for s, v in e["step_work_s"].items())
        else:
            label = "  · " + phase + ("" if e.get("counted", True) else " (not in total)")
            work = e.get("work_s")
            if work:
                note = f"in-step work {fmt_s(work['median'])} s"
            if row == "steps" and phase == "backup":
                note += f"; {fmt_ratio(ratio(med, median(summary, ds, 'tar', 'tar -cf')))} tar -cf"
            if row == "steps" and phase == "clean" and work:
                note += f"; {fmt_ratio(ratio(work['median'], median(summary, ds, 'shell', 'rm')))} xargs rm"
        rows.append([
            ds, label, fmt_s(med), f"{fmt_s(w['min'])}–{fmt_s(w['max'])}" if w else "-",
            fmt_rate(size / med / 1e6) if med and size else "-",
            fmt_rate(files / med) if med and files else "-",
            f"{e['peak_rss_mib']:.0f}" if e.get("peak_rss_mib") else "-",
            fmt_s(e["cpu_s"]["median"]) if e.get("cpu_s") else "-",
            *ratios, note.strip(),
        ])
    render_table("QTS Ops bench (median of good trials; ratios are row median / baseline median)", cols, rows,
                 right={2, 3, 4, 5, 6, 7, 8, 9, 10, 11})
    core_rows = []
    idle = next((e["core"] for e in summary if e["row"] == "idle" and e.get("core")), None)
    for e in summary:
        c = e.get("core")
        if e["phase"] is None and c:
            def x(key):
                return fmt_ratio(ratio(c[key]["median"], idle[key]["median"])) if idle and c[key] else "-"
            core_rows.append([e["dataset"], ROW_TITLES.get(e["row"], e["row"]),
                              *(f"{c[k]['median']:.2f}" if c[k] else "-" for k in ("p50_ms", "p99_ms", "p999_ms")),
                              x("p99_ms"), x("p999_ms"),
                              f"{c['writes_share']['median']:.0%}" if c.get("writes_share") else "-",
                              fmt_s(e["wall_s"]["median"]) if e["wall_s"] and e["row"] != "idle" else "-"])
    if core_rows:
        render_table("The stand-in core beside each row: 512-byte append + fdatasync every 5 ms (median of trials)",
                     ["dataset", "row", "p50 ms", "p99 ms", "p99.9 ms", "p99 ×idle", "p99.9 ×idle",
                      "writes made", "row s"], core_rows, right={2, 3, 4, 5, 6, 7, 8})
    if restic_skipped:
        print(f"restic rows skipped: {restic_skipped}")
    span = sum(t.span_s for t in trials)
    if span:
        other = sum(t.other_cpu_s for t in trials)
        worst = max(trials, key=lambda t: t.other_cpu_s / t.span_s if t.span_s else 0)
        print(f"noise: other processes used {other:.0f} CPU s during {span:.0f} s of trials "
              f"({other / span / (os.cpu_count() or 1):.0%} of {os.cpu_count()} CPUs; worst trial "
              f"{worst.dataset} {worst.row} #{worst.repeat + 1}: "
              f"{worst.other_cpu_s / worst.span_s / (os.cpu_count() or 1):.0%})")
    trow = []
    for t in tgts:
        v = "-" if t["value"] is None else f"{t['value']:.2f}{t['unit']}"
        trow.append([t["status"], t["target"], v, f"<= {t['limit']}{t['unit']}", t.get("why", "")])
    render_table("Targets from the issue", ["", "target", "measured", "limit", "why skipped"], trow, right={2, 3})
    print(f"figures: {result_path}")
