"""A destination that fails while the others still meet the quorum: the run succeeds (exit 0)
and, under cron (no TTY), says so in one line on stderr, so cron mails it; the metrics
count the failure per destination and keep each one's last success."""

import pytest

from ._operator_support import METRICS_FILE, aged, maintenance_script, read_metrics, sample

EXPIRED = {"a.log": b"alpha\n" * 30, "sub/b.log": b"bravo\n" * 20}


@pytest.fixture
def second_is_a_file(sandbox):
    """Quorum 1 over two local destinations; the second's path is a regular file (a mount
    point whose disk was never mounted, then written over)."""
    (sandbox.base / "mnt").mkdir()
    (sandbox.base / "mnt" / "second").touch()
    sandbox.config["backup"]["destinations"].append({"name": "second", "type": "local", "path": "mnt/second"})
    sandbox.config["metrics_file"] = METRICS_FILE
    sandbox.write_config()
    for rel, content in EXPIRED.items():
        aged(sandbox, rel, content)
    return sandbox


def _warning_line(sandbox, result) -> str:
    """The one line a run that succeeded without a destination prints under cron."""
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line under cron:\n{result.stderr}"
    line = lines[0]
    assert line.startswith("qts-ops warning: backup of run "), line
    assert "second: NotADirectoryError" in line and str(sandbox.base / "mnt" / "second") in line, line
    return line


def test_a_failed_destination_under_a_met_quorum_prints_one_line_and_is_counted(second_is_a_file):
    sandbox = second_is_a_file
    first = maintenance_script(sandbox)
    line = _warning_line(sandbox, first)
    assert "the run is on local only" in line and "make status" in line, line
    assert sandbox.snapshot() == {}, "the quorum of one was met: the files went"
    metrics = read_metrics(sandbox.base / METRICS_FILE)
    assert sample(metrics, "qts_ops_destination_failures_total", destination="second") == 1
    assert sample(metrics, "qts_ops_destination_failures_total", destination="local") == 0
    assert sample(metrics, "qts_ops_destination_last_success_timestamp_seconds", destination="local") is not None
    assert sample(metrics, "qts_ops_destination_last_success_timestamp_seconds", destination="second") is None

    # A quiet night with nothing to archive still asks every destination, and still says so.
    again = maintenance_script(sandbox)
    assert "the run had nothing to archive" in _warning_line(sandbox, again)
    metrics = read_metrics(sandbox.base / METRICS_FILE)
    assert sample(metrics, "qts_ops_destination_failures_total", destination="second") == 2
    assert len(sandbox.runs()) == 2
    assert "second" in sandbox.run_dir().joinpath("backup.ok.json").read_text(), "status must see it too"

    # Mounted back: silent again, and its last success is recorded.
    (sandbox.base / "mnt" / "second").unlink()
    (sandbox.base / "mnt" / "second").mkdir()
    healed = maintenance_script(sandbox)
    assert (healed.returncode, healed.stdout, healed.stderr) == (0, "", "")
    metrics = read_metrics(sandbox.base / METRICS_FILE)
    assert sample(metrics, "qts_ops_destination_failures_total", destination="second") == 2
    assert sample(metrics, "qts_ops_destination_last_success_timestamp_seconds", destination="second") is not None
