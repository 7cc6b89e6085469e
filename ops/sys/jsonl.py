"""JSON lines that stay valid UTF-8 yet keep any file name losslessly.

File names on Linux are bytes; Python decodes undecodable bytes to lone surrogates
(surrogateescape). Such a name cannot be written as UTF-8 text, so its line falls back to
``\\udcXX`` escapes, which json reads back to the same surrogates: greppable text for
ordinary names, exact round-trips for every name.
"""

import json
from collections.abc import Iterator
from pathlib import Path

from ops.sys.hashio import HashingWriter
from ops.sys.paths import open_plain_file


def _compact_encoder(ensure_ascii: bool):
    """JSONEncoder(separators=(",", ":"), ensure_ascii=...).encode, with json's C encoder
    built once instead of per call: json.dumps with any keyword builds a new JSONEncoder
    per call, and encode() a new C encoder, together half the cost of a short line, paid
    per file by every step. No circular-reference bookkeeping: ours are flat records."""
    python = json.JSONEncoder(ensure_ascii=ensure_ascii, separators=(",", ":"))
    make = json.encoder.c_make_encoder
    if make is None:  # an interpreter built without the _json accelerator
        return python.encode
    quote = json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring
    encode = make(None, python.default, quote, None, ":", ",", False, False, True)
    return lambda obj: "".join(encode(obj, 0))


_encode = _compact_encoder(ensure_ascii=False)
_encode_ascii = _compact_encoder(ensure_ascii=True)


def dumps(obj) -> bytes:
    try:
        return _encode(obj).encode("utf-8")
    except UnicodeEncodeError:
        return _encode_ascii(obj).encode("ascii")


_CONTROL = {chr(c) for c in (*range(0x20), 0x7F)}


def shown(name: str) -> str:
    """A file name as a person should see it on a terminal or in plain text output.

    A name a terminal shows faithfully comes out as it is. One with bytes that are not
    UTF-8 (lone surrogates, which a terminal would show as U+FFFD) or with a control
    character (a newline would split a row) comes out as its journal line writes it:
    JSON-escaped, in ASCII, so what the operator reads can be grepped for in the journal
    and the catalogue.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return dumps(name).decode("ascii")[1:-1]
    if _CONTROL.isdisjoint(name):
        return name
    return dumps(name).decode("utf-8")[1:-1]


def dumps_line(obj) -> bytes:
    return dumps(obj) + b"\n"


def dumps_document(obj) -> bytes:
    """A manifest: indented and key-sorted so an operator can read and diff it."""
    try:
        text = json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True)
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        return json.dumps(obj, indent=2, sort_keys=True).encode("ascii") + b"\n"


class HashingLineWriter:
    """Writes JSON lines to a binary file and hashes the exact bytes written."""

    def __init__(self, f):
        self.out = HashingWriter(f)
        self.count = 0

    def write(self, obj) -> None:
        self.out.write(dumps_line(obj))
        self.count += 1

    @property
    def sha256(self) -> str:
        return self.out.sha256


# The C scanner under JSONDecoder.decode, called directly: decode() wraps it in two
# regex matches for surrounding whitespace, a third of the cost of a short line, and
# every step decodes each entry line several times (chain check, then work).
_scan_once = json.JSONDecoder().scan_once


def decode_line(line: bytes):
    """One JSON line. Our lines are UTF-8 by construction: decoding them here skips
    json.loads' encoding detection, a measurable share of a million-line manifest.
    Raises ValueError (UnicodeDecodeError included) on a line that is not one JSON value
    (optionally followed by whitespace), as json.loads would, except that leading
    whitespace is refused too (no writer of ours puts any there), and so is nesting too
    deep for the parser (json.loads raises RecursionError)."""
    text = line.decode("utf-8")
    try:
        value, end = _scan_once(text, 0)
    except StopIteration as err:
        raise json.JSONDecodeError("Expecting value", text, err.value) from None
    except RecursionError:  # a forged line of nested brackets: not one of ours, refused like any other
        raise ValueError("JSON nested too deeply") from None
    if end != len(text) and text[end:].strip(" \t\n\r"):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def iter_lines(path: Path) -> Iterator[dict]:
    """Each line of a file of the run's state, decoded; OSError if it is not a regular file."""
    with open_plain_file(path) as f:
        for line in f:
            yield decode_line(line)
