"""status: recent runs and each step's state, the lock holder, and what needs an operator."""

import calendar
import json
import os
import sys
import time

from ops.config import Config
from ops.console import Console
from ops.destinations import DestinationError, hurried, open_destination
from ops.destinations.hosts import known_runs, other_hosts
from ops.errors import StepFailed
from ops.maintenance.retention.brake import describe
from ops.maintenance.retention.deletable import RULE, unlink_failures
from ops.maintenance.retention.evaluate import nested_roots
from ops.maintenance.retention.policy import format_age, format_size, matcher
from ops.maintenance.retention.walk import walk_files
from ops.state import scrubbed
from ops.state.lock import describe_holder, lock_path, not_plain, read_holder
from ops.state.manifest import JOURNAL, STEPS, Run, list_runs
from ops.state.summary import step_state
from ops.sys.jsonl import shown
from ops.sys.paths import NotPlainFile


def collect(config: Config, limit: int = 10) -> dict:
    all_runs = list_runs(config.state_dir)
    runs = []
    problems = []
    for run_id in all_runs[-limit:]:
        run = Run(config.state_dir, run_id)
        steps = {s: step_state(run, s) for s in STEPS}
        runs.append({"run": run_id, "steps": steps})
        for s, st in steps.items():
            if st["state"] == "failed":
                problems.append(
                    f"run {run_id}: {s} failed (exit {st.get('exit_code')}): {st['error']}. "
                    f"Fix the cause, then `make maintenance` resumes this run."
                )
            elif st["state"] == "damaged":
                problems.append(
                    f"run {run_id}: {s}.ok.json is damaged ({st['error']}); nothing of this run will be "
                    f"deleted. Inspect {run.dir}."
                )
        for name, held in steps["scan"].get("braked", {}).items() if run_id == all_runs[-1] else ():
            problems.append(
                f"run {run_id}: the deletion brake held policy {name}: {describe(name, held)}; nothing of it was "
                f"expired. If that is right: make maintenance ALLOW_LARGE_DELETE={name}"
            )
        if run_id == all_runs[-1] and steps["scan"].get("writers_hidden"):
            problems.append(
                f"run {run_id}: scan could not inspect {steps['scan']['writers_hidden']} processes of other users; "
                "a file they hold open for writing is guarded by the stat comparison alone. Run the toolkit as "
                "root, or as the user the trading core runs as."
            )
        for name, error in steps["backup"].get("failed_destinations", {}).items():
            problems.append(f"run {run_id}: destination {name} did not get this run ({error}).")
        for name, why in steps["clean"].get("copies_missing", {}).items():
            problems.append(
                f"run {run_id}: its verified copy on {name} was no longer in place when clean deleted "
                f"on the others ({why})."
            )
        if steps["clean"]["state"] != "ok" and run_id != all_runs[-1]:
            done = " What its clean deleted before it stopped is in the catalogue (make find)."
            done = done if _catalogued(config, run_id) else ""
            problems.append(
                f"run {run_id} never finished; newer runs exist.{done} Its other files stay until a run covers them."
            )
    problems.extend(_undeletable(config, runs))
    finished = [r for r in runs if r["steps"]["clean"]["state"] == "ok"]
    destinations = {}
    known = known_runs(config)
    scrub = scrubbed.load(config.state_dir)
    for name, by_run in sorted(scrub.get("checked", {}).items()):
        for run_id, got in sorted(by_run.items()):
            if got.get("state") not in ("ok", "repaired") and run_id not in scrub.get("lost", {}):
                problems.append(f"run {run_id} on {name}: scrub found it {got.get('state')}: {got.get('error')}.")
    for run_id, lost in sorted(scrub.get("lost", {}).items()):
        problems.append(
            f"run {run_id}: scrub found no intact copy on any destination "
            f"({'; '.join(f'{n}: {why}' for n, why in sorted(lost.get('destinations', {}).items()))}); "
            "make find marks its files."
        )
    for d in config.destinations:
        try:
            # Hurried: a destination that does not answer costs status seconds, not minutes.
            dest = open_destination(hurried(d))
            held = dest.list_runs()
            destinations[d.name] = {"runs": len(held), "bytes": dest.bytes_used(), **_oldest_check(scrub, d.name, held)}
            theirs = other_hosts(dest, known, runs=held)
        except (OSError, DestinationError) as exc:
            destinations[d.name] = {"error": str(exc)}
            continue
        if theirs:
            destinations[d.name]["other_hosts"] = theirs  # {run id: host}, only when there are any
            problems.append(
                f"destination {d.name} also holds {len(theirs)} run(s) of other hosts "
                f"({', '.join(sorted(set(theirs.values())))}); give each host a prefix or directory of "
                f"its own. `make status DEST={d.name}` labels them; restore puts none into this host's "
                "roots unasked."
            )
    try:
        holder = read_holder(config.state_dir)
    except NotPlainFile as exc:
        holder = None
        problems.append(f"{not_plain(lock_path(config.state_dir), exc)}, and every run fails until it is removed.")
    last_at = finished[-1]["steps"]["clean"].get("finished_at") if finished else None
    age = time.time() - calendar.timegm(time.strptime(last_at, "%Y-%m-%dT%H:%M:%SZ")) if last_at else None
    return {
        "state_dir": str(config.state_dir),
        "lock_holder": holder,
        "last_complete_run": finished[-1]["run"] if finished else None,
        "last_complete_at": last_at,
        "last_complete_age_seconds": int(age) if age is not None else None,
        "policies": {p.name: _on_disk(p, config.policies) for p in config.policies},
        "runs": runs,
        "destinations": destinations,
        "problems": problems,
    }


def _undeletable(config: Config, runs: list[dict]) -> list[str]:
    """Files the toolkit's user could not delete, as the newest scan and the newest clean
    found them: they stay on disk night after night until someone fixes the cause."""
    out = []
    scanned = next((r for r in reversed(runs) if r["steps"]["scan"]["state"] == "ok"), None)
    for policy, n in (scanned["steps"]["scan"]["undeletable"] if scanned else {}).items():
        if n:
            out.append(
                f"run {scanned['run']}: policy {policy}: {_files(n, 'expired file')} that the toolkit's user "
                f"cannot delete (a directory it may not write, or a read-only mount), kept and not archived. "
                f"`scripts/plan.py --json` names them (rule {RULE}): give the user write access there, or "
                f"exclude them from the policy."
            )
    cleaned = next((r for r in reversed(runs) if r["steps"]["clean"]["state"] == "ok"), None)
    if cleaned:
        journal = Run(config.state_dir, cleaned["run"]).path(JOURNAL)
        try:
            failures = unlink_failures(journal)
        except (OSError, ValueError) as exc:
            return out + [f"run {cleaned['run']}: {journal} cannot be read: {exc}"]
        for policy, (n, first) in sorted(failures.items()):
            example = f"{shown(str(first.get('path')))}: {first['reason']}"
            out.append(
                f"run {cleaned['run']}: policy {policy}: clean could not delete {_files(n, 'verified file')} "
                f"(first {example}), kept. Fix the cause (the directory's owner or mode, a read-only mount, "
                f"an immutable file); {journal} names them."
            )
    return out


def _catalogued(config: Config, run_id: str) -> bool:
    return os.path.isfile(os.path.join(config.state_dir, "catalogue", f"{run_id}.jsonl"))


def _files(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _on_disk(policy, policies) -> dict:
    """What the policy governs right now: files, bytes and the oldest file's mtime (not
    counting the roots of other policies nested in its own: their files are theirs)."""
    matches = matcher(policy)
    if not os.path.isdir(policy.root):
        return {"missing": True}
    files = size = 0
    oldest = None
    for f in walk_files(policy.root, lambda path, why: None, nested_roots(policy, policies)):
        if matches(f.path):
            files += 1
            size += f.size
            oldest = f.mtime_ns if oldest is None else min(oldest, f.mtime_ns)
    return {
        "files": files,
        "bytes": size,
        "oldest": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(oldest / 1e9)) if oldest else None,
    }


def _oldest_check(scrub: dict, name: str, held: list[str]) -> dict:
    """The run on the destination whose last scrub is oldest (one never checked first)."""
    checked = scrub.get("checked", {}).get(name, {})
    if not held:
        return {}
    run = min(held, key=lambda r: (checked.get(r, {}).get("at", 0), r))
    at = checked.get(run, {}).get("at")
    return {
        "oldest_check_run": run,
        "oldest_check_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)) if at else None,
    }


def _cell(st: dict) -> str:
    if st["state"] == "paused":
        return "paused by the window"
    if st["state"] != "ok":
        return st["state"]
    if "verified" in st:
        text = "ok " + ",".join(st["verified"]) if st["verified"] else "ok (nothing)"
    else:
        text = f"ok {st.get('files', 0)} files"
    rested = st.get("throttled_s") or 0
    return text + (f", rested {rested:.2f} s" if rested > 0 else "")


def runs_on(config: Config, name: str) -> int:
    """The runs one destination holds, one per line: what a host that died can restore.
    A run of another host is labelled with it (after a tab)."""
    try:
        dest = open_destination(hurried(config.destination(name)))
        runs = dest.list_runs()
        theirs = other_hosts(dest, known_runs(config), runs=runs)
    except (OSError, DestinationError) as exc:
        raise StepFailed(f"cannot list the runs on destination {name}: {exc}") from None
    for run_id in runs:
        print(f"{run_id}\tanother host: {theirs[run_id]}" if run_id in theirs else run_id)
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
    if holder is None:
        print("lock: free")
    else:
        print(f"lock: held by {describe_holder(holder)}" + (f" since {holder['since']}" if holder.get("since") else ""))
    age = info["last_complete_age_seconds"]
    print(
        f"last complete maintenance: {info['last_complete_run'] or 'none'}"
        + (f" at {info['last_complete_at']} ({format_age(age * 10**9)} ago)" if age is not None else "")
    )
    ui.table(
        "Policies on disk",
        ["policy", "files", "bytes", "oldest file"],
        [
            [n, p.get("files", "root missing"), format_size(p.get("bytes", 0)), p.get("oldest") or "-"]
            for n, p in info["policies"].items()
        ],
    )
    for name, d in info["destinations"].items():
        theirs = d.get("other_hosts") or {}
        held = f"{d['runs']} runs, {format_size(d['bytes'])}" if "runs" in d else f"error: {d['error']}"
        if d.get("oldest_check_run"):
            when = d["oldest_check_at"] or "never"
            held += f"; oldest check: run {d['oldest_check_run']} ({when})"
        print(
            f"destination {name}: {held}"
            + (f" ({len(theirs)} of other hosts: {', '.join(sorted(set(theirs.values())))})" if theirs else "")
        )
    for p in info["problems"]:
        print(f"problem: {p}")
    return 0
