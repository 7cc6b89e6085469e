"""The campaign's self-check, printed before any trial: the layer really forgets what was
not made durable, and keeps what was. A campaign whose layer forgot nothing would pass
every trial and prove nothing, so a failed check fails the campaign."""

import errno
import os
from pathlib import Path

from ops.sys.atomic import fsync_dir, rename_noreplace, syncfs
from tools.powercut.layer import Power

PIECES = [b"first piece\n", b"second piece\n", b"third piece\n"]
WHOLE = b"".join(PIECES)


def _write(path: Path, pieces=PIECES, sync_file: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        for piece in pieces:
            os.write(fd, piece)
        if sync_file:
            os.fsync(fd)
    finally:
        os.close(fd)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def self_check(base: Path, lock: Path) -> list[tuple[str, bool, str]]:
    """(what, passed, what was seen) for each property the campaign relies on."""
    checks = []
    with Power(base, lock, seed=1) as power:
        m, d = power.mnt, power.mnt / "d"
        os.mkdir(d)
        os.mkdir(m / "e")
        fsync_dir(m)
        _write(d / "unsynced")  # its name durable, its data not
        fsync_dir(d)
        _write(d / "synced", sync_file=True)
        _write(d / "rewritten", sync_file=True)
        _write(d / "renamed", sync_file=True)
        _write(d / "unlinked", sync_file=True)
        fsync_dir(d)
        os.rename(d / "renamed", d / "renamed-to")
        os.unlink(d / "unlinked")
        _write(d / "no-dir-sync", sync_file=True)  # its data durable, its name not
        os.mkdir(m / "e" / "new")  # its name never synced in e: gone, with what it holds
        _write(m / "e" / "new" / "synced", sync_file=True)
        fsync_dir(m / "e" / "new")
        with open(d / "rewritten", "r+b") as f:  # truncated and rewritten, never synced
            f.truncate(0)
            f.write(b"rewritten\n")
        _write(m / "after-syncfs")
        fd = os.open(m, os.O_RDONLY | os.O_DIRECTORY)
        try:
            syncfs(fd)
            try:
                rename_noreplace(b"after-syncfs", b"d", fd)
                noreplace = "the rename replaced the directory"
            except OSError as exc:
                noreplace = "" if exc.errno == errno.EEXIST else f"failed with {exc}"
        finally:
            os.close(fd)
        fsync_dir(m)  # its name is durable: only syncfs could have made its data so
        power.cut()
        got = {n: _read(d / n) for n in ("unsynced", "no-dir-sync", "synced", "renamed", "renamed-to", "unlinked")}
        got["after-syncfs"] = _read(m / "after-syncfs")
        got["new-dir"] = _read(m / "e" / "new" / "synced")
        got["rewritten"] = _read(d / "rewritten")
        checks = [
            (
                "a file written without fsync is short after a cut",
                got["unsynced"] is not None and len(got["unsynced"]) < len(WHOLE) and WHOLE.startswith(got["unsynced"]),
                f"{len(got['unsynced'] or b'')} of {len(WHOLE)} bytes left",
            ),
            (
                "a file synced but not its directory is gone after a cut",
                got["no-dir-sync"] is None,
                "gone" if got["no-dir-sync"] is None else "still there",
            ),
            (
                "with fsync on the file and on its directory, it survives whole",
                got["synced"] == WHOLE,
                "whole" if got["synced"] == WHOLE else f"{got['synced']!r}",
            ),
            (
                "an unsynced truncate and rewrite never survives whole",
                got["rewritten"] is not None
                and got["rewritten"] != b"rewritten\n"
                and len(got["rewritten"]) < 10
                or got["rewritten"] == WHOLE,
                f"{got['rewritten']!r}",
            ),
            (
                "a new directory not synced in its parent is gone, with the files synced in it",
                got["new-dir"] is None,
                "gone" if got["new-dir"] is None else "still there",
            ),
            (
                "a rename without a directory fsync is undone",
                got["renamed"] == WHOLE and got["renamed-to"] is None,
                "undone" if got["renamed-to"] is None else "kept",
            ),
            (
                "an unlink without a directory fsync is undone",
                got["unlinked"] == WHOLE,
                "undone" if got["unlinked"] == WHOLE else "kept",
            ),
            (
                "syncfs does not make a file durable on the layer (FUSE passes it to no server)",
                got["after-syncfs"] is not None and len(got["after-syncfs"]) < len(WHOLE),
                f"{len(got['after-syncfs'] or b'')} of {len(WHOLE)} bytes left",
            ),
            ("a rename that must not replace does not replace", not noreplace, noreplace or "EEXIST"),
        ]
    return checks
