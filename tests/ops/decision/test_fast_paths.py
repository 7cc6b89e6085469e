"""The hand-written fast paths on per-file hot loops must say exactly what the general
code says: same JSON bytes, same verdict on a path, same tar header, same checksum parse."""

import io
import json
import os
import tarfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ops.archive import tarformat
from ops.archive.checksums import parse_lines, sum_line
from ops.archive.codec import CHUNK
from ops.maintenance.backup.member import _contents, _read_chunks
from ops.sys.hashio import HashingWriter
from ops.sys.jsonl import decode_line, dumps
from ops.sys.paths import unsafe_reason

# Names as file systems hand them over: any text, including the lone surrogates that stand
# for bytes that are not UTF-8 (U+DC80..U+DCFF), quotes, backslashes and control characters.
names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)) | st.sampled_from(["\udc80", "\udcff"]), max_size=40
) | st.sampled_from(["a/b.csv", 'quote"d', "back\\slash", "new\nline", "\udcff\udcfe.log", "ünï/cødé"])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | names,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=8,
)


@given(json_values)
def test_dumps_is_json_dumps_byte_for_byte(value):
    try:
        expected = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (a name that is not UTF-8): the escaped form
        expected = json.dumps(value, separators=(",", ":")).encode("ascii")
    assert dumps(value) == expected


def test_dumps_refuses_what_json_refuses():
    with pytest.raises(TypeError, match="not JSON serializable"):
        dumps({"a": object()})


def _loads_or_error(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return ValueError


@given(json_values, st.sampled_from(["", "\n", " \n", "\r\n", "\t", "x", ",1", "{}", " ]", "\n\n"]))
def test_decode_line_agrees_with_json_loads(value, tail):
    try:
        line = (json.dumps(value, ensure_ascii=False) + tail).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (a name that is not UTF-8): the escaped form
        line = (json.dumps(value) + tail).encode("utf-8")
    expected = _loads_or_error(line.decode("utf-8"))
    try:
        got = decode_line(line)
    except ValueError:
        got = ValueError
    assert got == expected


@pytest.mark.parametrize(
    "line", [b"", b"\n", b"  ", b'{"a":1} x\n', b'{"a":1}{"b":2}\n', b'{"a":\n', b"\xff\n", b"nul", b"[" * 100_000]
)
def test_decode_line_refuses_what_is_not_one_json_value(line):
    with pytest.raises(ValueError):
        decode_line(line)


def _slow_reason(path: str):
    """The component-by-component check, without the substring shortcut."""
    return unsafe_reason(path.encode("utf-8", "surrogateescape"))


@given(
    st.lists(st.sampled_from(["a", "b", ".", "..", "", "c.log", "\x00", "\udcff", " "]), min_size=1, max_size=5).map(
        "/".join
    )
    | names
)
def test_the_path_check_shortcut_agrees_with_the_full_check(path):
    assert (unsafe_reason(path) is None) == (_slow_reason(path) is None)


@given(
    st.binary(min_size=1, max_size=300).filter(lambda b: b"\x00" not in b),
    st.integers(0, 2**40),
    st.integers(0, 2**33),
    st.integers(0, 0o7777),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
)
def test_tar_headers_read_back_through_tarfile(name, size, mtime, mode, uid, gid):
    head = tarformat.member_header(name, size, mtime, mode, uid, gid)
    assert len(head) % 512 == 0
    # tarfile reads the header (and a long-name record) and agrees on every field
    info = tarfile.TarInfo.frombuf(head[-512:], "utf-8", "surrogateescape")
    assert (info.size, info.mtime, info.mode, info.uid, info.gid) == (size, mtime, mode, uid, gid)
    assert tarformat.parse_header(head[-512:])[1:4] == (size, mtime, mode)
    if len(name) <= 100:
        assert info.name.encode("utf-8", "surrogateescape") == name
    else:
        with tarfile.open(fileobj=io.BytesIO(head + b"\x00" * 1024), mode="r:") as tf:
            assert tf.next().name.encode("utf-8", "surrogateescape") == name


@given(
    st.binary(min_size=1, max_size=60).filter(lambda b: b"\x00" not in b),
    st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
)
def test_checksum_lines_parse_back_to_what_was_written(name, sha):
    assert list(parse_lines([sum_line(sha, name)])) == [(sha, name)]


def test_a_checksum_that_is_not_lowercase_hex_is_rejected():
    for bad in ("A" * 64, "g" * 64, "0" * 63):
        try:
            list(parse_lines([bad.encode() + b"  name\n"]))
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")


@given(
    st.binary(min_size=1, max_size=100).filter(lambda b: b"\x00" not in b),
    st.integers(0, 2**40),
    st.integers(0, 2**33),
    st.integers(0, 0o7777),
    st.integers(0, 511),
    st.integers(1, 255),
)
def test_a_header_changed_outside_its_checksum_field_is_refused(name, size, mtime, mode, where, delta):
    head = bytearray(tarformat.member_header(name, size, mtime, mode, 0, 0))
    assert len(head) == 512  # one header block: names of up to 100 bytes need no long-name record
    if 148 <= where < 156:  # the checksum field itself: its text may change without its value
        where = 147
    head[where] = (head[where] + delta) % 256
    with pytest.raises(tarformat.TarFormatError):
        tarformat.parse_header(bytes(head))


@pytest.mark.parametrize(
    "actual,declared",
    [
        (0, 0),
        (1, 1),
        (5000, 5000),  # unchanged
        (3000, 5000),
        (0, 5000),  # shrank since its stat: fewer bytes, nothing made up
        (9000, 5000),  # grew: only the declared size is read
        (CHUNK + 10, CHUNK + 10),
        (CHUNK - 1, CHUNK + 10),  # beyond one chunk: the chunked loop
    ],
)
def test_one_read_of_a_small_file_yields_what_the_chunked_loop_yields(tmp_path, actual, declared):
    path = tmp_path / "f"
    path.write_bytes(os.urandom(actual))
    with open(path, "rb") as a, open(path, "rb") as b:
        fast = list(_contents(a.fileno(), declared))
        slow = list(_read_chunks(b.fileno(), declared))
    assert fast == slow
    assert b"".join(fast) == path.read_bytes()[:declared]


def test_a_short_first_read_is_followed_by_the_rest():
    """A read may return less than asked though more is coming (a pipe here, a FUSE or
    network file system in the field): what follows is read, not taken for the end."""
    r, w = os.pipe()
    try:
        os.write(w, b"abcde")
        chunks = _contents(r, 10)  # the first read returns the five bytes there are
        os.write(w, b"fghij")
        os.close(w)
        w = None
        assert list(chunks) == [b"abcde", b"fghij"]
    finally:
        os.close(r)
        if w is not None:
            os.close(w)


@given(st.lists(st.binary(max_size=40), max_size=60), st.integers(min_value=1, max_value=200))
def test_a_gathering_hashing_writer_writes_and_hashes_exactly_what_a_plain_one_does(pieces, gather):
    plain, gathered = io.BytesIO(), io.BytesIO()
    a, b = HashingWriter(plain), HashingWriter(gathered, gather=gather)
    for piece in pieces:
        a.write(piece)
        b.write(piece)
        # Nothing reaches the file before ``gather`` bytes are held, and nothing is held past it.
        assert len(gathered.getvalue()) <= len(plain.getvalue())
        assert len(plain.getvalue()) - len(gathered.getvalue()) < gather
    if len(plain.getvalue()) > len(gathered.getvalue()):
        with pytest.raises(RuntimeError, match="flush"):
            _ = b.sha256  # a digest of a file that still lacks its tail is refused
    b.flush()
    assert gathered.getvalue() == plain.getvalue()
    assert (b.sha256, b.size) == (a.sha256, a.size)
