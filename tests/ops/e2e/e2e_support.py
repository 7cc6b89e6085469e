"""The oracle the fault tests share: what a run left on the destination, in the log and on
the lock, judged with standard tools (GNU tar, sha256sum) rather than with ops' own code."""

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[3] / "scripts"
ARCHIVE_SUFFIX = ".tar.zst"


def add_policy(sandbox, name: str, root: str, include: list[str], older_than: str = "30d") -> None:
    """A second policy in the sandbox's config, with its root created."""
    (sandbox.data / root).mkdir(parents=True, exist_ok=True)
    sandbox.config["policies"].append({
        "name": name, "root": f"data/{root}", "include": include, "older_than": older_than,
        "settle": "10m", "keep_last": 0, "missing_ok": False,
    })
    sandbox.write_config()


def popen(sandbox, script: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    """sandbox.run, but not waited for, in its own session so the whole chain can be killed."""
    cmd = [sys.executable, str(SCRIPTS / f"{script}.py"), "--config", str(sandbox.config_path), *args]
    full_env = dict(os.environ, QTS_OPS_PRIORITY="normal", **(env or {}))
    full_env.pop("QTS_OPS_LOCK_FD", None)
    return subprocess.Popen(cmd, env=full_env, cwd=sandbox.base, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


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


def write_pid(marker) -> None:
    """Record this process's pid in ``marker`` whole: written aside and renamed in, so a test
    that waits for the marker to exist never reads it empty."""
    aside = f"{marker}.{os.getpid()}.tmp"
    Path(aside).write_text(str(os.getpid()))
    os.rename(aside, marker)


def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def kill_chain(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGKILL the chain and every step it started; return once none of them is alive."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout)
    deadline = time.monotonic() + timeout
    while group_pids(proc.pid):
        assert time.monotonic() < deadline, f"processes of the killed chain still alive: {group_pids(proc.pid)}"
        time.sleep(0.005)


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


def log_events(sandbox) -> list[dict]:
    events = []
    for path in sorted(sandbox.logs.glob("*.log")):
        for line in path.read_bytes().splitlines():
            events.append(json.loads(line))
    return events


def deleted_counts(sandbox) -> dict[tuple[str, str], int]:
    """How many "deleted" events each (policy, path) has in the whole log."""
    counts: dict[tuple[str, str], int] = {}
    for e in log_events(sandbox):
        if e["event"] == "deleted":
            key = (e["policy"], e["path"])
            counts[key] = counts.get(key, 0) + 1
    return counts


def events_for(sandbox, path: str, event: str | None = None) -> list[dict]:
    return [e for e in log_events(sandbox) if e.get("path") == path and (event is None or e["event"] == event)]


def tar_members(archive: Path) -> list[str]:
    out = subprocess.run(["tar", "--zstd", "-tf", str(archive)], capture_output=True, check=True)
    return [os.fsdecode(line) for line in out.stdout.split(b"\n") if line]


def extract(archive: Path, into: Path) -> Path:
    """GNU tar restores the archive; sha256sum -c checks it against the run's .sha256 file."""
    into.mkdir(parents=True)
    subprocess.run(["tar", "--zstd", "-xf", str(archive), "-C", str(into)], check=True, capture_output=True)
    sums = archive.with_name(archive.name[: -len(ARCHIVE_SUFFIX)] + ".sha256")
    check = subprocess.run(["sha256sum", "--quiet", "--strict", "-c", str(sums)], cwd=into,
                           capture_output=True, text=True)
    assert check.returncode == 0, f"sha256sum -c {sums.name} failed after GNU tar extracted it:\n{check.stdout}{check.stderr}"
    return into


def published_runs(backups: Path) -> list[str]:
    return sorted(os.listdir(backups)) if backups.exists() else []


def restored_files(sandbox, backups: Path, scratch: Path) -> dict[str, bytes]:
    """Every file every published run holds, keyed like sandbox.snapshot() ("<root>/<path>")."""
    roots = {p["name"]: Path(p["root"]).name for p in sandbox.config["policies"]}
    out: dict[str, bytes] = {}
    for run_id in published_runs(backups):
        run_dir = backups / run_id
        sums = subprocess.run(["sha256sum", "--quiet", "--strict", "-c", "SHA256SUMS"], cwd=run_dir,
                              capture_output=True, text=True)
        assert sums.returncode == 0, f"{run_id}/SHA256SUMS does not check:\n{sums.stdout}{sums.stderr}"
        for archive in sorted(run_dir.glob(f"*{ARCHIVE_SUFFIX}")):
            policy = archive.name[: -len(ARCHIVE_SUFFIX)]
            into = extract(archive, scratch / run_id / policy)
            for dirpath, _dirs, files in os.walk(into):
                for name in files:
                    p = Path(dirpath) / name
                    out[f"{roots[policy]}/{p.relative_to(into)}"] = p.read_bytes()
    return out


def assert_nothing_lost(sandbox, before: dict[str, bytes], scratch: Path, backups: Path | None = None) -> set[str]:
    """Every original is still there byte-identical, or a published archive restores it
    byte-identical. Returns the originals that are gone from the data."""
    backups = backups or sandbox.backups
    now = sandbox.snapshot()
    gone = set(before) - set(now)
    for path in set(before) & set(now):
        assert now[path] == before[path], f"{path} is still there but its content changed"
    if gone:
        restored = restored_files(sandbox, backups, scratch)
        for path in sorted(gone):
            assert path in restored, f"{path} was deleted but no published archive holds it"
            assert restored[path] == before[path], f"{path} was deleted and its archived copy differs"
    return gone


@contextlib.contextmanager
def tmpfs(where: Path, size: str):
    """A real small filesystem mounted at ``where`` for the block; skips the test, naming the
    missing capability, where this machine does not let the tests mount one."""
    got = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                         capture_output=True, text=True)
    if got.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs CAP_SYS_ADMIN (root in the mount namespace): {got.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def remount(where: Path, size: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", "-o", f"remount,size={size}", str(where)], capture_output=True, text=True)
