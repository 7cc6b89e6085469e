"""Cron manners and the on_failure hook, through scripts/maintenance.py and make as cron runs them.

No TTY (pipes): a success prints nothing (cron sends no mail), VERBOSE=1 prints one summary
line, a failure prints one paragraph on stderr. ``on_failure`` runs only on failure, with the
run's identity in its environment, and neither its exit code nor its hanging (with a
grandchild holding on) can change the result or keep maintenance waiting.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools.sandbox import Sandbox

from ._operator_support import REPO, aged, corrupt, cron_env, maintenance_script, make
from ._support import log_records, run_ok

EXPIRED = {"logs/a.log": b"alpha\n" * 30, "logs/sub/b.log": b"bravo\n" * 20}


def _host(sandbox) -> None:
    for rel, content in EXPIRED.items():
        aged(sandbox, rel.removeprefix("logs/"), content)
    aged(sandbox, "recent.log", b"young\n", age_days=1)


def _log_file(sandbox) -> Path:
    (path,) = sandbox.logs.iterdir()  # one file per month; a test runs within one
    return path


@pytest.fixture(scope="module")
def succeeded(tmp_path_factory):
    """A maintenance that succeeds under cron, with an on_failure hook that leaves a mark."""
    sandbox = Sandbox(tmp_path_factory.mktemp("succeeded"))
    marker = sandbox.base / "hook-ran"
    sandbox.config["on_failure"] = f"touch '{marker}'"
    sandbox.write_config()
    _host(sandbox)
    return sandbox, maintenance_script(sandbox), marker


@pytest.fixture(scope="module")
def failed(tmp_path_factory):
    """A maintenance that resumes a backed-up run whose archive rotted: verify fails (exit 1).
    The on_failure hook writes its whole environment to a file."""
    sandbox = Sandbox(tmp_path_factory.mktemp("failed"))
    env_file = sandbox.base / "hook.env"
    sandbox.config["on_failure"] = f"env > '{env_file}'"
    sandbox.write_config()
    _host(sandbox)
    run_ok(sandbox, "scan")
    run_ok(sandbox, "backup")
    run_id = sandbox.runs()[-1]
    corrupt(sandbox.backups / run_id / "logs.tar.zst")
    data = sandbox.snapshot()
    return sandbox, maintenance_script(sandbox), run_id, data, env_file


def test_successful_maintenance_without_a_tty_prints_nothing(succeeded):
    sandbox, result, _marker = succeeded
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")
    assert set(sandbox.snapshot()) == {"logs/recent.log"}, "the quiet run did its work"


def test_on_failure_hook_does_not_run_on_success(succeeded):
    sandbox, result, marker = succeeded
    assert result.returncode == 0
    assert not marker.exists()
    assert [r for r in log_records(sandbox) if r["event"] == "on_failure"] == []


def test_verbose_maintenance_prints_exactly_one_summary_line(sandbox):
    _host(sandbox)
    result = maintenance_script(sandbox, env={"VERBOSE": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    (run_id,) = sandbox.runs()
    assert lines[0].startswith(f"maintenance run {run_id}:"), lines[0]
    assert "deleted=2" in lines[0] and f"freed_bytes={sum(map(len, EXPIRED.values()))}" in lines[0], lines[0]


def test_failed_maintenance_prints_one_paragraph_with_the_failure_the_log_and_how_to_look_closer(failed):
    sandbox, result, _run_id, data, _env = failed
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    text = result.stderr.strip("\n")
    assert "\n\n" not in text, f"more than one paragraph:\n{result.stderr}"
    lines = text.splitlines()
    assert sum(line.startswith("qts-ops ") for line in lines) == 1, result.stderr
    assert lines[0].startswith("qts-ops verify: verification failed"), lines[0]
    assert "logs.tar.zst" in lines[0] or "local" in lines[0], "names what failed"
    assert "Nothing unverified was deleted." in lines
    assert f"Log: {_log_file(sandbox)}" in lines
    assert any(line.startswith("Look closer:") and "make status" in line for line in lines), result.stderr
    assert sandbox.snapshot() == data, "what the paragraph claims: nothing was deleted"


def test_on_failure_hook_gets_the_run_step_exit_code_and_log(failed):
    sandbox, result, run_id, _data, env_file = failed
    assert result.returncode == 1
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line.startswith("QTS_OPS_"))
    assert env["QTS_OPS_RUN_ID"] == run_id
    assert env["QTS_OPS_STEP"] == "verify"
    assert env["QTS_OPS_EXIT_CODE"] == "1"
    assert env["QTS_OPS_LOG"] == str(_log_file(sandbox))
    assert "QTS_OPS_LOCK_FD" not in env, "the hook must not be handed the chain's lock"


def _failing_scan_config(sandbox, hook: str, timeout: str | None = None) -> None:
    """The policy root is gone (missing_ok: false): scan fails with exit 1, quickly."""
    sandbox.config["policies"][0]["root"] = "data/gone"
    sandbox.config["on_failure"] = hook
    if timeout:
        sandbox.config["on_failure_timeout"] = timeout
    sandbox.write_config()


def test_on_failure_hook_exit_code_never_changes_the_maintenance_exit_code(sandbox):
    marker = sandbox.base / "hook-ran"
    _failing_scan_config(sandbox, f"echo ran > '{marker}'; exit 3")
    result = maintenance_script(sandbox)
    assert result.returncode == 1, result.stderr
    assert marker.read_text() == "ran\n"
    (record,) = [r for r in log_records(sandbox) if r["event"] == "on_failure"]
    assert record["exit_code"] == 3 and record["level"] == "warning"


def _gone_or_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_on_failure_hook_that_hangs_is_killed_with_its_grandchild_after_the_timeout(sandbox):
    pid_file = sandbox.base / "grandchild.pid"
    _failing_scan_config(sandbox, f"sleep 30 & echo $! > '{pid_file}'; sleep 30", timeout="1s")
    started = time.monotonic()
    result = maintenance_script(sandbox, timeout=60)
    elapsed = time.monotonic() - started
    grandchild = int(pid_file.read_text())
    try:
        assert result.returncode == 1, result.stderr
        assert elapsed < 8, f"maintenance waited {elapsed:.1f}s for a hook limited to 1s"
        deadline = time.monotonic() + 3
        while not _gone_or_zombie(grandchild) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone_or_zombie(grandchild), "the hook's grandchild outlived the timeout"
        (record,) = [r for r in log_records(sandbox) if r["event"] == "on_failure"]
        assert record["level"] == "warning" and "killed" in record["msg"], record
    finally:
        if not _gone_or_zombie(grandchild):
            os.kill(grandchild, 9)  # the sleep this test's hook started, by its pid


def test_make_maintenance_from_the_repo_root_prints_nothing_on_success(sandbox):
    _host(sandbox)
    result = make("maintenance", f"CONFIG={sandbox.config_path}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout, result.stderr) == ("", "")
    assert len(sandbox.runs()) == 1
    assert set(sandbox.snapshot()) == {"logs/recent.log"}


def test_maintenance_whose_step_is_killed_prints_one_paragraph_with_the_log_and_calls_the_hook(sandbox):
    env_file = sandbox.base / "hook.env"
    sandbox.config["on_failure"] = f"env > '{env_file}'"
    sandbox.write_config()
    _host(sandbox)
    data = sandbox.snapshot()
    result = maintenance_script(sandbox, env={"QTS_OPS_CRASH_AT": "backup.after_archive"})
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    text = result.stderr.strip("\n")
    assert "\n\n" not in text, result.stderr
    lines = text.splitlines()
    (run_id,) = sandbox.runs()
    assert lines[0] == f"qts-ops maintenance: backup of run {run_id} was killed by signal 9; later steps not run"
    assert "Nothing unverified was deleted." in lines
    assert f"Log: {_log_file(sandbox)}" in lines, "the paragraph must name the log file"
    assert any(line.startswith("Look closer:") and "make status" in line for line in lines), result.stderr
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line.startswith("QTS_OPS_"))
    assert (env["QTS_OPS_RUN_ID"], env["QTS_OPS_STEP"], env["QTS_OPS_EXIT_CODE"]) == (run_id, "backup", "1")
    assert sandbox.snapshot() == data


def test_the_chain_runs_at_low_cpu_and_io_priority(sandbox, tmp_path):
    """Invariant 7: the core comes first. The on_failure hook is a child of the chain, so
    it reports the niceness and I/O class every step inherited."""
    out = tmp_path / "priority"
    sandbox.config["policies"][0]["root"] = "data/missing"  # scan fails: the hook runs
    sandbox.config["on_failure"] = f"cut -d' ' -f19 /proc/$$/stat > {out}; ionice -p $$ >> {out}"
    sandbox.write_config()
    result = sandbox.run("maintenance", env={"QTS_OPS_PRIORITY": "low"})
    assert result.returncode == 1, result.stderr
    nice, io_class = out.read_text().splitlines()
    assert int(nice) >= 10
    assert io_class == "best-effort: prio 7"


@pytest.mark.parametrize("to_group", [True, False], ids=["ctrl-c to the group", "sigint to maintenance only"])
def test_an_interrupt_during_a_step_stops_the_chain_with_no_step_left_behind(sandbox, to_group):
    """Ctrl-C reaches the whole foreground group (the step under way and maintenance); a
    `kill -INT` reaches maintenance alone, which must pass it on. Either way maintenance
    exits 1 promptly, nothing of the chain outlives it (a step left running would still
    hold the lock: the next run would get 75) and nothing is deleted. The step is kept
    busy by an S3 endpoint that accepts connections and never answers."""
    _host(sandbox)
    data = sandbox.snapshot()
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(16)  # connections complete in the backlog; nothing is ever read
        sandbox.config["backup"]["destinations"].append(
            {
                "name": "offsite",
                "type": "s3",
                "bucket": "qts-never",
                "endpoint_url": f"http://127.0.0.1:{blackhole.getsockname()[1]}",
            }
        )
        sandbox.write_config()
        env = cron_env(
            {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
        )
        # Output to files, not pipes: a step left behind must not be waited for through them.
        out, err = sandbox.base / "out", sandbox.base / "err"
        with open(out, "w") as o, open(err, "w") as e:
            proc = subprocess.Popen(
                [sys.executable, str(REPO / "scripts" / "maintenance.py"), "--config", str(sandbox.config_path)],
                stdout=o,
                stderr=e,
                env=env,
                cwd=sandbox.base,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + 60
            while not any(r.get("step") == "backup" and r.get("event") == "start" for r in log_records(sandbox)):
                assert proc.poll() is None and time.monotonic() < deadline, "backup never started"
                time.sleep(0.05)
            time.sleep(0.5)  # into the upload, which waits on the silent endpoint
            if to_group:
                os.killpg(proc.pid, signal.SIGINT)
            else:
                os.kill(proc.pid, signal.SIGINT)
            proc.wait(timeout=30)
            with pytest.raises(ProcessLookupError):  # no step, nor anything else of the chain, still running
                os.killpg(proc.pid, 0)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1, err.read_text()
    assert "interrupted" in err.read_text()
    assert sandbox.snapshot() == data
    result = sandbox.run("scan")  # the lock died with the chain
    assert result.returncode == 0, result.stderr


def _closed(sandbox, redirections: str) -> subprocess.CompletedProcess:
    script = REPO / "scripts" / "maintenance.py"
    return subprocess.run(
        ["sh", "-c", f"exec '{sys.executable}' '{script}' --config '{sandbox.config_path}' {redirections}"],
        env=cron_env(),
        cwd=sandbox.base,
        timeout=120,
    )


def test_maintenance_started_with_stdin_stdout_stderr_closed_runs_the_chain(sandbox):
    """A wrapper may start a cron job with descriptors 0-2 closed: nothing to print to is
    not an error, and the chain must run as usual."""
    _host(sandbox)
    assert _closed(sandbox, "<&- >&- 2>&-").returncode == 0
    assert set(sandbox.snapshot()) == {"logs/recent.log"}
    (run_id,) = sandbox.runs()
    assert (sandbox.run_dir(run_id) / "clean.ok.json").exists()


def test_with_stderr_closed_a_failure_keeps_its_exit_code_and_writes_into_none_of_our_files(sandbox):
    """With descriptor 2 closed, the first file opened would take its number, and the
    error paragraph meant for stderr could land in the lock or the log."""
    _host(sandbox)
    run_ok(sandbox, "scan")
    (run_id,) = sandbox.runs()
    corrupt(sandbox.run_dir(run_id) / "scan.ok.json")  # maintenance resumes the run; backup refuses
    expected = maintenance_script(sandbox)
    assert expected.returncode == 2 and "Look closer:" in expected.stderr
    assert _closed(sandbox, ">&- 2>&-").returncode == expected.returncode
    assert not [p for p in sandbox.base.rglob("*") if p.is_file() and b"Look closer:" in p.read_bytes()]
