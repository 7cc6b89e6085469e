"""Guard rails for a trading host, driven through the real scripts as separate processes:
the maintenance window, the deletion brake, files a process holds open for writing, the
I/O budget, and plan naming its files wherever its output goes.

The one thing not real is the time of day in the window-closing test: the window's clock
(and only it, never a file's age) is moved by QTS_OPS_WINDOW_CLOCK_SKEW, so that a window
closes a few seconds into a real backup instead of at the next real 12:00.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

from ops.state.manifest import JOURNAL
from ops.sys.window import DAYS, SKEW_ENV
from tools.sandbox import SCRIPTS, add_policy, log_events, popen, published_runs, tar_members

MAKE = ["make", "-s", "-C", str(SCRIPTS.parent)]
ENV = {"QTS_OPS_PRIORITY": "normal"}


def make(sandbox, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*MAKE, *args, f"CONFIG={sandbox.config_path}"],
        capture_output=True,
        text=True,
        env={**os.environ, **ENV},
        **kw,
    )


def _closed_now() -> list[str]:
    """A window (UTC) that excludes the present: an hour on the day after tomorrow."""
    day = DAYS[(datetime.now(UTC).weekday() + 2) % 7]
    return [f"{day} 03:00-04:00"]


def _skew_to(hour: int, minute: int, second: int) -> str:
    """The window clock's skew that makes it read today's hour:minute:second, UTC."""
    target = datetime.now(UTC).replace(hour=hour, minute=minute, second=second, microsecond=0)
    return str(target.timestamp() - time.time())


def _events(sandbox, name: str) -> list[dict]:
    return [e for e in log_events(sandbox) if e.get("event") == name]


# --- the window -----------------------------------------------------------------------------


def test_outside_the_window_every_step_does_nothing_and_exits_0(sandbox):
    sandbox.file("old.log", "expired\n")
    sandbox.config["window"] = {"timezone": "UTC", "allow": _closed_now()}
    sandbox.write_config()
    before = sandbox.snapshot()
    for script in ("maintenance", "scan", "backup", "verify", "clean"):
        r = sandbox.run(script)
        assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), (script, r.stderr)  # quiet under cron
    assert sandbox.snapshot() == before
    assert sandbox.runs() == [] and not (sandbox.backups.exists() and os.listdir(sandbox.backups))
    said = _events(sandbox, "outside_window")
    assert {e["step"] for e in said} == {"maintenance", "scan", "backup", "verify", "clean", "scrub"}
    r = sandbox.run("maintenance", env={"VERBOSE": "1"})
    assert r.returncode == 0 and "outside the maintenance window" in r.stderr and "IGNORE_WINDOW=1" in r.stderr


def test_ignore_window_runs_anyway_and_restore_find_plan_never_look(sandbox):
    sandbox.file("old.log", "expired\n")
    sandbox.config["window"] = {"timezone": "UTC", "allow": _closed_now()}
    sandbox.write_config()
    r = make(sandbox, "maintenance", "IGNORE_WINDOW=1")
    assert r.returncode == 0, r.stderr
    assert not (sandbox.data / "logs/old.log").exists()
    assert make(sandbox, "plan").returncode == 0
    assert make(sandbox, "find", f"FILE={sandbox.data / 'logs/old.log'}").returncode == 0
    r = sandbox.run("restore", "--file", str(sandbox.data / "logs/old.log"))
    assert r.returncode == 0, r.stderr
    assert (sandbox.data / "logs/old.log").read_text() == "expired\n"


def test_a_window_closing_mid_backup_pauses_the_run_and_the_next_run_resumes_it(sandbox):
    blobs = {f"big{i}.log": os.urandom(16 << 20) for i in range(3)}
    for name, data in blobs.items():
        sandbox.file(name, data)
    sandbox.file("small.log", "small\n")
    before = sandbox.snapshot()
    sandbox.config.update(
        metrics_file="var/metrics/qts.prom",
        io_limit="8MiB/s",  # 48 MiB: a backup of 6 s, so the window closes inside it
        window={"timezone": "UTC", "allow": ["Mon-Sun 00:00-12:00"]},
    )
    sandbox.write_config()
    started = time.monotonic()
    r = sandbox.run("maintenance", env={SKEW_ENV: _skew_to(11, 59, 57)})
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - started < 15, "the step did not stop at a safe point soon after the window closed"
    run = sandbox.run_dir()
    assert (run / "scan.ok.json").exists() and not (run / "backup.ok.json").exists()
    paused = json.loads((run / "backup.paused.json").read_text())
    assert "outside the maintenance window" in paused["reason"]
    assert published_runs(sandbox.backups) == [], "a run was published, or its staging left"
    assert sandbox.snapshot() == before
    assert _events(sandbox, "outside_window")
    status = sandbox.run("status", env={"COLUMNS": "250"})
    assert "paused by the window" in status.stdout, status.stdout
    assert 'qts_ops_paused_by_window{step="backup"} 1' in (sandbox.base / "var/metrics/qts.prom").read_text()

    del sandbox.config["io_limit"]  # not part of the run's rules: the run continues
    sandbox.write_config()
    r = sandbox.run("maintenance", env={SKEW_ENV: _skew_to(10, 0, 0)})
    assert r.returncode == 0, r.stderr
    assert sandbox.runs() == [run.name], "the paused run was not the one resumed"
    assert (run / "clean.ok.json").exists() and not (run / "backup.paused.json").exists()
    archive = sandbox.backups / run.name / "logs.tar.zst"
    assert sorted(tar_members(archive)) == sorted(blobs) + ["small.log"]
    tar = ["tar", "--zstd", "-xOf", str(archive), "big1.log"]
    out = subprocess.run(tar, capture_output=True, check=True).stdout
    assert hashlib.sha256(out).digest() == hashlib.sha256(blobs["big1.log"]).digest()
    assert not any((sandbox.data / "logs" / n).exists() for n in blobs)
    assert "qts_ops_paused_by_window 0" in (sandbox.base / "var/metrics/qts.prom").read_text()


def test_a_window_closing_mid_clean_leaves_a_journal_the_next_run_resumes(sandbox):
    """clean is stopped (SIGSTOP) once its first batch is journaled, while the window's
    clock runs on past the window's end; continued, it must stop at the next batch."""
    for i in range(3000):
        sandbox.file(f"d{i // 100}/{i}.log", f"{i}\n")
    sandbox.config["window"] = {"timezone": "UTC", "allow": ["Mon-Sun 00:00-12:00"]}
    add_policy(sandbox, "journals", "journals", ["*.jnl"])  # braked: said when clean ends, not when it pauses
    sandbox.file("a.jnl", "old\n", root="journals")
    sandbox.config["policies"][1]["max_delete"] = "10%"
    sandbox.write_config()
    inside = {SKEW_ENV: _skew_to(10, 0, 0)}
    for step in ("scan", "backup", "verify"):
        assert sandbox.run(step, env=inside).returncode == 0
    run = sandbox.run_dir()
    journal = run / JOURNAL
    proc = popen(sandbox, "clean", env={SKEW_ENV: _skew_to(11, 59, 58)})
    deadline = time.monotonic() + 30
    while not (journal.exists() and journal.stat().st_size) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGSTOP)
    time.sleep(3)  # the window closes meanwhile
    os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert not (run / "clean.ok.json").exists(), "clean ran to its end after the window closed"
    assert (run / "clean.paused.json").exists()
    left = sum(1 for _ in (sandbox.data / "logs").rglob("*.log"))
    decided = len(journal.read_bytes().splitlines())
    assert 0 < left < 3000 and decided == 3000 - left, "the batches in flight were not journaled before stopping"
    r = sandbox.run("maintenance", env=inside)
    assert r.returncode == 1 and "policy journals would have deleted 1 of its 1 files" in r.stderr
    clean = json.loads((run / "clean.ok.json").read_text())
    assert clean["resumed_after"] == decided and clean["deleted"] == left
    assert not list((sandbox.data / "logs").rglob("*.log"))
    found = sandbox.run("find", "--file", str(sandbox.data / "logs/d0/0.log"))
    assert found.returncode == 0 and run.name in found.stdout


@pytest.mark.parametrize(
    ("window", "key"),
    [
        ({"allow": ["Mon-Fri 25:00-07:30"]}, "window.allow[0]"),
        ({"allow": ["Funday 00:00-01:00"]}, "window.allow[0]"),
        ({"allow": ["Mon 00:00-24:00", "Tue 10:00-10:00"]}, "window.allow[1]"),
        ({"allow": []}, "window.allow"),
        ({"allow": "Mon 00:00-01:00"}, "window.allow"),
        ({"timezone": "Mars/Olympus", "allow": ["Mon 00:00-01:00"]}, "window.timezone"),
        ({"timezone": "UTC"}, "window.allow"),
        ({"allow": ["Mon 00:00-01:00"], "alow": 1}, "window.alow"),
    ],
)
def test_a_bad_window_is_refused_naming_the_key(sandbox, window, key):
    sandbox.config["window"] = window
    sandbox.write_config()
    r = sandbox.run("maintenance")
    assert r.returncode == 78, r.stderr
    assert f"{key}:" in r.stderr and str(sandbox.config_path) in r.stderr


# --- the deletion brake ---------------------------------------------------------------------


def _braked_sandbox(sandbox, limit="25%"):
    for i in range(4):
        sandbox.file(f"old{i}.log", f"old {i}\n")
    sandbox.file("new.log", "new\n", age_days=1)
    sandbox.config["policies"][0]["max_delete"] = limit
    add_policy(sandbox, "journals", "journals", ["*.jnl"])
    sandbox.file("a.jnl", "journal\n", root="journals")
    sandbox.write_config()


@pytest.mark.parametrize("limit", ["25%", "10B"])
def test_a_policy_over_max_delete_deletes_nothing_and_the_run_exits_1_naming_it(sandbox, limit):
    _braked_sandbox(sandbox, limit)
    r = sandbox.run("maintenance")
    assert r.returncode == 1, r.stderr
    assert "policy logs would have deleted 4 of its 5 files" in r.stderr
    assert f"over max_delete {limit}" in r.stderr and "ALLOW_LARGE_DELETE=logs" in r.stderr
    assert "--allow-large-delete logs" in r.stderr
    assert all((sandbox.data / f"logs/old{i}.log").exists() for i in range(4))
    assert not (sandbox.data / "journals/a.jnl").exists(), "the other policy did not proceed"
    scan = json.loads((sandbox.run_dir() / "scan.ok.json").read_text())
    assert scan["policies"]["logs"]["expired"] == 0 and scan["policies"]["logs"]["braked"]["files"] == 4
    problems = json.loads(sandbox.run("status", "--json").stdout)["problems"]
    assert any("the deletion brake held policy logs" in p for p in problems), problems


def test_the_brake_shows_in_the_metrics_and_leaves_the_policy_stale(sandbox):
    _braked_sandbox(sandbox)
    sandbox.config["metrics_file"] = "var/metrics/qts.prom"
    sandbox.write_config()
    assert sandbox.run("maintenance").returncode == 1
    metrics = (sandbox.base / "var/metrics/qts.prom").read_text()
    assert 'qts_ops_policy_braked{policy="logs"} 1' in metrics
    assert 'qts_ops_policy_braked{policy="journals"} 0' in metrics
    assert 'qts_ops_policy_last_success_timestamp_seconds{policy="logs",step="clean"}' not in metrics
    assert 'qts_ops_policy_last_success_timestamp_seconds{policy="journals",step="clean"}' in metrics


def test_a_brake_added_while_a_run_is_unfinished_leaves_that_run(sandbox):
    _braked_sandbox(sandbox)
    del sandbox.config["policies"][0]["max_delete"]
    sandbox.write_config()
    assert sandbox.run("scan").returncode == 0
    sandbox.config["policies"][0]["max_delete"] = "25%"
    sandbox.write_config()
    r = sandbox.run("maintenance")
    assert r.returncode == 1 and "max_delete 25%" in r.stderr
    assert len(sandbox.runs()) == 2, "the run scanned without the brake was finished under it"
    assert all((sandbox.data / f"logs/old{i}.log").exists() for i in range(4))


def test_allow_large_delete_lets_one_run_through_and_the_next_is_braked_again(sandbox):
    _braked_sandbox(sandbox)
    r = make(sandbox, "maintenance", "ALLOW_LARGE_DELETE=logs")
    assert r.returncode == 0, r.stderr
    assert not any((sandbox.data / f"logs/old{i}.log").exists() for i in range(4))
    assert _events(sandbox, "brake_released")
    for i in range(4):
        sandbox.file(f"again{i}.log", "old again\n")
    r = sandbox.run("maintenance")
    assert r.returncode == 1 and "max_delete 25%" in r.stderr
    assert all((sandbox.data / f"logs/again{i}.log").exists() for i in range(4))


def test_allow_large_delete_naming_no_policy_is_a_usage_error(sandbox):
    _braked_sandbox(sandbox)
    r = sandbox.run("maintenance", "--allow-large-delete", "logs,tikcs")
    assert r.returncode == 64 and "tikcs" in r.stderr and "logs, journals" in r.stderr
    assert sandbox.runs() == []


def test_plan_shows_where_the_brake_would_stop_a_policy(sandbox):
    _braked_sandbox(sandbox)
    r = sandbox.run("plan")
    assert r.returncode == 0, r.stderr
    assert "BRAKED (max_delete 25%)" in r.stdout
    assert "brake: policy logs would have deleted 4 of its 5 files" in r.stdout
    doc = json.loads(sandbox.run("plan", "--json").stdout)
    logs = next(p for p in doc["policies"] if p["name"] == "logs")
    assert logs["braked"]["limit"] == "25%"


@pytest.mark.parametrize("bad", ["150%", "100%", "lots", -1, "25 %", "9" * 400 + "B"])
def test_a_bad_max_delete_is_refused_naming_the_key(sandbox, bad):
    sandbox.config["policies"][0]["max_delete"] = bad
    sandbox.write_config()
    r = sandbox.run("plan")
    assert r.returncode == 78 and "policies[0].max_delete:" in r.stderr


# --- files held open for writing ------------------------------------------------------------

_HOLDER = """
import os, sys, time
with open("/proc/self/comm", "w") as f:
    f.write("qts-core")
fd = os.open(sys.argv[1], int(sys.argv[2]))
print("open", flush=True)
time.sleep(120)
"""


def _hold(path, flags: int) -> subprocess.Popen:
    """A real process (named qts-core) that holds ``path`` open with ``flags`` and writes nothing."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path), str(flags)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "open\n"
    return proc


@pytest.mark.parametrize("flags", [os.O_WRONLY, os.O_WRONLY | os.O_APPEND, os.O_RDWR])
def test_a_file_open_for_writing_is_kept_naming_the_process(sandbox, flags):
    held = sandbox.file("journal.log", "held open all day\n")
    sandbox.file("other.log", "expired\n")
    reader = sandbox.file("read-only.log", "read only\n")
    holder, only_reading = _hold(held, flags), _hold(reader, os.O_RDONLY)
    try:
        r = sandbox.run("maintenance")
        assert r.returncode == 0, r.stderr
        assert held.exists() and not (sandbox.data / "logs/other.log").exists()
        assert not reader.exists(), "a file open only for reading is no writer's"
        scan = json.loads((sandbox.run_dir() / "scan.ok.json").read_text())
        assert scan["policies"]["logs"]["reasons"]["open"] == 1
        r = sandbox.run("plan", "--json")
        decision = next(
            d for p in json.loads(r.stdout)["policies"] for d in p["decisions"] if d["path"] == "journal.log"
        )
        assert (decision["action"], decision["rule"]) == ("keep", "open")
        assert decision["reason"] == f"open for writing by pid {holder.pid} (qts-core)"
    finally:
        holder.kill()
        only_reading.kill()


# Python's mmap keeps a duplicate of the descriptor; libc's mmap does not, as a C journal's.
_MAPPER = """
import ctypes, mmap, os, sys, time
with open("/proc/self/comm", "w") as f:
    f.write("qts-journal")
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
fd = os.open(sys.argv[1], os.O_RDWR)
addr = libc.mmap(None, os.fstat(fd).st_size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
assert addr not in (None, ctypes.c_void_p(-1).value)
os.close(fd)  # only the mapping is left
print("open", flush=True)
time.sleep(120)
"""


def test_a_file_mapped_shared_and_writable_is_kept(sandbox):
    mapped = sandbox.file("journal.log", "a memory-mapped journal\n")
    sandbox.file("other.log", "expired\n")
    proc = subprocess.Popen([sys.executable, "-c", _MAPPER, str(mapped)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "open\n"
        r = sandbox.run("maintenance")
        assert r.returncode == 0, r.stderr
        assert mapped.exists() and not (sandbox.data / "logs/other.log").exists()
        plan = json.loads(sandbox.run("plan", "--json").stdout)
        reason = next(d["reason"] for p in plan["policies"] for d in p["decisions"] if d["path"] == "journal.log")
        assert reason == f"open for writing by pid {proc.pid} (qts-journal, a shared writable mapping)"
    finally:
        proc.kill()


def test_clean_looks_again_before_unlinking(sandbox):
    held = sandbox.file("journal.log", "opened after the scan\n")
    sandbox.file("other.log", "expired\n")
    for step in ("scan", "backup", "verify"):
        assert sandbox.run(step).returncode == 0
    holder = _hold(held, os.O_WRONLY | os.O_APPEND)
    try:
        r = sandbox.run("clean")
        assert r.returncode == 0, r.stderr
    finally:
        holder.kill()
    assert held.exists() and not (sandbox.data / "logs/other.log").exists()
    kept = [e for e in log_events(sandbox) if e.get("event") == "kept" and e.get("path") == "journal.log"]
    assert kept and kept[0]["reason"] == f"open for writing by pid {holder.pid} (qts-core)"


def test_processes_that_cannot_be_inspected_are_reported(tmp_path):
    """Root reads every /proc/<pid>/fd; an unprivileged user cannot read root's. The sweep
    runs in a child that drops to nobody, beside this root process holding a file open."""
    held = tmp_path / "held"
    with open(held, "w"):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: nobody, sweeping
            os.close(r)
            try:
                os.setgid(65534)
                os.setuid(65534)
                from ops.sys.writers import open_for_writing

                found = open_for_writing()
                os.write(w, json.dumps({"hidden": found.hidden, "files": len(found.files)}).encode())
            finally:
                os._exit(0)
        os.close(w)
        answer = json.loads(os.read(r, 1 << 20))
        os.waitpid(pid, 0)
    assert os.getpid() in answer["hidden"]


# --- the I/O budget -------------------------------------------------------------------------


def _timed_backup(sandbox, **config) -> tuple[float, dict]:
    sandbox.config.update(config)
    sandbox.write_config()
    assert sandbox.run("scan").returncode == 0
    started = time.monotonic()
    r = sandbox.run("backup")
    took = time.monotonic() - started
    assert r.returncode == 0, r.stderr
    return took, json.loads((sandbox.run_dir() / "backup.ok.json").read_text())


def test_io_limit_caps_what_backup_reads_and_writes(sandbox):
    for i in range(3):
        sandbox.file(f"big{i}.log", os.urandom(16 << 20))
    sandbox.config["backup"]["compression"] = "none"
    sandbox.config["pace"] = "full"
    limited, body = _timed_backup(sandbox, io_limit="16MiB/s")
    assert limited >= 2.8, f"48 MiB at 16 MiB/s took {limited:.2f} s"
    assert body["throttled_s"] >= 2.0
    sandbox.run("verify")  # the run finished, so the next scan starts a new one
    sandbox.run("clean")
    for i in range(3):
        sandbox.file(f"again{i}.log", os.urandom(16 << 20))
    del sandbox.config["io_limit"]
    free, body = _timed_backup(sandbox)
    assert free < limited - 1.0 and body["throttled_s"] == 0, f"without io_limit: {free:.2f} s"


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("io_limit", "fast"),
        ("io_limit", "0MiB/s"),
        ("io_limit", "10MiB"),
        ("io_limit", "512KiB/s"),
        ("io_limit", "9" * 400 + "B/s"),
    ],
)
def test_a_bad_rate_is_refused_naming_the_key(sandbox, key, bad):
    sandbox.config[key] = bad
    sandbox.write_config()
    r = sandbox.run("scan")
    assert r.returncode == 78 and f"{key}:" in r.stderr


# --- plan names files wherever its output goes ----------------------------------------------


def test_make_plan_piped_to_a_file_names_the_expired_files(sandbox, tmp_path):
    for i in range(25):
        sandbox.file(f"day{i:02}.log", f"{i}\n")
    out = tmp_path / "plan.txt"
    with open(out, "w") as f:
        r = subprocess.run([*MAKE, "plan", f"CONFIG={sandbox.config_path}"], stdout=f, env={**os.environ, **ENV})
    assert r.returncode == 0
    text = out.read_text()
    named = [line for line in text.splitlines() if line.startswith("logs: would expire ")]
    assert len(named) == 20 and "day00.log (" in text
    assert "logs: … and 5 more (scripts/plan.py --json lists every file)" in text
    r = make(sandbox, "plan", "PLAN_FILES=2")
    assert sum(line.startswith("logs: would expire ") for line in r.stdout.splitlines()) == 2
    assert "… and 23 more" in r.stdout
    assert sandbox.run("plan", "--files", "x").returncode == 64
