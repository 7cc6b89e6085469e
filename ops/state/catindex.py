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
VERSION = 1  # the schema below; an index of another is made anew
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
        # Another version's index (or anything else in its place) is made anew too.
        if db.execute("PRAGMA user_version").fetchone()[0] != VERSION:
            raise sqlite3.DatabaseError("not this version's index")
        db.execute("SELECT run, size, mtime_ns FROM blocks LIMIT 1").fetchall()
        db.execute("SELECT path, block, offset FROM files LIMIT 1").fetchall()
    except sqlite3.DatabaseError:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(directory / (INDEX + suffix))
        db = _connect(directory)
        db.execute(f"PRAGMA user_version = {VERSION}")
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


class Damaged(Exception):
    """A block with a line that is not one of clean's: the lines before it are indexed."""


def _rows(path: Path, block: int, advance: Callable[[int], None]) -> Iterator[tuple[bytes, int, int]]:
    offset = 0
    with open_plain_file(path) as f:
        for number, line in enumerate(f, 1):
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("a torn last line")  # blocks are published whole: this one is damaged
                entry_path = decode_line(line)["path"]
            except (ValueError, KeyError, TypeError) as exc:
                raise Damaged(f"line {number}: {exc}") from None
            yield os.fsencode(entry_path), block, offset
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
        damaged = None
        while True:
            chunk = []
            try:
                for _, row in zip(range(_BATCH), rows, strict=False):
                    chunk.append(row)
            except Damaged as exc:
                damaged = exc
            db.executemany("INSERT OR IGNORE INTO files (path, block, offset) VALUES (?, ?, ?)", chunk)
            if damaged or len(chunk) < _BATCH:
                break
        if damaged:  # looked at again by every sync, and said again, until the block is mended
            db.execute("UPDATE blocks SET size = -1 WHERE id = ?", (block,))
        db.execute("COMMIT")
        if damaged:
            raise damaged
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def sync(directory: Path, progress=None) -> list[str]:
    """Index what the blocks on disk hold and the index does not; forget blocks that are gone.
    ``progress(total_bytes)``: a context manager yielding ``advance(n)`` (a bar on a terminal).
    Returns what is wrong with damaged blocks (their readable lines are indexed)."""
    _own(directory)
    if not directory.is_dir():
        return []
    on_disk = _blocks_on_disk(directory)
    damaged = []
    with opened(directory) as db:
        known = {run: (size, mtime) for run, size, mtime in db.execute("SELECT run, size, mtime_ns FROM blocks")}
        stale = [run for run, st in on_disk.items() if known.get(run) != (st.st_size, st.st_mtime_ns)]
        for run in set(known) - set(on_disk):
            _forget(db, run)
        if not stale:
            return damaged
        total = sum(on_disk[run].st_size for run in stale)
        with progress(total) if progress else contextlib.nullcontext(lambda n: None) as advance:
            for run in sorted(stale):
                try:
                    index_block(db, directory, run, advance)
                except Damaged as exc:
                    damaged.append(f"catalogue file {directory / (run + '.jsonl')} is damaged at {exc}")
                except OSError as exc:
                    raise StepFailed(
                        f"catalogue file {directory / (run + '.jsonl')} cannot be read: {exc}",
                        hint="the archives themselves still list every file: see Restore in the README",
                    ) from None
    return damaged


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
    ``prefix``, in path order, streamed (a glob with no fixed prefix walks the whole index)."""
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
        yield from db.execute(query, args)
