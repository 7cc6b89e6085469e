"""plan and status: read-only reports, through scripts/plan.py and scripts/status.py as processes."""

import fcntl
import json
import os
import shlex
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tools.sandbox import SCRIPTS

from ._support import path_tree

MIN = 60


def _log_lines(sandbox, step: str) -> list[dict]:
    lines = []
    for f in sandbox.logs.glob("*"):
        lines += [json.loads(line) for line in f.read_text().splitlines()]
    return [d for d in lines if d.get("step") == step]


def _varied(sandbox) -> dict[str, dict[str, tuple[str, str]]]:
    """Files of every kind of decision over three policies; {policy: {path: (action, rule)}} expected."""
    config = dict(sandbox.config)
    config["policies"] = [
        dict(config["policies"][0], exclude=["**/current.log"]),
        {
            "name": "dumps",
            "root": "data/dumps",
            "include": ["*.sql"],
            "older_than": "7d",
            "settle": "10m",
            "keep_last": 2,
            "missing_ok": False,
        },
        {
            "name": "absent",
            "root": "data/absent",
            "include": ["**/*"],
            "older_than": "1d",
            "settle": "10m",
            "keep_last": 0,
            "missing_ok": True,
        },
    ]
    sandbox.write_config(config)
    sandbox.file("old.log", "old", age_days=40)
    sandbox.file("deep/er/older.log", "older" * 100, age_days=90)
    sandbox.file("young.log", "young", age_days=20)
    sandbox.file("settling.log", "being written", age_days=2 * MIN / 86400)
    sandbox.file("future.log", "clock skew", age_days=-1)
    sandbox.file("current.log", "excluded", age_days=40)  # excluded: not governed, not listed
    sandbox.file("notes.txt", "not matched", age_days=40)  # not included: not listed
    for i in range(4):
        sandbox.file(f"dump-{i}.sql", f"dump {i}", age_days=10 + i, root="dumps")
    sandbox.file("sub/nested.sql", "not matched by *.sql", age_days=40, root="dumps")
    return {
        "logs": {
            "old.log": ("expire", "older_than"),
            "deep/er/older.log": ("expire", "older_than"),
            "young.log": ("keep", "younger"),
            "settling.log": ("keep", "settle"),
            "future.log": ("keep", "future"),
        },
        "dumps": {
            "dump-0.sql": ("keep", "keep_last"),
            "dump-1.sql": ("keep", "keep_last"),
            "dump-2.sql": ("expire", "older_than"),
            "dump-3.sql": ("expire", "older_than"),
        },
        "absent": {},
    }


def _plan_json(sandbox) -> dict:
    r = sandbox.run("plan", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


# -- plan ------------------------------------------------------------------------------------


def test_plan_on_a_fresh_host_writes_nothing_but_log_lines(sandbox):
    _varied(sandbox)
    before = path_tree(sandbox.base)

    text = sandbox.run("plan")
    as_json = sandbox.run("plan", "--json")

    assert (text.returncode, as_json.returncode) == (0, 0), (text.stderr, as_json.stderr)
    assert "var" not in before
    assert os.listdir(sandbox.base / "var") == ["log"]  # var/ exists only to hold the log
    assert path_tree(sandbox.base, skip=("var",)) == before
    planned = [d for d in _log_lines(sandbox, "plan") if d.get("event") == "planned"]
    assert len(planned) == 2 * 3  # one line per policy per invocation


def test_plan_after_a_run_leaves_data_state_and_backups_untouched(sandbox):
    _varied(sandbox)
    assert sandbox.run("maintenance").returncode == 0
    sandbox.file("old-again.log", "expired since", age_days=45)
    log_files = {p.name: p.stat().st_size for p in sandbox.logs.iterdir()}
    before = path_tree(sandbox.base)

    r = sandbox.run("plan", "--json")

    assert r.returncode == 0, r.stderr
    assert path_tree(sandbox.base) == before
    assert sum(p.stat().st_size for p in sandbox.logs.iterdir()) > sum(log_files.values())
    planned = [d for d in _log_lines(sandbox, "plan") if d.get("event") == "planned"]
    assert len(planned) == 3  # one line per policy


def test_plan_text_names_each_policy_and_what_it_would_expire(sandbox):
    _varied(sandbox)

    r = sandbox.run("plan")

    assert r.returncode == 0, r.stderr
    for name in ("logs", "dumps", "absent"):
        assert name in r.stdout + r.stderr


def test_plan_json_lists_every_matching_file_with_action_rule_and_reason(sandbox):
    expected = _varied(sandbox)

    doc = _plan_json(sandbox)

    by_policy = {p["name"]: p for p in doc["policies"]}
    assert list(by_policy) == ["logs", "dumps", "absent"]
    for name, files in expected.items():
        decisions = by_policy[name]["decisions"]
        got = {d["path"]: (d["action"], d["rule"]) for d in decisions}
        assert got == files, name
        assert len(decisions) == len(got), f"{name}: a file listed twice"
        for d in decisions:
            assert isinstance(d["reason"], str) and d["reason"], d
        assert by_policy[name]["expire_files"] == sum(a == "expire" for a, _ in files.values())
        assert by_policy[name]["keep_files"] == sum(a == "keep" for a, _ in files.values())
    assert by_policy["absent"]["missing_root"] is True
    sizes = {d["path"]: d["size"] for d in by_policy["logs"]["decisions"]}
    assert sizes["deep/er/older.log"] == 500
    assert by_policy["logs"]["expire_bytes"] == 3 + 500


def test_plan_with_nothing_to_do_exits_zero_and_lists_nothing(sandbox):
    doc = _plan_json(sandbox)

    assert [p["decisions"] for p in doc["policies"]] == [[]]


def test_plan_agrees_with_what_the_next_scan_records(sandbox):
    _varied(sandbox)
    doc = _plan_json(sandbox)

    r = sandbox.run("scan")

    assert r.returncode == 0, r.stderr
    run_dir = sandbox.run_dir()
    scan_ok = json.loads((run_dir / "scan.ok.json").read_text())
    for policy in doc["policies"]:
        name = policy["name"]
        expired = {d["path"] for d in policy["decisions"] if d["action"] == "expire"}
        kept = {d["path"] for d in policy["decisions"] if d["action"] == "keep"}
        entries = run_dir / f"scan.{name}.jsonl"
        scanned = {json.loads(line)["path"] for line in entries.read_text().splitlines()} if entries.exists() else set()
        assert scanned == expired, name
        assert not scanned & kept, name
        if name in scan_ok["policies"]:
            recorded = scan_ok["policies"][name]
            assert recorded["expired"] == len(expired), name
            assert recorded["kept"] == len(kept), name
            assert recorded["reasons"] == dict(Counter(d["rule"] for d in policy["decisions"])), name
        else:
            assert not expired and not kept, name


def test_plan_with_invalid_config_exits_78_and_writes_nothing(sandbox):
    sandbox.write_config(dict(sandbox.config, surprise=1))
    before = path_tree(sandbox.base)

    r = sandbox.run("plan", "--json")

    assert r.returncode == 78
    assert "surprise" in r.stderr
    assert path_tree(sandbox.base) == before


# -- status ----------------------------------------------------------------------------------


def _status_json(sandbox) -> dict:
    r = sandbox.run("status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_status_on_an_empty_sandbox_exits_zero_and_changes_nothing(sandbox):
    before = path_tree(sandbox.base)

    text = sandbox.run("status")
    doc = _status_json(sandbox)

    assert text.returncode == 0, text.stderr
    assert "lock: free" in text.stdout
    assert doc["runs"] == [] and doc["problems"] == []
    assert doc["lock_holder"] is None and doc["last_complete_run"] is None
    assert path_tree(sandbox.base) == before


def test_status_after_maintenance_shows_the_run_with_all_four_steps_ok(sandbox):
    sandbox.file("a.log", "aaaa", age_days=40)
    sandbox.file("b.log", "bb", age_days=50)
    sandbox.file("young.log", "y", age_days=1)
    assert sandbox.run("maintenance").returncode == 0
    run_id = sandbox.runs()[-1]
    before = path_tree(sandbox.base)

    doc = _status_json(sandbox)
    text = sandbox.run("status")

    assert [r["run"] for r in doc["runs"]] == [run_id]
    steps = doc["runs"][0]["steps"]
    assert {s: st["state"] for s, st in steps.items()} == {"scan": "ok", "backup": "ok", "verify": "ok", "clean": "ok"}
    assert (steps["scan"]["files"], steps["scan"]["bytes"]) == (2, 6)
    assert (steps["clean"]["files"], steps["clean"]["bytes"]) == (2, 6)
    assert steps["verify"]["verified"] == ["local"]
    assert doc["last_complete_run"] == run_id
    assert doc["problems"] == []
    on_disk = sum(f.stat().st_size for f in (sandbox.backups / run_id).iterdir())
    assert {k: doc["destinations"]["local"][k] for k in ("runs", "bytes")} == {"runs": 1, "bytes": on_disk}
    assert doc["destinations"]["local"]["oldest_check_run"] == sandbox.runs()[-1]  # maintenance ended with scrub
    assert 0 <= doc["last_complete_age_seconds"] < 600
    assert doc["policies"]["logs"]["files"] == len([p for p in (sandbox.data / "logs").rglob("*.log") if p.is_file()])
    assert text.returncode == 0 and run_id in text.stdout
    assert path_tree(sandbox.base) == before


def test_status_after_a_failed_verify_names_the_run_and_the_step(sandbox):
    sandbox.file("a.log", "aaaa" * 1000, age_days=40)
    assert sandbox.run("scan").returncode == 0
    assert sandbox.run("backup").returncode == 0
    run_id = sandbox.runs()[-1]
    archive = sandbox.backups / run_id / "logs.tar.zst"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    assert sandbox.run("verify").returncode == 1

    doc = _status_json(sandbox)
    text = sandbox.run("status")

    steps = doc["runs"][0]["steps"]
    assert steps["verify"]["state"] == "failed"
    assert steps["verify"]["exit_code"] == 1
    assert steps["clean"]["state"] == "not run"
    assert any(run_id in p and "verify" in p for p in doc["problems"]), doc["problems"]
    assert doc["last_complete_run"] is None
    assert text.returncode == 0
    assert any(run_id in line and "verify" in line for line in text.stdout.splitlines() if line.startswith("problem"))


def test_status_reports_a_tampered_manifest_as_a_problem(sandbox):
    sandbox.file("a.log", "aaaa", age_days=40)
    assert sandbox.run("maintenance").returncode == 0
    run_id = sandbox.runs()[-1]
    ok = sandbox.run_dir() / "backup.ok.json"
    ok.write_bytes(ok.read_bytes().replace(b'"local"', b'"locaL"', 1))

    doc = _status_json(sandbox)

    assert doc["runs"][0]["steps"]["backup"]["state"] == "damaged"
    assert any(run_id in p and "backup" in p for p in doc["problems"]), doc["problems"]


def test_status_shows_the_lock_holder_while_the_lock_is_held(sandbox):
    sandbox.state.mkdir(parents=True, mode=0o700)
    holder = {
        "run": "20261126T031700Z-4f2a",
        "step": "backup",
        "pid": os.getpid(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    fd = os.open(sandbox.state / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.pwrite(fd, json.dumps(holder).encode(), 0)

        doc = _status_json(sandbox)
        text = sandbox.run("status")

        assert doc["lock_holder"] == holder
        assert text.returncode == 0
        assert f"held by pid {os.getpid()}" in text.stdout
        assert "20261126T031700Z-4f2a" in text.stdout
        # status only looks: a step wanting the lock still finds it busy
        assert sandbox.run("scan").returncode == 75
    finally:
        os.close(fd)

    assert _status_json(sandbox)["lock_holder"] is None
    assert "lock: free" in sandbox.run("status").stdout


def test_status_names_a_holder_without_a_run_by_its_step_alone(sandbox):
    # What the chain writes the moment it takes the lock, before it knows which run it resumes.
    sandbox.state.mkdir(parents=True, mode=0o700)
    fd = os.open(sandbox.state / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder = {"step": "maintenance", "pid": os.getpid(), "since": "2026-11-26T03:17:00Z"}
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        text = sandbox.run("status")
        rival = sandbox.run("scan")
    finally:
        os.close(fd)
    (line,) = [line for line in text.stdout.splitlines() if line.startswith("lock:")]
    assert line == f"lock: held by pid {os.getpid()} (step maintenance) since 2026-11-26T03:17:00Z", line
    assert rival.returncode == 75
    assert f"pid {os.getpid()} (step maintenance); nothing was changed" in rival.stderr, rival.stderr


def test_status_while_maintenance_runs_names_its_run(sandbox):
    out = sandbox.base / "status-during"
    status = shlex.join([sys.executable, str(SCRIPTS / "status.py"), "--config", str(sandbox.config_path)])
    # The hook runs while the chain still holds the lock: status seen from inside the run.
    sandbox.config["on_failure"] = (
        f"{status} --json > {shlex.quote(f'{out}.json')}; {status} > {shlex.quote(f'{out}.txt')}"
    )
    sandbox.write_config()
    sandbox.file("old.log", "old")

    result = sandbox.run("maintenance", env={"QTS_OPS_CRASH_AT": "backup.after_archive"})

    assert result.returncode == 1, result.stderr
    (run_id,) = sandbox.runs()
    holder = json.loads(out.with_suffix(".json").read_text())["lock_holder"]
    assert (holder["run"], holder["step"]) == (run_id, "maintenance"), holder
    assert (
        f"lock: held by pid {holder['pid']} (run {run_id}, step maintenance) since "
        in out.with_suffix(".txt").read_text()
    )


@pytest.mark.parametrize("script", ["plan", "status"])
def test_plan_and_status_reject_run_option_as_usage_error(sandbox, script):
    r = sandbox.run(script, "--run", "20261126T031700Z-4f2a")
    assert r.returncode == 64


def test_plan_json_with_a_missing_required_root_fails_without_half_a_document(sandbox):
    (sandbox.data / "logs").rmdir()

    r = sandbox.run("plan", "--json")

    assert r.returncode == 1
    assert str(sandbox.data / "logs") in r.stderr
    assert r.stdout == ""


def test_make_status_with_dest_lists_the_runs_that_destination_holds(sandbox):
    sandbox.file("old.log", b"x")
    assert sandbox.run("maintenance").returncode == 0
    repo = Path(__file__).resolve().parents[3]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "QTS_OPS_LOCK"))}
    out = subprocess.run(
        ["make", "-s", "status", f"CONFIG={sandbox.config_path}", "DEST=local"],
        cwd=repo,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == sandbox.runs()
