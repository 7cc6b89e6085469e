"""The campaign's report: the table of faults, recoveries, losses and violations per kind
(and whether the campaign passed), each failed trial with how to reproduce it, and the
notes the trials made, counted."""

from tools.chaos.outcome import Outcome
from tools.chaos.trials import KINDS


def table(results: list[Outcome]) -> tuple[str, bool]:
    """The report, and whether the campaign passed."""
    rows = []
    total = {"trials": 0, "faults": 0, "recovered": 0, "new_run": 0, "lost": 0, "kept": 0, "viol": 0}
    for kind in KINDS:
        rs = [o for o in results if o.kind == kind]
        if not rs:
            continue
        ran = [o for o in rs if not o.skipped]
        row = {
            "kind": kind,
            "trials": len(ran),
            "faults": sum(o.faults for o in ran),
            "recovered": sum(o.recovered and not o.failed for o in ran),
            "new_run": sum(o.new_run for o in ran),
            "lost": sum(len(o.lost) for o in ran),
            "kept": sum(len(o.kept_forever) for o in ran),
            "viol": sum(len(o.violations) for o in ran),
        }
        for k in total:
            if k != "kind":
                total[k] += row[k]
        mech = sorted({o.mechanism for o in ran if o.mechanism})
        skipped = sorted({o.skipped for o in rs if o.skipped})
        row["how"] = "; ".join(mech + [f"SKIPPED {len(rs) - len(ran)}: {s}" for s in skipped])
        rows.append(row)
    head = (
        f"{'fault kind':<16} {'trials':>6} {'faults':>7} {'recovered':>9} {'--new-run':>9} "
        f"{'files lost':>10} {'kept forever':>12} {'violations':>10}  mechanism"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['kind']:<16} {r['trials']:>6} {r['faults']:>7} {r['recovered']:>9} {r['new_run']:>9} "
            f"{r['lost']:>10} {r['kept']:>12} {r['viol']:>10}  {r['how']}"
        )
    lines.append("-" * len(head))
    lines.append(
        f"{'total':<16} {total['trials']:>6} {total['faults']:>7} {total['recovered']:>9} "
        f"{total['new_run']:>9} {total['lost']:>10} {total['kept']:>12} {total['viol']:>10}"
    )
    passed = total["lost"] == 0 and total["kept"] == 0 and total["viol"] == 0
    return "\n".join(lines), passed


def failures(results: list[Outcome], seed: int) -> str:
    lines = []
    for o in results:
        if not o.failed:
            continue
        lines.append(
            f"\n{o.kind} trial {o.trial} (reproduce: scripts/chaos.py --seed {seed} --kind {o.kind} "
            f"--trial {o.trial} --keep)"
        )
        lines += [f"  lost: {_short(k)}" for k in o.lost[:10]]
        lines += [f"  kept forever: {_short(k)}" for k in o.kept_forever[:10]]
        lines += [f"  violation: {v}" for v in o.violations[:10]]
    return "\n".join(lines)


def _short(key: bytes) -> str:
    text = repr(key)
    return text if len(text) <= 160 else f"{text[:70]}...{text[-70:]} ({len(key)} bytes)"


def notes(results: list[Outcome]) -> str:
    """What the trials noted (where faults landed, what the tools said), with counts."""
    counts: dict[str, int] = {}
    for o in results:
        for n in o.notes:
            counts[f"{o.kind}: {n}"] = counts.get(f"{o.kind}: {n}", 0) + 1
    return "\n".join(f"  {k}" + (f"  (x{c})" if c > 1 else "") for k, c in sorted(counts.items()))
