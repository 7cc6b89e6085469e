"""The catalogue's index: which line of which run's block holds each deleted path.

The per-run JSON-lines blocks (ops/state/catalogue.py) stay the durable record; this is a
cache beside them, ``<state_dir>/catalogue/index.sqlite3`` (sqlite3, WAL), that can
always be rebuilt from them, and is when it cannot be read. A row is only (path, block,
offset): the path as bytes (a name need not be UTF-8), the block's number and the byte
offset of its line, in a table clustered by path (WITHOUT ROWID), so a path is one
B-tree lookup and a directory glob one range scan of its fixed prefix, and the index
stays smaller than the lines it points at. The line itself is read from the block.

``sync`` brings the index up to date with the blocks on disk: a block not indexed yet (a
new run's, or every block of a catalogue written before the index existed) or changed
since (a rerun of clean rewrote it) is indexed, one gone is dropped. Clean indexes its
run's block as it publishes it; find and restore sync before they ask.
"""

import contextlib
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from ops.errors import StepFailed
from ops.state.manifest import RUN_ID_RE
from ops.sys.jsonl import decode_line
from ops.sys.paths import open_plain_file

INDEX = "index.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    id INTEGER PRIMARY KEY,
    run TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    path BLOB NOT NULL,
    block INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    PRIMARY KEY (path, block, offset)
) WITHOUT ROWID;
"""
_BATCH = 50_000  # rows per executemany


def _own(path: Path) -> None:
    """Never read or write through a link (or anything but a regular file or directory) put
    in the toolkit's own place by hand; as everywhere in the state, it is refused."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode) or not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        raise StepFailed(
            f"{path} is {'a symbolic link' if stat.S_ISLNK(st.st_mode) else 'not a regular file'}; "
            "it must be the toolkit's own, and nothing is read or written through it",
            hint="remove it; the catalogue's index is rebuilt from the catalogue's blocks",
        )


def _connect(directory: Path) -> sqlite3.Connection:
    _own(directory)
    for suffix in ("", "-wal", "-shm"):
        _own(directory / (INDEX + suffix))
    db = sqlite3.connect(directory / INDEX, timeout=60, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # a cache: a crash may lose its newest rows, never the blocks
    db.executescript(_SCHEMA)
    return db


@contextlib.contextmanager
def opened(directory: Path) -> Iterator[sqlite3.Connection]:
    """The index, made anew if it cannot be read (it is only a cache of the blocks)."""
    try:
        db = _connect(directory)
        db.execute("SELECT count(*) FROM blocks").fetchone()
    except sqlite3.DatabaseError:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(directory / (INDEX + suffix))
        db = _connect(directory)
    try:
        yield db
    finally:
        db.close()


def _blocks_on_disk(directory: Path) -> dict[str, os.stat_result]:
    found = {}
    for name in os.listdir(directory):
        run = name.removesuffix(".jsonl")
        if name.endswith(".jsonl") and RUN_ID_RE.match(run):
            with contextlib.suppress(FileNotFoundError):
                found[run] = os.stat(directory / name, follow_symlinks=False)
    return found


def _rows(path: Path, block: int, advance: Callable[[int], None]) -> Iterator[tuple[bytes, int, int]]:
    offset = 0
    with open_plain_file(path) as f:
        for line in f:
            if not line.endswith(b"\n"):
                break  # a torn last line is no entry (blocks are published whole; this is a damaged one)
            yield os.fsencode(decode_line(line)["path"]), block, offset
            offset += len(line)
            advance(len(line))


def index_block(db: sqlite3.Connection, directory: Path, run: str, advance=lambda n: None) -> None:
    """(Re)index one run's block, in one transaction."""
    path = directory / f"{run}.jsonl"
    st = os.stat(path, follow_symlinks=False)
    try:
        db.execute("BEGIN IMMEDIATE")
        old = db.execute("SELECT id FROM blocks WHERE run = ?", (run,)).fetchone()
        if old:
            db.execute("DELETE FROM files WHERE block = ?", old)
            db.execute("DELETE FROM blocks WHERE id = ?", old)
        block = db.execute(
            "INSERT INTO blocks (run, size, mtime_ns) VALUES (?, ?, ?)", (run, st.st_size, st.st_mtime_ns)
        ).lastrowid
        rows = _rows(path, block, advance)
        while chunk := [row for _, row in zip(range(_BATCH), rows, strict=False)]:
            db.executemany("INSERT OR IGNORE INTO files (path, block, offset) VALUES (?, ?, ?)", chunk)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def sync(directory: Path, progress=None) -> None:
    """Index what the blocks on disk hold and the index does not; forget blocks that are gone.
    ``progress(total_bytes)``: a context manager yielding ``advance(n)`` (a bar on a terminal)."""
    _own(directory)
    if not directory.is_dir():
        return
    on_disk = _blocks_on_disk(directory)
    with opened(directory) as db:
        known = {run: (size, mtime) for run, size, mtime in db.execute("SELECT run, size, mtime_ns FROM blocks")}
        stale = [run for run, st in on_disk.items() if known.get(run) != (st.st_size, st.st_mtime_ns)]
        for run in set(known) - set(on_disk):
            _forget(db, run)
        if not stale:
            return
        total = sum(on_disk[run].st_size for run in stale)
        with progress(total) if progress else contextlib.nullcontext(lambda n: None) as advance:
            for run in sorted(stale):
                try:
                    index_block(db, directory, run, advance)
                except (OSError, ValueError) as exc:
                    raise StepFailed(
                        f"catalogue file {directory / (run + '.jsonl')} cannot be read: {exc}",
                        hint="the archives themselves still list every file: see Restore in the README",
                    ) from None


def _forget(db: sqlite3.Connection, run: str) -> None:
    db.execute("BEGIN IMMEDIATE")
    old = db.execute("SELECT id FROM blocks WHERE run = ?", (run,)).fetchone()
    if old:
        db.execute("DELETE FROM files WHERE block = ?", old)
        db.execute("DELETE FROM blocks WHERE id = ?", old)
    db.execute("COMMIT")


def _after(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string that starts with ``prefix``."""
    trimmed = prefix.rstrip(b"\xff")
    return trimmed[:-1] + bytes([trimmed[-1] + 1]) if trimmed else None


def lookup(directory: Path, exact: bytes | None = None, prefix: bytes = b"") -> Iterator[tuple[bytes, str, int]]:
    """(path, run, offset) of every indexed line whose path is ``exact``, or starts with
    ``prefix``, oldest run first."""
    if not directory.is_dir():
        return
    with opened(directory) as db:
        if exact is not None:
            where, args = "f.path = ?", (exact,)
        elif _after(prefix) is not None:
            where, args = "f.path >= ? AND f.path < ?", (prefix, _after(prefix))
        else:
            where, args = "f.path >= ?", (prefix,)
        query = f"SELECT f.path, b.run, f.offset FROM files f JOIN blocks b ON b.id = f.block WHERE {where}"
        found = db.execute(query, args).fetchall()
    found.sort(key=lambda row: (row[1], row[2]))  # oldest run first, then the block's order
    yield from found


def read_line(directory: Path, run: str, offset: int) -> dict:
    with open_plain_file(directory / f"{run}.jsonl") as f:
        f.seek(offset)
        return decode_line(f.readline())
