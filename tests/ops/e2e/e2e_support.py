"""The oracle the fault tests share: what a run left on the destination, in the log and on
the lock, judged with standard tools (GNU tar, sha256sum) rather than with ops' own code."""

import contextlib
import os
import subprocess
import time
from pathlib import Path

import pytest

# The helpers the fault campaign shares too live in tools/sandbox.py.
from tools.sandbox import (
    log_events,
    published_runs,
)

ARCHIVE_SUFFIX = ".tar.zst"


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


def extract(archive: Path, into: Path) -> Path:
    """GNU tar restores the archive; sha256sum -c checks it against the run's .sha256 file."""
    into.mkdir(parents=True)
    subprocess.run(["tar", "--zstd", "-xf", str(archive), "-C", str(into)], check=True, capture_output=True)
    sums = archive.with_name(archive.name[: -len(ARCHIVE_SUFFIX)] + ".sha256")
    check = subprocess.run(
        ["sha256sum", "--quiet", "--strict", "-c", str(sums)], cwd=into, capture_output=True, text=True
    )
    assert check.returncode == 0, (
        f"sha256sum -c {sums.name} failed after GNU tar extracted it:\n{check.stdout}{check.stderr}"
    )
    return into


def restored_files(sandbox, backups: Path, scratch: Path) -> dict[str, bytes]:
    """Every file every published run holds, keyed like sandbox.snapshot() ("<root>/<path>")."""
    roots = {p["name"]: Path(p["root"]).name for p in sandbox.config["policies"]}
    out: dict[str, bytes] = {}
    for run_id in published_runs(backups):
        run_dir = backups / run_id
        sums = subprocess.run(
            ["sha256sum", "--quiet", "--strict", "-c", "SHA256SUMS"], cwd=run_dir, capture_output=True, text=True
        )
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
    got = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)], capture_output=True, text=True
    )
    if got.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs CAP_SYS_ADMIN (root in the mount namespace): {got.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def remount(where: Path, size: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", "-o", f"remount,size={size}", str(where)], capture_output=True, text=True)
