"""The stand-in core: its percentiles are values it measured, and it leaves nothing behind."""

import os
import shutil
import subprocess
import sys
import time
import types

from tools import core_latency
from tools.core_latency import percentile, run
from tools.sandbox import REPO, SCRIPTS


def test_percentiles_are_nearest_rank_values_that_were_measured():
    values = [float(i) for i in range(1, 1001)]
    assert [percentile(values, q) for q in (0.5, 0.99, 0.999, 1.0)] == [500.0, 990.0, 999.0, 1000.0]
    assert percentile([3.0], 0.99) == 3.0


def test_a_short_run_appends_on_its_grid_and_removes_its_journal(tmp_path):
    got = run(str(tmp_path), 0.2, 0.005, 512)
    # On its grid: never more appends than ticks (counted over the time it really ran, which
    # a loaded machine stretches a little). It may manage fewer.
    assert 40 <= got["expected"] <= 45 and 1 <= got["writes"] <= got["expected"] + 1
    assert 0 < got["p50_ms"] <= got["p99_ms"] <= got["p999_ms"] <= got["max_ms"]
    assert os.listdir(tmp_path) == []


def test_a_deadline_passed_before_the_next_tick_ends_the_run_without_a_negative_sleep(tmp_path, monkeypatch):
    """The clock is scripted (a real one cannot be made to land here on demand): the second
    append ends past the deadline but before its next tick, which once asked for a negative
    sleep and crashed."""
    ticks = iter([0.0, 0.0, 0.0, 0.001, 0.002, 0.009, 0.009, 0.0095, 0.011, 0.02, 0.02])
    slept: list[float] = []
    fake = types.SimpleNamespace(monotonic=lambda: next(ticks), sleep=slept.append)
    monkeypatch.setattr(core_latency, "time", fake)
    got = core_latency.run(str(tmp_path), 0.01, 0.008, 64)
    assert got["writes"] == 2 and all(s >= 0 for s in slept)
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


def _script(*args, cwd=None):
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "core_latency.py"), *args], capture_output=True, text=True, cwd=cwd
    )


def test_odd_arguments_are_refused_before_anything_is_measured(tmp_path):
    for bad in ("0", "-1", "nan", "inf"):
        r = _script("--dir", str(tmp_path), "--seconds", bad)
        assert r.returncode == 2 and "--seconds must be positive" in r.stderr, (bad, r.stderr)
    r = _script("--dir", str(tmp_path), "--interval", "nan", "--seconds", "1")
    assert r.returncode == 2 and "must be positive" in r.stderr
    for where in (tmp_path / "absent", tmp_path / "afile"):
        (tmp_path / "afile").write_text("")
        r = _script("--dir", str(where), "--seconds", "0.1")
        assert r.returncode == 1 and "Traceback" not in r.stderr and str(where) in r.stderr, r.stderr
    started = time.monotonic()
    r = _script("--dir", str(tmp_path), "--seconds", "30", "--json", str(tmp_path / "absent" / "out.json"))
    assert r.returncode == 1 and "out.json" in r.stderr and time.monotonic() - started < 10  # before measuring


def test_sigterm_ends_it_at_once_even_mid_interval(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "core_latency.py"), "--dir", str(tmp_path), "--interval", "60000"],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0 and out.startswith("1 of "), out
    assert os.listdir(tmp_path) == []


def test_the_module_alone_runs_on_a_host_without_the_toolkit(tmp_path):
    alone = tmp_path / "core_latency.py"
    shutil.copy(REPO / "tools" / "core_latency.py", alone)
    r = subprocess.run(
        [sys.executable, str(alone), "--dir", str(tmp_path), "--seconds", "0.1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 0 and "appends in" in r.stdout, r.stderr
