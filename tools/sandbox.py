"""A throw-away QTS host and the real scripts run in it, shared by the fault campaign and
the tests: the ``Sandbox`` (data roots, a retention.yaml, state/log/backups under one
directory), the chain started as processes and killed whole, and what a run left behind
(the log, the lock, the published runs, an archive's members), read with standard tools
(GNU tar) or plain files rather than with ops' own code.

Nothing here imports ops or pytest: ``make chaos`` uses it outside the test suite.
"""

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
DAY = 86400
RUN_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{4}$")  # as ops.state.manifest.RUN_ID_RE; ops is not imported here


class Sandbox:
    """A throw-away QTS host under ``base``: data roots, a retention.yaml, state/log/backups."""

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
            "backup": {
                "compression": "zstd",
                "require_verified_copies": 1,
                "destinations": [{"name": "local", "type": "local", "path": "var/backups"}],
            },
            "policies": [
                {
                    "name": "logs",
                    "root": "data/logs",
                    "include": ["**/*.log"],
                    "older_than": "30d",
                    "settle": "10m",
                    "keep_last": 0,
                    "missing_ok": False,
                }
            ],
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

    def run(
        self, script: str, *args: str, env: dict | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        """Run scripts/<script>.py with this sandbox's config, as cron would (no TTY)."""
        cmd = [sys.executable, str(SCRIPTS / f"{script}.py"), "--config", str(self.config_path), *args]
        full_env = {**os.environ, "QTS_OPS_PRIORITY": "normal", **(env or {})}
        full_env.pop("QTS_OPS_LOCK_FD", None)
        return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout, cwd=self.base)

    def runs(self) -> list[str]:
        """The run ids in the state (not what else is there: a compaction's leftovers)."""
        d = self.state / "runs"
        return sorted(n for n in os.listdir(d) if RUN_ID.match(n)) if d.exists() else []

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


def add_policy(sandbox: Sandbox, name: str, root: str, include: list[str], older_than: str = "30d") -> None:
    """A second policy in the sandbox's config, with its root created."""
    (sandbox.data / root).mkdir(parents=True, exist_ok=True)
    sandbox.config["policies"].append(
        {
            "name": name,
            "root": f"data/{root}",
            "include": include,
            "older_than": older_than,
            "settle": "10m",
            "keep_last": 0,
            "missing_ok": False,
        }
    )
    sandbox.write_config()


# -- the chain as processes ------------------------------------------------------------------


def popen(sandbox: Sandbox, script: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    """sandbox.run, but not waited for, in its own session so the whole chain can be killed."""
    cmd = [sys.executable, str(SCRIPTS / f"{script}.py"), "--config", str(sandbox.config_path), *args]
    full_env = dict(os.environ, QTS_OPS_PRIORITY="normal", **(env or {}))
    full_env.pop("QTS_OPS_LOCK_FD", None)
    return subprocess.Popen(
        cmd,
        env=full_env,
        cwd=sandbox.base,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, pgrp, ...), or
    None once the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()


def alive(pid: int) -> bool:
    """Running or stopped, not a zombie waiting to be reaped."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def _live_pids_where(field: int, value: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(entry)
            if fields is not None and int(fields[field]) == value and fields[0] != "Z":
                pids.append(int(entry))
    return pids


def group_pids(pgid: int) -> list[int]:
    """Every live process of a process group, read from /proc."""
    return _live_pids_where(2, pgid)


def children_of(pid: int) -> set[int]:
    """Every live child process of ``pid``, read from /proc."""
    return set(_live_pids_where(1, pid))


def kill_chain(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGKILL the chain and every step it started; return once none of them is alive."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout)
    deadline = time.monotonic() + timeout
    while group_pids(proc.pid):
        assert time.monotonic() < deadline, f"processes of the killed chain still alive: {group_pids(proc.pid)}"
        time.sleep(0.005)


# -- what a run left behind ------------------------------------------------------------------


def lock_is_free(state_dir: Path, within: float = 0.0) -> bool:
    """Whether nobody holds the toolkit's flock, or nobody does any more ``within`` seconds
    from now (only call when no chain may be starting)."""
    path = Path(state_dir) / "lock"
    if not path.exists():
        return True
    deadline = time.monotonic() + within
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.01)
    finally:
        os.close(fd)


def log_events(sandbox: Sandbox) -> list[dict]:
    events = []
    for path in sorted(sandbox.logs.glob("*.log")):
        for line in path.read_bytes().splitlines():
            events.append(json.loads(line))
    return events


def published_runs(backups: Path) -> list[str]:
    return sorted(os.listdir(backups)) if backups.exists() else []


def tar_members(archive: Path) -> list[str]:
    out = subprocess.run(["tar", "--zstd", "-tf", str(archive)], capture_output=True, check=True)
    return [os.fsdecode(line) for line in out.stdout.split(b"\n") if line]
