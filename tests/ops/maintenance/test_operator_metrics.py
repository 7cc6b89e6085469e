"""The Prometheus textfile (``metrics_file:``), proven through the real step scripts.

node_exporter's textfile collector reads it as another user, so it must parse with
prometheus_client's own parser, follow the naming conventions, carry correct per-policy
values, be replaced atomically after every step, and be the one world-readable thing the
toolkit writes. Without ``metrics_file`` nothing about metrics may appear on disk at all.
"""

import os
import re
import stat
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ops.state.manifest import STEPS
from tools.sandbox import Sandbox

from ._operator_support import METRICS_FILE, add_dumps_policy, aged, corrupt, holding_lock, read_metrics, sample
from ._support import run_ok

# What the stepped sandbox holds: (policy, rel) -> content; c.log changes after backup.
FILES = {
    ("logs", "a.log"): b"a" * 100,
    ("logs", "sub/b.log"): b"b" * 250,
    ("logs", "c.log"): b"c" * 40,
    ("dumps", "d1.dump"): b"1" * 1000,
    ("dumps", "x/d2.dump"): b"2" * 3000,
}


@pytest.fixture(scope="module")
def stepped(tmp_path_factory):
    """Two policies with metrics on; scan, backup, verify, clean run one by one, and c.log is
    appended to between backup and verify. After each step: when it ran, the textfile's inode
    and its parsed samples."""
    sandbox = Sandbox(tmp_path_factory.mktemp("stepped"))
    add_dumps_policy(sandbox)
    sandbox.config["metrics_file"] = METRICS_FILE
    sandbox.write_config()
    for (root, rel), content in FILES.items():
        aged(sandbox, rel, content, root=root)
    aged(sandbox, "recent.log", b"young\n", age_days=2)
    seen, held = {}, []
    for step in STEPS:
        if step == "verify":
            changed = sandbox.data / "logs" / "c.log"
            with open(changed, "ab") as f:
                f.write(b"the core wrote more\n")
        started = time.time()
        run_ok(sandbox, step)
        finished = time.time()
        path = sandbox.base / METRICS_FILE
        # Each step's file is held open: a replaced file's inode number is free for the
        # next file to take once nothing holds it, and inodes are compared below.
        held.append(open(path, "rb"))
        seen[step] = {
            "window": (started, finished),
            "ino": os.fstat(held[-1].fileno()).st_ino,
            "metrics": read_metrics(path),
            "text": path.read_text(),
        }
    for f in held:
        f.close()
    return sandbox, seen


def test_metrics_textfile_parses_and_follows_prometheus_naming_conventions(stepped):
    _sandbox, seen = stepped
    families = list(text_string_to_metric_families(seen["clean"]["text"]))
    assert families, "the textfile holds no metric family"
    declared = dict(re.findall(r"^# TYPE (\S+) (\S+)$", seen["clean"]["text"], re.M))
    for family in families:
        assert re.fullmatch(r"qts_ops_[a-z0-9_]+", family.name), family.name
        assert family.type in ("counter", "gauge"), (family.name, family.type)
        for s in family.samples:
            if family.type == "counter":
                assert s.name.endswith("_total"), f"counter sample {s.name} lacks _total"
            else:
                assert not s.name.endswith("_total"), f"gauge {s.name} named like a counter"
            if "timestamp" in s.name or "duration" in s.name:
                assert s.name.endswith("_seconds"), f"{s.name}: times are in seconds"
            if "bytes" in s.name:
                assert s.name.endswith(("_bytes", "_bytes_total")), f"{s.name}: bytes is the unit suffix"
            assert s.value >= 0, s
    for name, kind in declared.items():  # what the TYPE lines say, as node_exporter reads them
        assert (kind == "counter") == name.endswith("_total"), (name, kind)
    names = {f.name for f in families}
    assert {
        "qts_ops_step_last_success_timestamp_seconds",
        "qts_ops_backed_up_files",
        "qts_ops_backed_up_bytes",
        "qts_ops_verified_files",
        "qts_ops_verified_bytes",
        "qts_ops_deleted_files",
        "qts_ops_deleted_bytes",
        "qts_ops_kept_changed_files",
        "qts_ops_verify_failures",
        "qts_ops_lock_contention",
        "qts_ops_root_free_bytes",
    } <= names


def test_metrics_textfile_is_replaced_after_every_step_with_its_last_success_time(stepped):
    _sandbox, seen = stepped
    inodes = [seen[step]["ino"] for step in STEPS]
    assert len(set(inodes)) == len(STEPS), "each step must replace the file (write, rename), not rewrite it in place"
    for i, step in enumerate(STEPS):
        m = seen[step]["metrics"]
        started, finished = seen[step]["window"]
        when = sample(m, "qts_ops_step_last_success_timestamp_seconds", step=step)
        assert when is not None and started <= when <= finished, (
            f"{step}: last success {when} not in {started}..{finished}"
        )
        for later in STEPS[i + 1 :]:
            assert sample(m, "qts_ops_step_last_success_timestamp_seconds", step=later) is None, (step, later)
        assert sample(m, "qts_ops_step_runs_total", step=step, result="ok") == 1
    final = seen["clean"]["metrics"]
    assert sample(final, "qts_ops_maintenance_last_success_timestamp_seconds") == sample(
        final, "qts_ops_step_last_success_timestamp_seconds", step="clean"
    )
    for policy in ("logs", "dumps"):
        for step in STEPS:
            assert sample(final, "qts_ops_policy_last_success_timestamp_seconds", step=step, policy=policy) is not None


def test_metrics_count_backed_up_verified_deleted_and_kept_changed_per_policy(stepped):
    sandbox, seen = stepped
    m = seen["clean"]["metrics"]
    size = {policy: sum(len(c) for (p, _), c in FILES.items() if p == policy) for policy in ("logs", "dumps")}
    expected = {
        "logs": {
            "backed_up_files": 3,
            "backed_up_bytes": size["logs"],
            "verified_files": 3,
            "verified_bytes": size["logs"],
            "deleted_files": 2,
            "deleted_bytes": 100 + 250,
            "kept_changed_files": 1,
        },
        "dumps": {
            "backed_up_files": 2,
            "backed_up_bytes": 4000,
            "verified_files": 2,
            "verified_bytes": 4000,
            "deleted_files": 2,
            "deleted_bytes": 4000,
            "kept_changed_files": 0,
        },
    }
    for policy, counters in expected.items():
        got = {name: sample(m, f"qts_ops_{name}_total", policy=policy) for name in counters}
        assert got == counters, policy
    assert sample(m, "qts_ops_verify_failures_total") == 0
    assert sample(m, "qts_ops_lock_contention_total") == 0
    # the counts are the truth on disk: a and b gone, the changed c.log kept, the young file untouched
    assert set(sandbox.snapshot()) == {"logs/c.log", "logs/recent.log"}
    # counters appear with the step that counts them, not before
    assert sample(seen["scan"]["metrics"], "qts_ops_backed_up_files_total", policy="logs") is None
    assert sample(seen["backup"]["metrics"], "qts_ops_backed_up_files_total", policy="logs") == 3
    assert sample(seen["backup"]["metrics"], "qts_ops_deleted_files_total", policy="logs") is None


def test_metrics_report_free_bytes_on_each_policy_root(stepped):
    sandbox, seen = stepped
    m = seen["clean"]["metrics"]
    for policy in ("logs", "dumps"):
        got = sample(m, "qts_ops_root_free_bytes", policy=policy)
        st = os.statvfs(sandbox.data / policy)
        now = st.f_bavail * st.f_frsize
        assert got is not None, policy
        # the disk is shared with whatever else runs: equal within 1% or 256 MiB
        assert abs(got - now) <= max(now // 100, 256 << 20), (policy, got, now)


def test_metrics_file_alone_is_world_readable_and_no_temporary_file_is_left(stepped):
    sandbox, _seen = stepped
    metrics = sandbox.base / METRICS_FILE
    assert stat.S_IMODE(metrics.stat().st_mode) == 0o644
    assert os.listdir(metrics.parent) == [metrics.name], "a temporary file of the atomic write was left behind"
    assert (sandbox.state / "metrics.json").is_file(), "the counters live in the state dir"
    # The directory the toolkit made for the metrics file is 0755, so an exporter running
    # as another user can reach the file; every other directory stays private.
    assert stat.S_IMODE(metrics.parent.stat().st_mode) == 0o755
    for dirpath, dirs, files in os.walk(sandbox.base / "var"):
        for name in dirs:
            path = os.path.join(dirpath, name)
            if path != str(metrics.parent):
                assert stat.S_IMODE(os.lstat(path).st_mode) == 0o700, path
        for name in files:
            path = os.path.join(dirpath, name)
            assert not name.startswith("."), f"temporary file left: {path}"
            if path != str(metrics):
                assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600, path


def test_a_corrupted_archive_counts_one_verify_failure(sandbox):
    sandbox.config["metrics_file"] = METRICS_FILE
    sandbox.write_config()
    aged(sandbox, "a.log", b"alpha\n" * 50)
    run_ok(sandbox, "scan")
    run_ok(sandbox, "backup")
    corrupt(sandbox.backups / sandbox.runs()[-1] / "logs.tar.zst")
    data = sandbox.snapshot()
    started = time.time()
    result = sandbox.run("verify")
    assert result.returncode == 1, result.stderr
    m = read_metrics(sandbox.base / METRICS_FILE)
    assert sample(m, "qts_ops_verify_failures_total") == 1
    assert sample(m, "qts_ops_step_runs_total", step="verify", result="failed") == 1
    assert started <= sample(m, "qts_ops_step_last_failure_timestamp_seconds", step="verify") <= time.time()
    assert sample(m, "qts_ops_step_last_success_timestamp_seconds", step="verify") is None
    assert sample(m, "qts_ops_verified_files_total", policy="logs") is None, "a failed verify verified nothing"
    assert sandbox.snapshot() == data


def test_a_step_and_a_maintenance_refused_for_the_lock_count_lock_contention(sandbox):
    sandbox.config["metrics_file"] = METRICS_FILE
    sandbox.write_config()
    aged(sandbox, "a.log", b"alpha\n")
    data = sandbox.snapshot()
    with holding_lock(sandbox):
        step = sandbox.run("scan")
        assert step.returncode == 75, step.stderr
        m = read_metrics(sandbox.base / METRICS_FILE)
        assert sample(m, "qts_ops_lock_contention_total") == 1
        assert sample(m, "qts_ops_step_runs_total", step="scan", result="locked") == 1
        chain = sandbox.run("maintenance")  # what cron runs: its refusal must count too
        assert chain.returncode == 75, chain.stderr
        assert sample(read_metrics(sandbox.base / METRICS_FILE), "qts_ops_lock_contention_total") == 2
    assert sandbox.runs() == [], "a run refused for the lock started nothing"
    assert sandbox.snapshot() == data


def test_without_metrics_file_nothing_named_metrics_is_written(sandbox):
    aged(sandbox, "a.log", b"alpha\n")
    run_ok(sandbox, "maintenance")
    with holding_lock(sandbox):  # the refusal path counts nothing either
        assert sandbox.run("scan").returncode == 75
    assert sandbox.snapshot() == {}, "the maintenance did its work"
    found = [
        os.path.join(d, n)
        for d, dirs, files in os.walk(sandbox.base)
        for n in dirs + files
        if "metrics" in n.lower() or n.endswith(".prom")
    ]
    assert found == [], found
