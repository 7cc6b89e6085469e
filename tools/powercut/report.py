"""The campaign's report: the self-check, the table of cuts and what they cost, where the
cuts landed, and each failed trial with how to reproduce it."""

from collections import Counter

from tools.powercut.trial import CutOutcome


def self_check_lines(checks: list[tuple[str, bool, str]]) -> tuple[str, bool]:
    lines = [f"  {'PASS' if ok else 'FAIL'}  {what}: {seen}" for what, ok, seen in checks]
    return "\n".join(lines), bool(checks) and all(ok for _, ok, _ in checks)


def table(results: list[CutOutcome]) -> tuple[str, bool]:
    """The report, and whether the campaign passed."""
    t = Counter()
    for o in results:
        t["trials"] += 1
        t["cuts"] += o.faults
        t["rest"] += o.rest_cuts
        t["writes"] += o.dropped_writes
        t["torn"] += o.torn
        t["entries"] += o.dropped_entries
        t["resumed"] += o.resumed
        t["restarted"] += o.restarted
        t["restores"] += o.restores
        t["whole"] += o.restores_whole
        t["recovered"] += o.recovered and not o.failed
        t["lost"] += len(o.lost)
        t["kept"] += len(o.kept_forever)
        t["viol"] += len(o.violations)
    rows = [
        ("trials", t["trials"]),
        ("power cuts while a step ran", t["cuts"]),
        ("power cuts at rest (after a step exited)", t["rest"]),
        ("writes dropped as not durable (torn)", f"{t['writes']} ({t['torn']})"),
        ("directory entries dropped as not durable", t["entries"]),
        ("runs a cut left unfinished: resumed", t["resumed"]),
        ("runs a cut left unfinished: left for a new run", t["restarted"]),
        ("restores cut, then completed by a second restore", t["restores"]),
        ("restores that exited 0, checked whole after a cut", t["whole"]),
        ("trials recovered by one maintenance", t["recovered"]),
        ("files lost", t["lost"]),
        ("files kept forever", t["kept"]),
        ("violations", t["viol"]),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"  {name:<{width}}  {value:>10}" for name, value in rows]
    where = Counter(w for o in results for w in o.where)
    if where:
        lines.append("\n  where the cuts landed (the file the operation was on):")
        lines += [f"    {w:<40} {n:>6}" for w, n in sorted(where.items(), key=lambda x: -x[1])]
    passed = t["lost"] == 0 and t["kept"] == 0 and t["viol"] == 0
    return "\n".join(lines), passed


def failures(results: list[CutOutcome], seed: int, trials: int) -> str:
    lines = []
    for o in results:
        if not o.failed:
            continue
        again = f"scripts/powercut.py --seed {seed} --trials {trials} --trial {o.trial} --keep"
        lines.append(f"\ntrial {o.trial} (reproduce: {again})")
        lines += [f"  lost: {k!r}" for k in o.lost[:10]]
        lines += [f"  kept forever: {k!r}" for k in o.kept_forever[:10]]
        lines += [f"  violation: {v}" for v in o.violations[:10]]
    return "\n".join(lines)


def notes(results: list[CutOutcome]) -> str:
    counts = Counter(n for o in results for n in o.notes)
    return "\n".join(f"  {k}" + (f"  (x{c})" if c > 1 else "") for k, c in sorted(counts.items()))
