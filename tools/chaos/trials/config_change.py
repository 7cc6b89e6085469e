"""Trials where the configuration changes between a run's steps (quorum lowered, a policy
or a destination removed, a second config on the same state): the run must never be
finished, nor any file deleted, under rules other than those that scanned it."""

import json
import time
from pathlib import Path

from ops.state.manifest import STEPS
from tools.chaos.dataset import configure, dataset
from tools.chaos.oracle import after_fault, data_ids, policy_roots, recover_and_judge
from tools.chaos.outcome import TrialAbort
from tools.chaos.runner import fork_run, real_run
from tools.sandbox import Sandbox, log_events

CONFIG_CHANGES = ("quorum-lowered", "policy-removed", "destination-removed", "second-config")


def _changed_config(sb: Sandbox, change: str) -> tuple[Path, set[str]]:
    """Write the changed configuration: (the config file the operator now runs, the
    policies whose files the original run's rules alone may delete)."""
    cfg = json.loads(json.dumps(sb.config))
    dests, policies = cfg["backup"]["destinations"], cfg["policies"]
    if change == "quorum-lowered":
        cfg["backup"]["require_verified_copies"] = 1
    elif change == "policy-removed":
        policies.pop()
    elif change == "destination-removed":
        dests.pop()
        cfg["backup"]["require_verified_copies"] = 1
    else:  # another config file beside the first, on the same state, with the first policy only
        cfg["backup"] = {"compression": "zstd", "require_verified_copies": 1, "destinations": [dests[0]]}
        cfg["policies"] = policies[:1]
        path = sb.base / "other.yaml"
        path.write_text(json.dumps(cfg))
        return path, {p["name"] for p in sb.config["policies"][1:]}
    sb.config_path.write_text(json.dumps(cfg))
    return sb.config_path, {p["name"] for p in sb.config["policies"]} - {p["name"] for p in policies}


def trial_config_change(rng, sb, scratch, out):
    """A run scanned (and maybe copied) under one configuration, then the operator changes
    it: the run must never be finished under the new rules. Its clean, named by hand, is
    refused with nothing deleted; maintenance under the new rules acts on a new run only,
    and never deletes a file of a policy the new rules dropped."""
    configure(sb, rng, dests=2, journals=True)
    sb.config["backup"]["require_verified_copies"] = 2
    sb.write_config()
    ds = dataset(sb, rng, 6, 24, expired_p=0.85)
    original = sb.config_path.read_bytes()
    offsite = sb.base / sb.config["backup"]["destinations"][1]["path"]
    broken = rng.random() < 0.5  # the second destination fails: the run has one copy of the two it needs
    if broken:
        offsite.parent.mkdir(parents=True, exist_ok=True)
        offsite.write_bytes(b"")
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 3600)) + "-0c0c"
    last = rng.choice(["scan", "backup", "verify"])
    for step in STEPS[: STEPS.index(last) + 1]:
        got = fork_run(sb, step, "--run", run_id)
        if got.code not in (0, 1):
            out.bad(f"{step} of run {run_id} exited {got.code}: {got.out[-300:]}")
            raise TrialAbort
    change = rng.choice(CONFIG_CHANGES)
    config_path, dropped = _changed_config(sb, change)
    out.faults += 1
    out.notes.append(f"{change} after {last}{' (second destination broken)' if broken else ''}")
    roots = policy_roots(sb)
    before = data_ids(sb)
    first = sb.config_path
    sb.config_path = config_path
    try:
        clean = fork_run(sb, "clean", "--run", run_id)
        if clean.code != 2 or data_ids(sb) != before:
            out.bad(
                f"{change} after {last}: clean of the old run exited {clean.code} (expected 2) or changed data: "
                f"{clean.out[-300:]}"
            )
        got = real_run(sb)
    finally:
        sb.config_path = first
    if got.code not in (0, 1):
        out.bad(f"{change} after {last}: maintenance under the new rules exited {got.code}: {got.out[-300:]}")
    if (sb.state / "runs" / run_id / "clean.ok.json").exists():
        out.bad(f"{change} after {last}: run {run_id}, scanned under the old rules, was finished under the new")
    deleted = [e for e in log_events(sb) if e.get("event") == "deleted"]
    for e in deleted:
        if e.get("run") == run_id or e.get("policy") in dropped:
            out.bad(
                f"{change} after {last}: {e.get('policy')}/{e.get('path')!r} deleted by run {e.get('run')}, "
                "which the rules in force did not allow"
            )
    gone = {k for k in before if k not in data_ids(sb)}
    for key in gone:
        if key.split(b"/", 1)[0].decode() in {roots[p] for p in dropped}:
            out.bad(f"{change} after {last}: {key!r} of a dropped policy is gone")
    sb.config_path.write_bytes(original)  # the operator puts the first configuration back
    if broken:
        offsite.unlink()
    after_fault(sb, ds, out, f"{change} after {last}")
    recover_and_judge(sb, ds, scratch, out)
