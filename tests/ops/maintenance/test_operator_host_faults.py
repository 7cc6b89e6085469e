"""What the host refuses, met by the real scripts: the state on a read-only mount, the state
owned by root while the scripts run as another user. Each is the one-paragraph failure
(the path, what to do), exit 1, never a traceback; maintenance calls on_failure and the
metrics count it. A genuine bug keeps its traceback, in the log rather than on the terminal.
"""

import contextlib
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from tools.sandbox import Sandbox

from ._operator_support import REPO, aged, cron_env, maintenance_script, read_metrics, sample
from ._support import log_records, run_ok

NOBODY = 65534


@contextlib.contextmanager
def read_only_mount(where: Path):
    """``where`` bound onto itself read-only: a real EROFS for every write beneath it."""
    for args in (["--bind", str(where), str(where)], ["-o", "remount,ro,bind", str(where)]):
        got = subprocess.run(["mount", *args], capture_output=True, text=True)
        if got.returncode:
            subprocess.run(["umount", str(where)], capture_output=True)
            raise AssertionError(f"mount {' '.join(args)}: {got.stderr}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def _hook_env(path: Path) -> dict:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line.startswith("QTS_OPS_"))


def _one_paragraph(stderr: str, script: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    text = stderr.strip("\n")
    assert "\n\n" not in text, f"more than one paragraph:\n{stderr}"
    lines = text.splitlines()
    assert lines[0].startswith(f"qts-ops {script}: "), stderr
    assert any(line.startswith("Look closer:") for line in lines), stderr
    return lines


@pytest.fixture
def read_only_state(sandbox):
    """A host whose state_dir sits on a mount that went read-only after a scan, with
    metrics and an on_failure hook that records its environment."""
    (sandbox.base / "ro").mkdir()
    sandbox.config.update(
        state_dir="ro/state", metrics_file="var/metrics/qts.prom", on_failure=f"env > '{sandbox.base / 'hook.env'}'"
    )
    sandbox.write_config()
    sandbox.state = sandbox.base / "ro" / "state"
    aged(sandbox, "a.log", b"alpha\n" * 10)
    run_ok(sandbox, "scan")
    with read_only_mount(sandbox.base / "ro"):
        yield sandbox


def test_maintenance_on_a_read_only_state_fails_in_one_paragraph_calls_the_hook_and_counts_it(read_only_state):
    sandbox = read_only_state
    data = sandbox.snapshot()
    result = maintenance_script(sandbox)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    lines = _one_paragraph(result.stderr, "maintenance")
    lock = sandbox.state / "lock"  # the first thing the chain writes
    assert lines[0] == f"qts-ops maintenance: Read-only file system: {lock}", lines[0]
    assert lines[1].startswith(f"the file system holding {lock} is read-only: remount it read-write"), lines[1]
    assert "Nothing unverified was deleted." in lines
    env = _hook_env(sandbox.base / "hook.env")
    assert (env["QTS_OPS_STEP"], env["QTS_OPS_EXIT_CODE"]) == ("maintenance", "1")
    assert [r["event"] for r in log_records(sandbox) if r["step"] == "maintenance"] == ["error", "on_failure"]
    metrics = read_metrics(sandbox.base / "var" / "metrics" / "qts.prom")
    assert sample(metrics, "qts_ops_step_runs_total", step="maintenance", result="failed") == 1
    assert sample(metrics, "qts_ops_step_last_failure_timestamp_seconds", step="maintenance") is not None
    assert sandbox.snapshot() == data


@pytest.mark.parametrize("step", ["scan", "backup", "verify", "clean"])
def test_each_step_on_a_read_only_state_fails_in_one_paragraph_and_counts_it(read_only_state, step):
    sandbox = read_only_state
    data = sandbox.snapshot()
    args = ["--run", sandbox.runs()[-1]] if step != "scan" else []
    result = sandbox.run(step, *args)
    assert result.returncode == 1, result.stderr
    lines = _one_paragraph(result.stderr, step)
    assert lines[0].startswith(f"qts-ops {step}: Read-only file system: {sandbox.state}/"), lines[0]
    assert "remount it read-write" in lines[1], lines
    # The counters live in the read-only state; the textfile still shows this failure.
    metrics = read_metrics(sandbox.base / "var" / "metrics" / "qts.prom")
    assert sample(metrics, "qts_ops_step_runs_total", step=step, result="failed") == 1
    assert sandbox.snapshot() == data


@pytest.fixture
def root_owned_host():
    """A host where root ran maintenance (state and logs 0700, root's), in a directory any
    user can reach, so that another user's run meets the state's permissions and nothing else."""
    base = Path(tempfile.mkdtemp(prefix="qts-ops-owned-", dir="/tmp"))
    try:
        base.chmod(0o755)
        sandbox = Sandbox(base)
        hooks = base / "hooks"
        hooks.mkdir(mode=0o777)
        hooks.chmod(0o777)
        sandbox.config.update(metrics_file="var/metrics/qts.prom", on_failure=f"env > '{hooks / 'env'}'")
        sandbox.write_config()
        sandbox.config_path.chmod(0o644)
        old = aged(sandbox, "old.log", b"old\n" * 10)
        aged(sandbox, "recent.log", b"young\n", age_days=1)
        result = maintenance_script(sandbox)
        assert result.returncode == 0, result.stderr
        assert not old.exists()
        assert (sandbox.state.stat().st_mode & 0o777) == 0o700
        yield sandbox, old, hooks / "env"
    finally:
        shutil.rmtree(base)


def _as_nobody(sandbox, script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / f"{script}.py"), "--config", str(sandbox.config_path), *args],
        capture_output=True,
        text=True,
        env=cron_env(),
        cwd=sandbox.base,
        timeout=60,
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
    )


@pytest.mark.parametrize(
    "script, args",
    [
        ("maintenance", ()),
        ("scan", ()),
        ("status", ()),
        ("plan", ()),
        ("restore", ("--file", "{old}")),
    ],
)
def test_another_user_on_roots_state_gets_one_paragraph_naming_the_path(root_owned_host, script, args):
    sandbox, old, hook_env = root_owned_host
    before = sandbox.snapshot()
    result = _as_nobody(sandbox, script, *(a.format(old=old) for a in args))
    assert result.returncode == 1, result.stderr
    lines = _one_paragraph(result.stderr, script)
    assert lines[0].startswith(f"qts-ops {script}: Permission denied: {sandbox.state}"), lines[0]
    assert f"this user (uid {NOBODY}) may not use {sandbox.state}" in lines[1], lines[1]
    assert "belongs to uid 0" in lines[1] and "run as the user that owns" in lines[1], lines[1]
    assert sandbox.snapshot() == before and not old.exists()
    if script == "maintenance":
        env = _hook_env(hook_env)
        assert (env["QTS_OPS_STEP"], env["QTS_OPS_EXIT_CODE"], env["QTS_OPS_LOG"]) == ("maintenance", "1", "")
    else:
        assert not hook_env.exists(), "on_failure belongs to the chain cron runs"


def test_a_bug_keeps_its_traceback_in_the_log_and_the_terminal_gets_one_paragraph(sandbox):
    """An exception no code expected, raised under the scripts' shared shell."""
    script = sandbox.base / "buggy.py"
    script.write_text(
        textwrap.dedent(f"""\
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from ops import cli

        def action(args, config, ui):
            return {{}}["no such key"]

        cli.run(name="buggy", p=cli.parser("buggy", "", run=False), action=action)
        """)
    )
    result = subprocess.run(
        [sys.executable, str(script), "--config", str(sandbox.config_path)],
        capture_output=True,
        text=True,
        env=cron_env(),
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    lines = _one_paragraph(result.stderr, "buggy")
    assert lines[0] == "qts-ops buggy: unexpected error: KeyError: 'no such key'", lines[0]
    (log_file,) = sandbox.logs.iterdir()
    assert f"Log: {log_file}" in lines
    (record,) = [r for r in log_records(sandbox) if r["event"] == "traceback"]
    assert record["msg"].startswith("Traceback") and "KeyError: 'no such key'" in record["msg"]
