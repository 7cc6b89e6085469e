"""``sha256sum -c`` files: written and parsed exactly as GNU coreutils does.

A name with a backslash, newline or carriage return is escaped and its line starts with
a backslash; other bytes (non-UTF-8 included) are written raw so ``sha256sum -c`` finds
the file it names.
"""

from collections.abc import Iterable, Iterator

_ESCAPES = ((b"\\", b"\\\\"), (b"\n", b"\\n"), (b"\r", b"\\r"))
_HEX = b"0123456789abcdef"  # deleted by translate(): a hex digest leaves nothing behind


def sum_line(sha256: str, name: bytes) -> bytes:
    escaped = name
    for raw, esc in _ESCAPES:
        escaped = escaped.replace(raw, esc)
    prefix = b"\\" if escaped != name else b""
    return prefix + sha256.encode() + b"  " + escaped + b"\n"


def _unescape(name: bytes) -> bytes:
    out, i = bytearray(), 0
    while i < len(name):
        if name[i : i + 1] == b"\\" and i + 1 < len(name):
            out += {b"\\": b"\\", b"n": b"\n", b"r": b"\r"}.get(name[i + 1 : i + 2], b"\\" + name[i + 1 : i + 2])
            i += 2
        else:
            out += name[i : i + 1]
            i += 1
    return bytes(out)


def parse_lines(lines: Iterable[bytes]) -> Iterator[tuple[str, bytes]]:
    """(sha256 hex, name) per line; ValueError on a line that is not of this format."""
    for line in lines:
        line = line.rstrip(b"\n")
        escaped = line.startswith(b"\\")
        if escaped:
            line = line[1:]
        sha, sep, name = line.partition(b"  ")
        if not sep or len(sha) != 64 or sha.translate(None, _HEX):
            raise ValueError(f"not a sha256sum line: {line[:80]!r}")
        yield sha.decode(), _unescape(name) if escaped else name
