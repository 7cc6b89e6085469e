"""Files the toolkit's user cannot delete (a directory it may read but not write): kept at
scan and never archived night after night, and reported by status and the metrics, as
are clean's own failed unlinks. The scripts run as uid nobody: root's writes ignore modes."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tools.sandbox import SCRIPTS, Sandbox

from ._operator_support import METRICS_FILE, aged, read_metrics, sample
from ._support import archive_members

NOBODY = 65534


@pytest.fixture
def host():
    """A sandbox owned by nobody, with metrics, in a directory nobody can reach (pytest's
    own temporary directories are private to root)."""
    base = Path(tempfile.mkdtemp(prefix="qts-ops-undeletable-"))
    try:
        os.chmod(base, 0o755)
        sandbox = Sandbox(base)
        sandbox.config["metrics_file"] = METRICS_FILE
        sandbox.write_config()
        yield sandbox
    finally:
        shutil.rmtree(base)


def _give_to_nobody(path: Path) -> None:
    for dirpath, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(dirpath, name), NOBODY, NOBODY)
    os.chown(path, NOBODY, NOBODY)


def _drop_to_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def as_nobody(sandbox, script: str, *args: str) -> subprocess.CompletedProcess:
    """scripts/<script>.py as cron would run it under an unprivileged account."""
    env = dict(os.environ, QTS_OPS_PRIORITY="normal", HOME="/nonexistent")
    env.pop("QTS_OPS_LOCK_FD", None)
    env.pop("VERBOSE", None)
    return subprocess.run(
        [sys.executable, str(SCRIPTS / f"{script}.py"), "--config", str(sandbox.config_path), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        timeout=120,
        preexec_fn=_drop_to_nobody,
    )


def ok_as_nobody(sandbox, script: str, *args: str) -> subprocess.CompletedProcess:
    result = as_nobody(sandbox, script, *args)
    assert result.returncode == 0, f"{script} exited {result.returncode}: {result.stderr}"
    return result


def _archived(sandbox) -> list[bytes]:
    """Every member of every archive on the destination, over all runs."""
    return [m for archive in sorted(sandbox.backups.glob("*/*.tar*")) for m in archive_members(archive)]


def _problems(sandbox) -> list[str]:
    return json.loads(ok_as_nobody(sandbox, "status", "--json").stdout)["problems"]


def _gauge(sandbox, step: str) -> float | None:
    return sample(read_metrics(sandbox.base / METRICS_FILE), "qts_ops_undeletable_files", step=step, policy="logs")


def test_a_file_its_user_cannot_delete_is_kept_at_scan_never_archived_and_reported(host):
    aged(host, "open/a.log", b"deletable\n")
    locked = aged(host, "locked/b.log", b"in a directory nobody may not write\n")
    _give_to_nobody(host.base)
    os.chown(locked.parent, 0, 0)  # readable and searchable by nobody, not writable
    os.chmod(locked.parent, 0o755)

    for night in (1, 2):
        ok_as_nobody(host, "maintenance")
        aged(host, f"open/night-{night}.log", b"expired since\n")
        _give_to_nobody(host.data / "logs" / "open")

    assert locked.read_bytes() == b"in a directory nobody may not write\n"
    assert sorted(_archived(host)) == [b"open/a.log", b"open/night-1.log"], "the kept file was archived"
    for run_id in host.runs():
        scan = json.loads((host.run_dir(run_id) / "scan.ok.json").read_text())["policies"]["logs"]
        assert scan["reasons"].get("undeletable") == 1, scan
    plan = json.loads(ok_as_nobody(host, "plan", "--json").stdout)
    (decision,) = [d for d in plan["policies"][0]["decisions"] if d["path"] == "locked/b.log"]
    assert (decision["action"], decision["rule"]) == ("keep", "undeletable"), decision
    assert str(locked.parent) in decision["reason"] and "nobody" in decision["reason"], decision
    (problem,) = [p for p in _problems(host) if "cannot delete" in p]
    assert problem.startswith(f"run {host.runs()[-1]}: policy logs: 1 expired file that"), problem
    assert _gauge(host, "scan") == 1

    os.chown(locked.parent, NOBODY, NOBODY)  # the operator fixes the directory
    ok_as_nobody(host, "maintenance")
    assert not locked.exists()
    assert not [p for p in _problems(host) if "cannot delete" in p]
    assert _gauge(host, "scan") == 0


def test_a_failed_unlink_in_clean_is_a_problem_and_counted_then_kept_at_the_next_scan(host):
    aged(host, "d/x.log", b"verified, then its directory changed hands\n")
    _give_to_nobody(host.base)
    for step in ("scan", "backup", "verify"):
        ok_as_nobody(host, step)
    directory = host.data / "logs" / "d"
    os.chown(directory, 0, 0)
    os.chmod(directory, 0o755)

    clean = ok_as_nobody(host, "clean")  # a kept file is no failure of the step

    assert clean.stderr == ""
    assert (directory / "x.log").exists()
    (problem,) = [p for p in _problems(host) if "could not delete" in p]
    assert problem.startswith(f"run {host.runs()[-1]}: policy logs: clean could not delete 1 verified file"), problem
    assert "d/x.log: unlink failed: Permission denied" in problem, problem
    assert _gauge(host, "clean") == 1

    ok_as_nobody(host, "maintenance")  # the next night: kept at scan, not archived a second time
    assert _archived(host) == [b"d/x.log"]
    assert _gauge(host, "scan") == 1
    assert (directory / "x.log").exists()
