"""The trial that starts eight chains at once: exactly one runs, the seven others exit 75
saying why, and no rival leaves a run behind."""

from tools.chaos.dataset import Dataset, configure
from tools.chaos.oracle import judge, settle
from tools.sandbox import popen

LOCK_BUSY = 75


def trial_concurrency(rng, sb, scratch, out):
    configure(sb, rng, dests=1, journals=False)
    ds = Dataset(sb)
    for i in range(600):
        ds.add("logs", b"d%02d/f%05d.log" % (i % 40, i), b"line %d\n" % i * 8, 40, True)
    procs = [popen(sb, "maintenance") for _ in range(8)]
    results = [(p.communicate(timeout=120), p.returncode)[::-1] for p in procs]
    out.faults += 7
    codes = sorted(code for code, _ in results)
    if codes != [0] + [LOCK_BUSY] * 7:
        out.bad(f"eight chains at once exited {codes}, expected one 0 and seven 75")
    for code, (_, err) in results:
        if code == LOCK_BUSY and "another run holds the lock" not in err:
            out.bad(f"a rival exited 75 without saying why: {err[-200:]}")
    if len(sb.runs()) != 1:
        out.bad(f"rivals left runs behind: {sb.runs()}")
    out.recovered = codes.count(0) == 1
    judge(sb, ds, scratch, out)
    settle(sb, ds, out)
