"""Compressed tar streams: one writer and one reader, each hashing as bytes pass."""

import gzip
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import zstandard

from ops.archive import tarformat
from ops.archive.tarformat import BLOCK, TarFormatError
from ops.archive.unpacker import DECODE_ERRORS, start_unpacker
from ops.sys.hashio import HashingReader, HashingWriter
from ops.sys.sizes import CHUNK, MiB

EXTENSIONS = {"zstd": ".tar.zst", "gzip": ".tar.gz", "none": ".tar"}
ZSTD_LEVEL = 3
# zstd's own workers, one per core: compression then runs beside the per-file work of
# the main thread instead of after it (a tar stream of small files: 12.4 s -> 4.8 s here).
ZSTD_THREADS = -1
# Level 3 as zstd itself sets it for an input of 1 MiB: a 1 MiB window instead of 2 MiB,
# so smaller jobs and overlaps for the workers. Measured on the 666 MB tar stream of
# 200,000 small files: 3.6-3.9 CPU s instead of 4.7-5.4, and 1% smaller output (what
# repeats in a tar stream of logs repeats within a file or its near neighbours).
_ZSTD_PARAMS = zstandard.ZstdCompressionParameters.from_level(ZSTD_LEVEL, source_size=MiB, threads=ZSTD_THREADS)
GZIP_LEVEL = 6
_MAX_LONGNAME = 1 << 16


class ArchiveError(Exception):
    """An archive that cannot be read as one of ours: corrupt, truncated or foreign."""


class ArchiveWriter:
    """Writes members into ``raw`` as a (compressed) GNU tar stream.

    ``raw`` is only written to; the caller owns it (fsync, rename, close).
    """

    def __init__(self, raw: BinaryIO, compression: str):
        # Gathered here, once, where the stream is made (ops/sys/gather.py): the blocks then
        # pass whole, uncopied, through the hashing thread's hand-over and every
        # destination's own, instead of each of them joining the compressor's 128 KiB
        # pieces (or a tar stream's per-member writes) again. 1 GiB through a staging file:
        # half the main thread's time at 128 KiB pieces, a third at 600 bytes.
        self._sink = HashingWriter(raw, background=True, gather=CHUNK)
        if compression == "zstd":
            self._out = zstandard.ZstdCompressor(compression_params=_ZSTD_PARAMS).stream_writer(
                self._sink, closefd=False
            )
        elif compression == "gzip":
            self._out = gzip.GzipFile(fileobj=self._sink, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)
        else:
            self._out = self._sink
        self._compressed = compression != "none"

    def add(
        self, name: bytes, size: int, mtime: int, mode: int, uid: int, gid: int, chunks: Iterable[bytes]
    ) -> tuple[str, int]:
        """Add one regular file of declared ``size``; return (sha256 of content, bytes read).

        A source that yields fewer bytes than ``size`` (it shrank while being read) is
        padded with zeros so the archive stays well-formed; the caller sees the short count.
        The digest is of exactly the bytes stored in the member.
        """
        out = self._out
        # Header, content and padding leave in one write when the file fits one chunk:
        # per-call overhead, not bytes, is what small files cost.
        head = tarformat.member_header(name, size, mtime, mode, uid, gid)
        pad = tarformat.padding(size)
        sha = hashlib.sha256()
        got = 0
        for chunk in chunks:
            if len(chunk) > size - got:
                chunk = chunk[: size - got]
            sha.update(chunk)
            got += len(chunk)
            if got >= size:
                out.write(head + chunk + pad)
                return sha.hexdigest(), got
            out.write(head + chunk)
            head = b""
        filler = b"\x00" * (size - got)  # the source shrank (or is empty): keep the member whole
        sha.update(filler)
        out.write(head + filler + pad)
        return sha.hexdigest(), got

    def close(self) -> tuple[str, int]:
        """End the archive; return (sha256, size) of the bytes written to ``raw``."""
        self._out.write(tarformat.END_OF_ARCHIVE)
        if self._compressed:
            self._out.close()
        self._sink.flush()
        return self._sink.sha256, self._sink.size


@dataclass
class Member:
    name: bytes
    size: int
    mtime: int
    mode: int
    typeflag: bytes
    sha256: str = ""  # filled in once the content was read through ``chunks()``

    @property
    def is_regular(self) -> bool:
        return self.typeflag in (tarformat.REGULAR, b"\x00")


class ArchiveReader:
    """Streams members out of a (compressed) tar; constant memory whatever the size.

    A compressed stream is decompressed in a helper process (ops/archive/unpacker.py), so
    use the reader as a context manager: leaving it stops the helper.
    """

    def __init__(self, raw: BinaryIO, compression: str):
        self._unpacker = None
        if compression == "none":
            self._src = self._in = HashingReader(raw, background=True)
        else:
            # The helper is forked before the feeding thread exists; that thread hashes the
            # raw bytes itself (hashlib releases the GIL on 1 MiB reads).
            self._unpacker = self._in = start_unpacker(compression)
            try:
                self._src = HashingReader(raw)
                self._unpacker.feed(self._src)
            except BaseException:
                self._unpacker.close()
                raise
        self._buf, self._pos = memoryview(b""), 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self._unpacker is not None:
            self._unpacker.close()

    def _read(self, n: int) -> bytes:
        try:
            return self._in.read(n)
        except DECODE_ERRORS as exc:
            raise ArchiveError(f"archive stream is corrupt: {exc}") from None

    def _take(self, n: int) -> memoryview:
        """Up to ``n`` bytes of the stream (fewer only at a refill), or ArchiveError at its end.

        The stream is read in CHUNK blocks and served as views into them: a small member
        costs slicing, not three calls into the decompressor. A view stays valid after the
        next refill (blocks are immutable bytes, never reused).
        """
        if self._pos == len(self._buf):
            block = self._read(CHUNK)
            if not block:
                raise ArchiveError("archive is truncated")
            self._buf, self._pos = memoryview(block), 0
        view = self._buf[self._pos : self._pos + n]
        self._pos += len(view)
        return view

    def _read_exact(self, n: int) -> bytes:
        view = self._take(n)
        if len(view) == n:
            return view.tobytes()
        parts, left = [view], n - len(view)
        while left:
            parts.append(self._take(left))
            left -= len(parts[-1])
        return b"".join(parts)

    def _skip(self, n: int) -> None:
        while n:
            n -= len(self._take(n))

    def members(self) -> Iterator[Member]:
        """Yield each member; read its content with ``chunks(member)`` before the next."""
        longname = None
        while True:
            block = self._read_exact(BLOCK)
            if block == tarformat.ZERO_BLOCK:
                return
            try:
                name, size, mtime, mode, typeflag = tarformat.parse_header(block)
            except TarFormatError as exc:
                raise ArchiveError(f"bad tar header: {exc}") from None
            if size < 0:
                raise ArchiveError("negative member size")
            if typeflag == tarformat.LONGNAME:
                if size > _MAX_LONGNAME:
                    raise ArchiveError("long name record is too long")
                longname = self._read_exact(size).split(b"\x00", 1)[0]
                self._skip(-size % BLOCK)
                continue
            member = Member(longname if longname is not None else name, size, mtime, mode, typeflag)
            longname = None
            self._pending = member.size
            yield member
            if self._pending:
                self._skip(self._pending)
            self._skip(-member.size % BLOCK)

    def chunks(self, member: Member) -> Iterator[memoryview]:
        """The content of the member just yielded, hashed into ``member.sha256``; each chunk
        is valid until the consumer asks for the next one."""
        sha = hashlib.sha256()
        while self._pending:
            data = self._take(self._pending)
            self._pending -= len(data)
            sha.update(data)
            yield data
        member.sha256 = sha.hexdigest()

    def finish(self) -> tuple[str, int]:
        """Read to the end of the stream; return (sha256, size) of the raw archive bytes."""
        self._pos = len(self._buf)
        while self._read(CHUNK):
            pass
        if self._unpacker is None:  # else the feeding thread read the raw stream to its end
            while self._src.read(CHUNK):
                pass
        return self._src.sha256, self._src.size
