"""Trials that SIGKILL the chain: at a named crash point (QTS_OPS_CRASH_AT, one to five
times in a row) and of the whole process group after a random delay."""

import random
import signal
import time

from ops.state.manifest import STEPS
from tools.chaos.dataset import Dataset, configure, dataset, random_content
from tools.chaos.oracle import after_fault, recover_and_judge
from tools.chaos.runner import fork_chain, real_run
from tools.sandbox import Sandbox, kill_chain, popen

CRASH_POINTS = [
    "backup.after_member",
    "backup.after_archive",
    "backup.before_publish",
    "publish.before_rename",
    "backup.after_publish",
    "clean.after_unlink",
    "scan.before_manifest",
    "backup.before_manifest",
    "verify.before_manifest",
    "clean.before_manifest",
]


def _crash_spec(rng: random.Random, ds: Dataset, sb: Sandbox) -> str:
    point = rng.choice(CRASH_POINTS)
    n = 1
    if point in ("backup.after_member", "clean.after_unlink"):
        n = rng.randint(1, max(1, len(ds.expected_gone())))
    elif point == "publish.before_rename":
        n = rng.randint(1, len(sb.config["backup"]["destinations"]))
    return point if n == 1 and rng.random() < 0.5 else f"{point}:{n}"


def trial_sigkill_point(rng, sb, scratch, out):
    configure(sb, rng)
    ds = dataset(sb, rng)
    run_id = None
    for _ in range(rng.randint(1, 5)):
        spec = _crash_spec(rng, ds, sb)
        env = {"QTS_OPS_CRASH_AT": spec}
        if rng.random() < 0.25:  # the real chain: maintenance and its step processes
            got = real_run(sb, env=env)
            run_id = sb.runs()[-1] if sb.runs() else None
            killed = got.code == 1 and "killed by signal 9" in got.out
        else:
            step, got, run_id = fork_chain(sb, run_id, env)
            killed = got.code == -signal.SIGKILL
        if got.code not in (0, 1, -signal.SIGKILL):
            out.bad(f"chain with {spec} exited {got.code}: {got.out[-400:]}")
        out.faults += killed
        if killed:
            out.notes.append(f"killed at {spec.partition(':')[0]}")
        after_fault(sb, ds, out, f"SIGKILL at {spec}")
        if not killed and got.code == 0:
            break  # the run completed before reaching the point: nothing more to crash
    recover_and_judge(sb, ds, scratch, out)


def trial_sigkill_time(rng, sb, scratch, out):
    configure(sb, rng)
    ds = dataset(sb, rng, 10, 120)
    kills, longest = rng.choice([1, 1, 2]), 2.0  # scan to clean, on a chain of a second or two
    for attempt in range(8):
        if out.faults >= kills:
            break
        proc = popen(sb, "maintenance")
        time.sleep(rng.uniform(0.03, longest))
        if proc.poll() is not None:  # the chain was quicker than the delay: shorter, with new work
            proc.communicate()
            longest /= 2
            for i in range(5):
                ds.add("logs", b"late-%d-%d.log" % (attempt, i), random_content(rng), 60, True)
            continue
        if proc.poll() is None:
            try:
                kill_chain(proc)
                out.faults += 1
            except AssertionError as exc:
                out.bad(str(exc))
            if not sb.runs():
                out.notes.append("killed during start-up (no run yet)")
            else:
                rdir = sb.state / "runs" / sb.runs()[-1]
                during = next((s for s in STEPS if not (rdir / f"{s}.ok.json").exists()), "the chain's end")
                out.notes.append(f"killed during {during}")
        proc.communicate()
        after_fault(sb, ds, out, "SIGKILL of the process group")
    recover_and_judge(sb, ds, scratch, out)
