"""Shared fixtures: a sandbox with real files, a config, and the real scripts as processes."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
DAY = 86400


class Sandbox:
    """A throw-away QTS host under tmp_path: data roots, a retention.yaml, state/log/backups."""

    def __init__(self, base: Path):
        self.base = base
        self.data = base / "data"
        self.config_path = base / "retention.yaml"
        self.state = base / "var" / "state"
        self.logs = base / "var" / "log"
        self.backups = base / "var" / "backups"
        self.config = {
            "version": 1,
            "state_dir": "var/state",
            "log_dir": "var/log",
            "backup": {"compression": "zstd", "require_verified_copies": 1,
                       "destinations": [{"name": "local", "type": "local", "path": "var/backups"}]},
            "policies": [{"name": "logs", "root": "data/logs", "include": ["**/*.log"], "older_than": "30d",
                          "settle": "10m", "keep_last": 0, "missing_ok": False}],
        }
        (self.data / "logs").mkdir(parents=True)
        self.write_config()

    def write_config(self, config: dict | None = None) -> Path:
        if config is not None:
            self.config = config
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        return self.config_path

    def file(self, rel: str, content: bytes | str = b"x", age_days: float = 40, root: str = "logs") -> Path:
        """A data file under data/<root>/ with its mtime ``age_days`` in the past."""
        path = self.data / root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        when = time.time() - age_days * DAY
        os.utime(path, (when, when))
        return path

    def run(self, script: str, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run scripts/<script>.py with this sandbox's config, as cron would (no TTY)."""
        cmd = [sys.executable, str(SCRIPTS / f"{script}.py"), "--config", str(self.config_path), *args]
        full_env = {**os.environ, "QTS_OPS_PRIORITY": "normal", **(env or {})}
        full_env.pop("QTS_OPS_LOCK_FD", None)
        return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout, cwd=self.base)

    def runs(self) -> list[str]:
        d = self.state / "runs"
        return sorted(os.listdir(d)) if d.exists() else []

    def run_dir(self, run_id: str | None = None) -> Path:
        return self.state / "runs" / (run_id or self.runs()[-1])

    def snapshot(self) -> dict[str, bytes]:
        """Every regular file under data/ with its content: the oracle for "nothing lost"."""
        out = {}
        for dirpath, _dirs, files in os.walk(self.data):
            for name in files:
                p = Path(dirpath) / name
                if p.is_file() and not p.is_symlink():
                    out[str(p.relative_to(self.data))] = p.read_bytes()
        return out


@pytest.fixture
def sandbox(tmp_path) -> Sandbox:
    return Sandbox(tmp_path)
