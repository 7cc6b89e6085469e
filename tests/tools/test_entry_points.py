"""scripts/bench.py, scripts/chaos.py and scripts/powercut.py are thin entry points into tools/: each must find
the package on its own, from any working directory, as make and an operator run them."""

import os
import subprocess
import sys

import pytest

from tools.chaos.trials import KINDS
from tools.sandbox import SCRIPTS


@pytest.mark.parametrize(
    "script, says",
    [
        ("bench", ["usage: scripts/bench.py", "--quick", "BENCH_SCALE=small"]),
        ("chaos", ["usage: scripts/chaos.py", "--seed", *KINDS]),
        ("powercut", ["usage: scripts/powercut.py", "--seed", "--trials", "fsync of a file"]),
    ],
)
def test_the_entry_point_starts_without_the_repository_on_the_path(script, says, tmp_path):
    # No PYTHONPATH (pytest-xdist puts the repository there): only the script's own bootstrap may find tools.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    got = subprocess.run(
        [sys.executable, str(SCRIPTS / f"{script}.py"), "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert got.returncode == 0, got.stderr
    for text in says:
        assert text in got.stdout


@pytest.mark.parametrize(
    "args, says",
    [
        (["--trials", "0"], "--trials: must be 1 or more, not 0"),
        (["--trials", "-3"], "--trials: must be 1 or more, not -3"),
        (["--workers", "0"], "--workers: must be 1 or more, not 0"),
        (["--trial", "800"], "--trial 800: the trials are numbered 0 to 799 (raise --trials)"),
        (["--trials", "5", "--trial", "-1"], "--trial -1: the trials are numbered 0 to 4"),
    ],
)
def test_a_power_cut_campaign_that_would_prove_nothing_is_refused(args, says):
    """No trial run is no proof: an empty campaign, or one trial outside the campaign the
    reproduce line names, is a usage error (2), not a pass."""
    got = subprocess.run(
        [sys.executable, str(SCRIPTS / "powercut.py"), *args], capture_output=True, text=True, timeout=60
    )
    assert got.returncode == 2 and says in got.stderr, got.stderr
