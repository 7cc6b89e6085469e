"""What the operator-feature tests share: aged files with whole-second mtimes, a second
policy, the metrics textfile read back with prometheus_client's own parser, the lock held
from the test, and make run from the repository root as cron runs it."""

import contextlib
import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from ops.config import load_config
from ops.logs.steplog import StepLog
from ops.maintenance.cleanup.compaction import compact_finished_runs
from tools.sandbox import REPO

METRICS_FILE = "var/metrics/qts.prom"  # relative to the sandbox's config, like every other path


def compact_years_later(sandbox) -> int:
    """Compaction run in this process as if ten years had passed: how many runs it packed."""
    config = load_config(sandbox.config_path)
    log = StepLog(config.log_dir, "test")
    try:
        return compact_finished_runs(config, log, now=time.time() + 10 * 365 * 86400)
    finally:
        log.close()


def aged(sandbox, rel: str, content: bytes, age_days: float = 40, root: str = "logs") -> Path:
    """A data file whose mtime is a whole second (tar keeps seconds), ``age_days`` old."""
    path = sandbox.file(rel, content, age_days=age_days, root=root)
    when = int(path.stat().st_mtime)
    os.utime(path, (when, when))
    return path


def add_dumps_policy(sandbox) -> None:
    (sandbox.data / "dumps").mkdir(exist_ok=True)
    sandbox.config["policies"].append(
        {
            "name": "dumps",
            "root": "data/dumps",
            "include": ["**/*.dump"],
            "older_than": "30d",
            "settle": "10m",
            "keep_last": 0,
            "missing_ok": False,
        }
    )
    sandbox.write_config()


def read_metrics(path: Path) -> dict[tuple[str, frozenset], float]:
    """Every sample of the textfile as {(sample name, labels): value}, via the real parser."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(Path(path).read_text())
        for s in family.samples
    }


def sample(metrics: dict, name: str, **labels) -> float | None:
    return metrics.get((name, frozenset(labels.items())))


@contextlib.contextmanager
def holding_lock(sandbox):
    """Hold the toolkit's flock from the test process, as a long-running chain would."""
    sandbox.state.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(sandbox.state / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


def corrupt(path: Path) -> None:
    """Flip one byte in the middle of a file (an archive rotting on its destination)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def cron_env(extra: dict | None = None) -> dict:
    """The environment of a crontab line: no VERBOSE, no inherited lock, no outer make."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VERBOSE", "QTS_OPS_LOCK_FD", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")
    }
    env.update(QTS_OPS_PRIORITY="normal", **(extra or {}))
    return env


def make(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``make -s <args>`` from the repository root, no TTY, as the README's crontab line runs it."""
    return subprocess.run(
        ["make", "-s", *args], cwd=REPO, capture_output=True, text=True, env=cron_env(env), timeout=timeout
    )


def maintenance_script(sandbox, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """scripts/maintenance.py exactly as cron calls it (sandbox.run, minus any VERBOSE of ours)."""
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "maintenance.py"), "--config", str(sandbox.config_path)],
        capture_output=True,
        text=True,
        env=cron_env(env),
        timeout=timeout,
        cwd=sandbox.base,
    )
