"""A lean GNU tar writer and a strict reader (headers packed by hand).

``tarfile.add`` costs about 250 µs a member (name look-ups, PAX headers for fractional
mtimes); packing the 512-byte header ourselves keeps small files cheap. The output is
plain GNU format (``././@LongLink`` for names over 100 bytes, base-256 for sizes over
8 GiB and owner ids over 2,097,151) that GNU tar, bsdtar and Python's tarfile all read.

The reader accepts only what the writer produces: regular files and long-name records.
Anything else (links, devices, directories, PAX headers) is reported as unsupported, so
an archive that did not come from us cannot smuggle one in.
"""

import struct

BLOCK = 512
REGULAR = b"0"
LONGNAME = b"L"
_GNU_MAGIC = b"ustar  \x00"
_OCTAL_LIMIT = 8**11  # 11 octal digits fit in a 12-byte field


class TarFormatError(ValueError):
    pass


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\x00" % (width - 1, value)


def _number(value: int, width: int) -> bytes:
    """A numeric field: octal when it fits, GNU base-256 otherwise (big files, odd mtimes,
    the uids of a directory service, often beyond the 7 octal digits of the field)."""
    if 0 <= value < 8 ** (width - 1):
        return _octal(value, width)
    bits = 8 * (width - 1)
    return bytes([0x80 if value >= 0 else 0xFF]) + (value % (1 << bits)).to_bytes(width - 1, "big")


# Everything after the typeflag is the same in every header we write: linkname, magic
# and empty owner names. Its byte sum (plus 8 spaces standing in for the checksum field
# itself) is taken once, so a header costs a join and a sum over its first 148 bytes.
_TAIL = b"\x00" * 100 + _GNU_MAGIC + b"\x00" * (32 + 32 + 8 + 8 + 155 + 12)
_TAIL_SUM = sum(_TAIL) + 8 * 32


# mode, uid, gid, size and mtime nearly always fit their octal fields, and then the five
# leave in one formatting operation (a header is per-file work).
_OCTAL_FIELDS = b"%07o\x00%07o\x00%07o\x00%011o\x00%011o\x00"
_OWNER_LIMIT = 8**7  # 7 octal digits fit in an 8-byte field


def _header(name: bytes, size: int, mtime: int, mode: int, typeflag: bytes, uid: int = 0, gid: int = 0) -> bytes:
    mode &= 0o7777
    if 0 <= uid < _OWNER_LIMIT and 0 <= gid < _OWNER_LIMIT and size < _OCTAL_LIMIT and 0 <= mtime < _OCTAL_LIMIT:
        fields = _OCTAL_FIELDS % (mode, uid, gid, size, mtime)
    else:
        fields = _octal(mode, 8) + _number(uid, 8) + _number(gid, 8) + _number(size, 12) + _number(mtime, 12)
    name = name[:100]
    checksum = b"%06o\x00 " % (sum(name) + sum(fields) + typeflag[0] + _TAIL_SUM)  # NUL padding adds 0
    return b"".join((name.ljust(100, b"\x00"), fields, checksum, typeflag, _TAIL))


def padding(size: int) -> bytes:
    return b"\x00" * (-size % BLOCK)


def member_header(name: bytes, size: int, mtime: int, mode: int, uid: int, gid: int) -> bytes:
    """Header block(s) for one regular file; a long name gets a GNU LongLink record first."""
    if len(name) <= 100:
        return _header(name, size, mtime, mode, REGULAR, uid, gid)
    longname = name + b"\x00"
    return (
        _header(b"././@LongLink", len(longname), 0, 0o644, LONGNAME)
        + longname
        + padding(len(longname))
        + _header(name, size, mtime, mode, REGULAR, uid, gid)
    )


ZERO_BLOCK = bytes(BLOCK)
END_OF_ARCHIVE = 2 * ZERO_BLOCK


def _parse_number(field: bytes) -> int:
    if field and field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        return value - (1 << 88) if field[0] == 0xFF else value
    text = field.split(b"\x00", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise TarFormatError(f"bad numeric field {field!r}") from None


_FIELDS = struct.Struct("100s8s8s8s12s12s8s1s100s8s")


def parse_header(block: bytes) -> tuple[bytes, int, int, int, bytes]:
    """(name, size, mtime, mode, typeflag) of one header block; checksum enforced."""
    name, mode, _uid, _gid, size, mtime, chksum, typeflag, _link, _magic = _FIELDS.unpack_from(block)
    expected = _parse_number(chksum)
    # NUL bytes add nothing: dropping them first (in C) leaves a few dozen bytes to sum.
    actual = sum(block.translate(None, b"\x00")) - sum(chksum.translate(None, b"\x00")) + 8 * 32
    if expected != actual:
        raise TarFormatError("header checksum mismatch")
    return name.split(b"\x00", 1)[0], _parse_number(size), _parse_number(mtime), _parse_number(mode), typeflag
