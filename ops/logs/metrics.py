"""Prometheus textfile metrics, rewritten atomically after every step.

Each step is its own process, so counters live in ``<state_dir>/metrics.json`` (updated
under a short flock of their own, since a step refused for the lock must still count its
refusal) and are rendered to ``metrics_file`` in the text exposition format. The textfile
holds only counters and timestamps, so it alone may be world-readable (0644) for a
node_exporter running as another user.
"""

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

from ops.config import Config
from ops.errors import CONFIG, FAILED, LOCKED, OK, REFUSED
from ops.sys.atomic import PRIVATE_FILE, atomic_write, ensure_private_dir
from ops.sys.paths import NotPlainFile, open_plain_fd, read_plain_file

STATE = "metrics.json"
RESULTS = {OK: "ok", FAILED: "failed", REFUSED: "refused", LOCKED: "locked", CONFIG: "config"}
# counter name (without qts_ops_ and _total) -> help
COUNTERS = {
    "backed_up_files": "Files archived (and hashed) by backup.",
    "backed_up_bytes": "Bytes of files archived by backup.",
    "verified_files": "Archive members re-read and matched by verify, per destination copy.",
    "verified_bytes": "Bytes of archive members re-read and matched by verify, per destination copy.",
    "deleted_files": "Files deleted by clean after a verified backup.",
    "deleted_bytes": "Bytes freed by clean.",
    "kept_changed_files": "Files clean kept because they changed after backup.",
}


@contextlib.contextmanager
def _locked_state(state_dir: Path):
    ensure_private_dir(state_dir)
    fd = open_plain_fd(Path(state_dir) / "metrics.lock", os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held for a read-modify-write of a small file only
        path = Path(state_dir) / STATE
        try:
            data = json.loads(read_plain_file(path))
        except (FileNotFoundError, NotPlainFile, ValueError):
            data = {}  # counting starts again; a link or FIFO put there is replaced, never read through
        yield data
        atomic_write(path, json.dumps(data, sort_keys=True).encode())
    finally:
        os.close(fd)


def _per_policy(step: str, body: dict, chain: dict) -> dict[str, dict[str, int]]:
    """Counter increments by policy from a step's success manifest body (and its chain)."""
    # Every policy the run scanned had this step succeed, even with nothing to do, so a
    # per-policy "last success" alert does not fire for a quiet policy.
    scanned = body.get("policies", {}) if step == "scan" else chain.get("scan", {}).get("policies", {})
    # A policy the deletion brake held had nothing done: its "last success" must go stale.
    out: dict[str, dict[str, int]] = {name: {} for name, p in scanned.items() if not p.get("braked")}
    if step == "verify":
        copies = len(body.get("verified", []))
        for name, p in chain.get("backup", {}).get("policies", {}).items():
            out[name] = {
                "verified_files": p.get("members", 0) * copies,
                "verified_bytes": p.get("member_bytes", 0) * copies,
            }
    elif step == "backup":
        for name, p in body.get("policies", {}).items():
            out[name] = {"backed_up_files": p.get("archived", 0), "backed_up_bytes": p.get("member_bytes", 0)}
    elif step == "clean":
        for name, p in body.get("policies", {}).items():
            out[name] = {
                "deleted_files": p.get("deleted", 0),
                "deleted_bytes": p.get("deleted_bytes", 0),
                "kept_changed_files": p.get("kept_changed", 0),
            }
    return out


def _undeletable(step: str, body: dict, data: dict) -> None:
    """The gauge of files its user could not delete, as this scan or clean counted them in
    its manifest: scan's expired files kept because their directory is not writable,
    clean's failed unlinks."""
    found = {policy: p.get("undeletable", 0) for policy, p in body.get("policies", {}).items()}
    data.setdefault("undeletable", {})[step] = found


def record_step(
    config: Config, step: str, code: int, seconds: float, body: dict | None = None, chain: dict | None = None
) -> None:
    """Count one step's outcome and re-render the textfile. Never raises: metrics must not fail a run.

    Without ``metrics_file`` in the config nothing is counted or written at all.
    """
    if config.metrics_file is None:
        return
    try:
        with _locked_state(config.state_dir) as data:
            _count(config, data, step, code, seconds, body or {}, chain or {})
            snapshot = json.loads(json.dumps(data))
    except OSError:
        # The state directory is what failed (read-only, full, not ours): the textfile still
        # shows this outcome, on the counters as last saved, so the failure reaches alerting.
        snapshot = _saved(config.state_dir)
        _count(config, snapshot, step, code, seconds, body or {}, chain or {})
    try:
        write_textfile(config, snapshot)
    except OSError:
        pass  # a full disk or a read-only metrics path must not turn a good run into a failed one


def record_scrub(config: Config, counts: dict, oldest_age: dict, lost: int, ok: bool) -> None:
    """Count one scrub: per destination the copies checked, damaged, repaired, unrepairable
    (counters), the age of its oldest check and the runs with no intact copy (gauges).
    Never raises, as record_step."""
    if config.metrics_file is None:
        return
    try:
        with _locked_state(config.state_dir) as data:
            s = data.setdefault("scrub", {})
            for name, c in counts.items():
                totals = s.setdefault("counts", {}).setdefault(name, {})
                for k, v in c.items():
                    totals[k] = totals.get(k, 0) + v
            s["oldest_age"], s["lost"] = oldest_age, lost
            if ok:
                s["last_success"] = time.time()
            snapshot = json.loads(json.dumps(data))
        write_textfile(config, snapshot)
    except OSError:
        pass


def _saved(state_dir: Path) -> dict:
    try:
        return json.loads(read_plain_file(Path(state_dir) / STATE))
    except (OSError, ValueError):
        return {}


def _count(config: Config, data: dict, step: str, code: int, seconds: float, body: dict, chain: dict) -> None:
    now = time.time()
    s = data.setdefault("steps", {}).setdefault(step, {})
    result = "paused" if body.get("paused") else RESULTS.get(code, "failed")
    s.setdefault("runs", {})[result] = s.get("runs", {}).get(result, 0) + 1
    if result == "paused":  # the window closed mid-step: no success, no failure; the next run resumes
        data["paused"] = {"step": step, "since": now}
        return
    if code == OK:
        data.pop("paused", None)
    increments = _per_policy(step, body, chain) if code == OK else {}
    if code == OK:
        s["last_success"] = now
        s["duration"] = seconds
        s["throttled"] = body.get("throttled_s", 0)
        for policy in increments:
            data.setdefault("policy_success", {}).setdefault(step, {})[policy] = now
    elif code in (FAILED, REFUSED):
        s["last_failure"] = now
    if code == LOCKED:
        data["lock_contention"] = data.get("lock_contention", 0) + 1
    if step == "verify" and code == FAILED:
        data["verify_failures"] = data.get("verify_failures", 0) + 1
    if step == "backup" and code == OK:
        # Every configured destination is asked by every backup; one that failed while the
        # quorum was still met leaves the run a success, so only these numbers show it.
        failed = body.get("failed_destinations", {})
        for d in config.destinations:
            if d.name in failed:
                counts = data.setdefault("destination_failures", {})
                counts[d.name] = counts.get(d.name, 0) + 1
            else:
                data.setdefault("destination_success", {})[d.name] = now
    if code == OK and step in ("scan", "clean"):
        _undeletable(step, body, data)
    if code == OK and step == "scan":
        data["braked"] = sorted(n for n, p in body.get("policies", {}).items() if p.get("braked"))
    counters = data.setdefault("counters", {})
    for policy, inc in increments.items():
        for name, value in inc.items():
            counters.setdefault(name, {})[policy] = counters.get(name, {}).get(policy, 0) + value


def _line(name: str, labels: dict, value) -> str:
    inner = ",".join(f'{k}="{str(v)}"' for k, v in sorted(labels.items()))
    return f"qts_ops_{name}{{{inner}}} {value}\n" if inner else f"qts_ops_{name} {value}\n"


def render(config: Config, data: dict) -> str:
    out = []

    def family(name: str, kind: str, help_text: str, samples) -> None:
        out.append(f"# HELP qts_ops_{name} {help_text}\n# TYPE qts_ops_{name} {kind}\n")
        out.extend(_line(name, labels, value) for labels, value in samples)

    steps = data.get("steps", {})
    family(
        "step_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the step's last success.",
        [({"step": k}, v["last_success"]) for k, v in sorted(steps.items()) if "last_success" in v],
    )
    family(
        "step_last_failure_timestamp_seconds",
        "gauge",
        "Unix time of the step's last failure or refusal.",
        [({"step": k}, v["last_failure"]) for k, v in sorted(steps.items()) if "last_failure" in v],
    )
    family(
        "step_duration_seconds",
        "gauge",
        "Wall time of the step's last success.",
        [({"step": k}, v["duration"]) for k, v in sorted(steps.items()) if "duration" in v],
    )
    family(
        "step_throttled_seconds",
        "gauge",
        "Seconds the step's last success rested to leave the disk to the trading core (pace gentle).",
        [({"step": k}, v["throttled"]) for k, v in sorted(steps.items()) if "throttled" in v],
    )
    paused = data.get("paused")
    family(
        "paused_by_window",
        "gauge",
        "1 while the newest run is paused because the maintenance window closed during a step (the step is "
        "labelled); 0 once a step succeeds again.",
        [({"step": paused["step"]}, 1)] if paused else [({}, 0)],
    )
    family(
        "step_runs_total",
        "counter",
        "Step runs by result (ok, failed, refused, locked, config, paused).",
        [({"step": k, "result": r}, n) for k, v in sorted(steps.items()) for r, n in sorted(v.get("runs", {}).items())],
    )
    maintenance = steps.get("clean", {}).get("last_success")
    family(
        "maintenance_last_success_timestamp_seconds",
        "gauge",
        "Unix time a whole maintenance run last completed (clean succeeded).",
        [({}, maintenance)] if maintenance else [],
    )
    family(
        "policy_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the step's last success for the policy.",
        [
            ({"step": st, "policy": p}, t)
            for st, ps in sorted(data.get("policy_success", {}).items())
            for p, t in sorted(ps.items())
        ],
    )
    for name, help_text in COUNTERS.items():
        family(
            f"{name}_total",
            "counter",
            help_text,
            [({"policy": p}, v) for p, v in sorted(data.get("counters", {}).get(name, {}).items())],
        )
    braked = set(data.get("braked", []))
    family(
        "policy_braked",
        "gauge",
        "1 when the newest scan's deletion brake (max_delete) held the policy: nothing of it is expired "
        "until ALLOW_LARGE_DELETE lets a run through.",
        [({"policy": p.name}, int(p.name in braked)) for p in config.policies],
    )
    family(
        "undeletable_files",
        "gauge",
        "Files the toolkit's user could not delete at the last scan (expired, kept: their directory is not "
        "writable) or clean (unlink failed). They stay on disk until the cause is fixed.",
        [
            ({"step": st, "policy": p}, n)
            for st, ps in sorted(data.get("undeletable", {}).items())
            for p, n in sorted(ps.items())
        ],
    )
    family(
        "verify_failures_total",
        "counter",
        "Verify runs that found a copy unreadable or not matching.",
        [({}, data.get("verify_failures", 0))],
    )
    family(
        "lock_contention_total",
        "counter",
        "Runs that found another run holding the lock (exit 75).",
        [({}, data.get("lock_contention", 0))],
    )
    family(
        "destination_last_success_timestamp_seconds",
        "gauge",
        "Unix time a backup last reached the destination without failing on it.",
        [({"destination": d}, t) for d, t in sorted(data.get("destination_success", {}).items())],
    )
    failures = data.get("destination_failures", {})
    # 0 for every configured destination, so increase() sees its first failure too.
    named = sorted({*failures, *(dest.name for dest in config.destinations)})
    family(
        "destination_failures_total",
        "counter",
        "Backups that succeeded without the destination (it failed; the others met the quorum).",
        [({"destination": d}, failures.get(d, 0)) for d in named],
    )
    scrub = data.get("scrub", {})
    family(
        "scrub_last_success_timestamp_seconds",
        "gauge",
        "Unix time a scrub (make scrub, or the end of maintenance) last ended with every run intact somewhere.",
        [({}, scrub["last_success"])] if "last_success" in scrub else [],
    )
    for key, help_text in (
        ("checked", "Copies of runs re-read by scrub."),
        ("damaged", "Copies scrub found damaged or missing."),
        ("repaired", "Copies scrub repaired from another destination's."),
        ("unrepairable", "Damaged or missing copies scrub found no intact copy to repair from."),
    ):
        family(
            f"scrub_{key}_total",
            "counter",
            help_text,
            [({"destination": d}, c.get(key, 0)) for d, c in sorted(scrub.get("counts", {}).items())],
        )
    family(
        "scrub_oldest_check_age_seconds",
        "gauge",
        "Seconds since the run checked longest ago on the destination was checked (never: since the first run).",
        [({"destination": d}, round(a)) for d, a in sorted(scrub.get("oldest_age", {}).items())],
    )
    family(
        "runs_without_intact_copy",
        "gauge",
        "Runs of which scrub found no intact copy on any destination.",
        [({}, scrub.get("lost", 0))],
    )
    free = []
    for p in config.policies:
        try:
            st = os.statvfs(p.root)
        except OSError:
            continue
        free.append(({"policy": p.name}, st.f_bavail * st.f_frsize))
    family(
        "root_free_bytes",
        "gauge",
        "Free bytes (for an unprivileged writer) on the filesystem of each policy root.",
        free,
    )
    return "".join(out)


def write_textfile(config: Config, data: dict) -> None:
    directory = config.metrics_file.parent
    if not directory.is_dir():
        directory.mkdir(parents=True)
        directory.chmod(0o755)  # an exporter running as another user must reach the file
    atomic_write(config.metrics_file, render(config, data).encode(), mode=0o644)
