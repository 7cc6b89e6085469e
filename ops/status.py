"""status: recent runs and each step's state, the lock holder, and what needs an operator."""

import json
import sys

from ops.config import Config
from ops.console import Console
from ops.destinations import DestinationError, open_destination
from ops.errors import Refused, StepFailed
from ops.lock import read_holder
from ops.manifest import STEPS, Run, list_runs, open_sealed


def _step_state(run: Run, step: str) -> dict:
    ok, failed = run.ok_path(step), run.failed_path(step)
    if ok.exists():
        try:
            doc = open_sealed(ok.read_bytes(), ok.name)
        except Refused as exc:
            return {"state": "damaged", "error": exc.message}
        return {"state": "ok", "finished_at": doc.get("finished_at"), **_counts(step, doc)}
    if failed.exists():
        try:
            doc = json.loads(failed.read_bytes())
        except ValueError:
            doc = {}
        return {"state": "failed", "error": doc.get("error", "?"), "exit_code": doc.get("exit_code")}
    return {"state": "not run"}


def _counts(step: str, doc: dict) -> dict:
    if step == "scan":
        ps = doc.get("policies", {}).values()
        return {"files": sum(p.get("expired", 0) for p in ps), "bytes": sum(p.get("expired_bytes", 0) for p in ps)}
    if step == "backup":
        ps = doc.get("policies", {}).values()
        return {"files": sum(p.get("archived", 0) for p in ps), "bytes": sum(p.get("member_bytes", 0) for p in ps),
                "destinations": doc.get("destinations", []), "failed_destinations": doc.get("failed_destinations", {})}
    if step == "verify":
        return {"verified": doc.get("verified", []), "destinations": doc.get("destinations", {})}
    return {"files": doc.get("deleted", 0), "bytes": doc.get("deleted_bytes", 0), "kept": doc.get("kept", 0)}


def collect(config: Config, limit: int = 10) -> dict:
    all_runs = list_runs(config.state_dir)
    runs = []
    problems = []
    for run_id in all_runs[-limit:]:
        run = Run(config.state_dir, run_id)
        steps = {s: _step_state(run, s) for s in STEPS}
        runs.append({"run": run_id, "steps": steps})
        for s, st in steps.items():
            if st["state"] == "failed":
                problems.append(f"run {run_id}: {s} failed (exit {st.get('exit_code')}): {st['error']}. "
                                f"Fix the cause, then `make maintenance` resumes this run.")
            elif st["state"] == "damaged":
                problems.append(f"run {run_id}: {s}.ok.json is damaged ({st['error']}); nothing of this run will be "
                                f"deleted. Inspect {run.dir}.")
        for name, error in steps["backup"].get("failed_destinations", {}).items():
            problems.append(f"run {run_id}: destination {name} did not get this run ({error}).")
        if steps["clean"]["state"] != "ok" and run_id != all_runs[-1]:
            problems.append(f"run {run_id} never finished; newer runs exist. Its files stay until a run covers them.")
    finished = [r for r in runs if r["steps"]["clean"]["state"] == "ok"]
    destinations = {}
    for d in config.destinations:
        try:
            destinations[d.name] = {"runs": len(open_destination(d).list_runs())}
        except (OSError, DestinationError) as exc:
            destinations[d.name] = {"error": str(exc)}
    return {
        "state_dir": str(config.state_dir),
        "lock_holder": read_holder(config.state_dir),
        "last_complete_run": finished[-1]["run"] if finished else None,
        "last_complete_at": finished[-1]["steps"]["clean"].get("finished_at") if finished else None,
        "runs": runs,
        "destinations": destinations,
        "problems": problems,
    }


def _cell(st: dict) -> str:
    if st["state"] != "ok":
        return st["state"]
    if "verified" in st:
        return "ok " + ",".join(st["verified"]) if st["verified"] else "ok (nothing)"
    return f"ok {st.get('files', 0)} files"


def runs_on(config: Config, name: str) -> int:
    """The runs one destination holds, one per line: what a host that died can restore."""
    try:
        runs = open_destination(config.destination(name)).list_runs()
    except (OSError, DestinationError) as exc:
        raise StepFailed(f"cannot list the runs on destination {name}: {exc}") from None
    for run_id in runs:
        print(run_id)
    return 0


def status(config: Config, ui: Console, as_json: bool = False) -> int:
    info = collect(config)
    if as_json:
        json.dump(info, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    rows = [[r["run"], *(_cell(r["steps"][s]) for s in STEPS)] for r in info["runs"]]
    ui.table(f"Runs in {info['state_dir']}", ["run", *STEPS], rows)
    holder = info["lock_holder"]
    print(f"lock: {'held by pid %s (run %s, step %s) since %s' % (holder.get('pid'), holder.get('run'), holder.get('step'), holder.get('since')) if holder is not None else 'free'}")
    print(f"last complete run: {info['last_complete_run'] or 'none'}" + (f" at {info['last_complete_at']}" if info["last_complete_at"] else ""))
    for name, d in info["destinations"].items():
        print(f"destination {name}: " + (f"{d['runs']} runs" if "runs" in d else f"error: {d['error']}"))
    for p in info["problems"]:
        print(f"problem: {p}")
    return 0
