"""The gatherer's contract (ops/sys/gather.py), which the staging file's and the background
hash's hand-over threads, the gathering HashingWriter and S3's parts all rely on: every
byte handed over once and in order, pieces kept whole (or cut at exact block boundaries),
the tail handed over by flush, lent buffers copied, and the first error kept."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ops.destinations import s3
from ops.destinations.base import DestinationError
from ops.sys.budget import Budget
from ops.sys.gather import Gatherer, write_all

_pieces = st.lists(st.binary(max_size=60), max_size=40)


def _gatherer(size: int, exact: bool = False):
    blocks: list[bytes] = []
    return Gatherer(blocks.append, size, exact), blocks


@given(_pieces, st.integers(min_value=1, max_value=100))
def test_blocks_are_whole_pieces_of_at_least_the_size_and_the_tail_is_flushed(pieces, size):
    g, blocks = _gatherer(size)
    ends, at = set(), 0  # where the pieces end in the stream
    for piece in pieces:
        assert g.write(piece) == len(piece)
        at += len(piece)
        ends.add(at)
        assert g.held < size  # never more held than a block
        assert sum(map(len, blocks)) + g.held == at
    assert all(len(b) >= size for b in blocks), "a block handed over before it was full"
    g.flush()
    assert g.held == 0
    assert all(blocks), "an empty block handed over"
    assert b"".join(blocks) == b"".join(pieces)
    at = 0
    for block in blocks:  # no piece was cut: every block ends where a piece ends
        at += len(block)
        assert at in ends


@given(_pieces, st.integers(min_value=1, max_value=100))
def test_exact_blocks_are_all_the_size_but_the_tail(pieces, size):
    g, blocks = _gatherer(size, exact=True)
    for piece in pieces:
        g.write(piece)
        assert g.held < size
        assert all(len(b) == size for b in blocks)
    g.flush()
    assert all(len(b) == size for b in blocks[:-1])
    assert not blocks or 0 < len(blocks[-1]) <= size
    assert b"".join(blocks) == b"".join(pieces)


def test_a_long_piece_with_nothing_held_is_handed_over_as_it_is():
    g, blocks = _gatherer(8)
    long = b"x" * 20
    g.write(long)
    assert blocks[0] is long  # no copy
    g.write(b"ab")
    g.write(long)
    assert blocks[1] == b"ab" + long  # held bytes first, then the piece, whole
    assert g.held == 0


def test_a_lent_buffer_is_copied_whether_held_or_handed_over():
    for exact in (False, True):
        g, blocks = _gatherer(8, exact)
        buf = bytearray(b"abc")
        g.write(buf)  # held
        buf[:] = b"XYZ"
        g.write(memoryview(bytearray(b"0123456789")))  # completes a block
        buf2 = bytearray(b"0123456789")
        g.write(buf2)
        buf2[:] = b"-" * 10
        g.flush()
        assert b"".join(blocks) == b"abc" + b"0123456789" * 2


def test_take_gives_the_tail_to_the_caller_and_flush_then_has_nothing_to_hand_over():
    g, blocks = _gatherer(8)
    g.write(b"abc")
    g.write(b"de")
    assert g.take() == b"abcde"
    g.flush()
    assert blocks == [] and g.held == 0


def test_the_first_error_is_kept_raised_again_and_nothing_more_is_handed_over():
    received = []

    def receive(block: bytes) -> None:
        if len(received) == 1:
            raise OSError(28, "No space left on device")
        received.append(block)

    g = Gatherer(receive, 4)
    g.write(b"aaaa")  # handed over
    g.write(b"bb")  # held
    with pytest.raises(OSError) as first:
        g.write(b"cc")  # completes the block that fails
    assert g.error is first.value
    for later in (lambda: g.write(b"d"), lambda: g.write(b"e" * 10), g.flush, g.raise_kept):
        with pytest.raises(OSError) as again:
            later()
        assert again.value is first.value
    g.fail(ValueError("a later failure"))  # the first one stays the one reported
    assert g.error is first.value
    assert received == [b"aaaa"]


def test_an_error_found_beside_the_receiver_stops_it_too():
    g, blocks = _gatherer(4)
    g.write(b"ab")
    g.fail(OSError(5, "Input/output error"))
    with pytest.raises(OSError, match="Input/output"):
        g.write(b"cd")
    with pytest.raises(OSError, match="Input/output"):
        g.flush()
    assert blocks == []


@given(st.binary(max_size=5000), st.integers(min_value=1, max_value=700))
def test_write_all_finishes_short_writes(data, most):
    out = bytearray()

    def short(view) -> int:
        out.extend(view[:most])
        return min(most, len(view))

    write_all(short, data)
    assert bytes(out) == data


class _FakeS3:
    """What of an S3Destination an upload uses (its budget: no limit), recording each request."""

    bucket, storage_class, lock = "b", None, None
    budget = Budget()

    def object_options(self) -> dict:
        return {}

    def __init__(self, fail_part: int | None = None):
        self.requests: list[tuple[str, dict]] = []
        self.fail_part = fail_part

    def call(self, operation: str, **kw):
        self.requests.append((operation, kw))
        if operation == "upload_part" and kw["PartNumber"] == self.fail_part:
            raise DestinationError("upload_part failed: connection reset")
        return {"UploadId": "u", "ETag": f"e{len(self.requests)}"}


def test_an_s3_upload_sends_parts_of_exactly_the_part_size_and_the_rest_last(monkeypatch):
    monkeypatch.setattr(s3, "PART_SIZE", 10)
    dest = _FakeS3()
    upload = s3._Upload(dest, "k")
    pieces = [b"a" * 3, b"b" * 25, bytearray(b"c" * 4), b"d" * 10]
    for piece in pieces:
        upload.write(piece)
    upload.finish()
    sent = [kw["Body"] for op, kw in dest.requests if op == "upload_part"]
    assert [len(b) for b in sent] == [10, 10, 10, 10, 2]
    assert b"".join(sent) == b"".join(pieces)
    assert dest.requests[-1][0] == "complete_multipart_upload"


def test_an_s3_upload_of_less_than_a_part_is_one_put(monkeypatch):
    monkeypatch.setattr(s3, "PART_SIZE", 10)
    dest = _FakeS3()
    upload = s3._Upload(dest, "k")
    upload.write(b"abc")
    upload.write(memoryview(b"def"))
    upload.finish(only_if_new=True)
    assert [(op, kw["Body"], kw.get("IfNoneMatch")) for op, kw in dest.requests] == [("put_object", b"abcdef", "*")]


def test_an_s3_upload_whose_part_failed_is_never_completed(monkeypatch):
    monkeypatch.setattr(s3, "PART_SIZE", 10)
    dest = _FakeS3(fail_part=2)
    upload = s3._Upload(dest, "k")
    upload.write(b"x" * 15)
    with pytest.raises(DestinationError, match="connection reset"):
        upload.write(b"y" * 5)  # fills part 2, which fails
    with pytest.raises(DestinationError, match="connection reset"):
        upload.write(b"z")
    with pytest.raises(DestinationError, match="connection reset"):
        upload.finish()
    assert "complete_multipart_upload" not in [op for op, _ in dest.requests]
