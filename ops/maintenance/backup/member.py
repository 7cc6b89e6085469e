"""One expired file into the archive: read beneath its root, hashed as it is read, and recorded
as archived, changed (its stat moved while it was read) or skipped (gone, not a regular file)."""

import itertools
import os

from ops.archive import ArchiveWriter
from ops.sys.budget import READS
from ops.sys.pace import PACE
from ops.sys.paths import Beneath, describe_oserror, entry_key, stat_key
from ops.sys.sizes import CHUNK
from ops.sys.window import WINDOW


def _read_chunks(fd: int, size: int):
    left = size
    while left > 0:
        data = os.read(fd, min(CHUNK, left))
        if not data:
            return
        READS.take(len(data))
        WINDOW.check()  # a large file is no safe point's end: the staging is thrown away, the run resumed
        left -= len(data)
        yield data


def _contents(fd: int, size: int):
    """The file's content as chunks of at most CHUNK bytes, ending early if it shrank.
    A small file is one read and no generator: per-call overhead is what small files cost."""
    if size <= CHUNK:
        data = os.read(fd, size)
        READS.take(len(data))
        if len(data) == size or not data:
            return (data,) if data else ()
        return itertools.chain((data,), _read_chunks(fd, size - len(data)))
    return _read_chunks(fd, size)


def archive_one(beneath: Beneath, writer: ArchiveWriter, entry: dict, raw_path: bytes) -> dict:
    path = entry["path"]
    try:
        fd, st = beneath.open_regular(path)
    except OSError as exc:
        return {"path": path, "status": "skipped", "reason": describe_oserror(exc)}
    try:
        if stat_key(st) != entry_key(entry):
            return {"path": path, "status": "skipped", "reason": "changed since scan"}
        sha, got = writer.add(
            raw_path,
            st.st_size,
            st.st_mtime_ns // 1_000_000_000,
            st.st_mode & 0o7777,
            st.st_uid,
            st.st_gid,
            _contents(fd, st.st_size),
        )
        after = os.fstat(fd)
        unchanged = got == st.st_size and stat_key(after) == stat_key(st)
        if unchanged:  # read once, to be deleted: its pages are better left to the core
            PACE.done_with(fd)  # (not a file still being written: dropping would start its writeback)
    finally:
        os.close(fd)
    if not unchanged:
        return {
            "path": path,
            "status": "changed",
            "sha256": sha,
            "size": st.st_size,
            "reason": "changed while being archived; kept, the copy may be torn",
        }
    return {"path": path, "status": "archived", "sha256": sha, "size": st.st_size}
