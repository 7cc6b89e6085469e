"""Streams that hash the bytes passing through them: hash on the way, never a second pass."""

import hashlib
from typing import BinaryIO


class HashingWriter:
    def __init__(self, raw):
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.raw.write(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self.raw.flush()

    @property
    def sha256(self) -> str:
        return self.sha.hexdigest()


class HashingReader:
    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data

    def readline(self) -> bytes:
        data = self.raw.readline()
        self.sha.update(data)
        self.size += len(data)
        return data

    def __iter__(self):
        return iter(self.readline, b"")

    def readable(self) -> bool:
        return True

    @property
    def sha256(self) -> str:
        return self.sha.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
