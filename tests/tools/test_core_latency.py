"""The stand-in core: its percentiles are values it measured, and it leaves nothing behind."""

import os
import subprocess
import sys

from tools.core_latency import percentile, run
from tools.sandbox import SCRIPTS


def test_percentiles_are_nearest_rank_values_that_were_measured():
    values = [float(i) for i in range(1, 1001)]
    assert [percentile(values, q) for q in (0.5, 0.99, 0.999, 1.0)] == [500.0, 990.0, 999.0, 1000.0]
    assert percentile([3.0], 0.99) == 3.0


def test_a_short_run_appends_on_its_grid_and_removes_its_journal(tmp_path):
    got = run(str(tmp_path), 0.2, 0.005, 512)
    assert got["expected"] == 40 and 30 <= got["writes"] <= 41
    assert 0 < got["p50_ms"] <= got["p99_ms"] <= got["p999_ms"] <= got["max_ms"]
    assert os.listdir(tmp_path) == []


def test_the_script_runs_with_nothing_but_the_standard_library(tmp_path):
    """As on a trading host: the system's python, not .venv's, and no repository packages
    beyond tools/ itself."""
    r = subprocess.run(
        [
            "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable,
            str(SCRIPTS / "core_latency.py"),
            "--dir",
            str(tmp_path),
            "--seconds",
            "0.1",
        ],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", "")},
    )
    assert r.returncode == 0, r.stderr
    assert "appends in" in r.stdout and os.listdir(tmp_path) == []
