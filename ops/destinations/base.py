"""The destination interface: write a run privately, publish it whole, read it back.

A destination never shows a half-written run: files go into a staging area first and
``publish`` makes the whole run visible at once. A published run is never overwritten.
"""

from abc import ABC, abstractmethod
from typing import BinaryIO

from ops.sys.sizes import CHUNK

RUN_FILES = ("MANIFEST.json", "SHA256SUMS")


class DestinationError(Exception):
    """The destination could not do what was asked (I/O error, missing run, refusal)."""


class Staging(ABC):
    """A run being written; invisible to readers until ``publish``."""

    # Names an interrupted, never-published attempt left that this one replaces; a
    # destination that discards such leftovers itself (local) leaves this empty.
    leftovers: list[str] = []

    @abstractmethod
    def create(self, name: str) -> BinaryIO:
        """A new file of the run, open for binary writing."""

    @abstractmethod
    def publish(self) -> None:
        """Make every file durable, then make the run visible at once."""

    @abstractmethod
    def abort(self) -> None:
        """Throw away what was staged."""


class Destination(ABC):
    def __init__(self, name: str):
        self.name = name

    @abstractmethod
    def describe(self) -> str:
        """Where this destination is, for messages."""

    @abstractmethod
    def has_run(self, run_id: str) -> bool: ...

    @abstractmethod
    def list_runs(self) -> list[str]: ...

    @abstractmethod
    def bytes_used(self) -> int:
        """Bytes this destination's published runs take."""

    @abstractmethod
    def begin_run(self, run_id: str) -> Staging:
        """Start writing ``run_id``; leftovers of an interrupted attempt are discarded."""

    @abstractmethod
    def begin_repair(self, run_id: str) -> Staging:
        """A staging that replaces the run's damaged or missing copy when published: what
        is there is moved aside (a local directory) or written over (objects of S3, whose
        versions keep the old ones where the bucket is versioned); never deleted."""

    def check_objects(self, run_id: str, names: list[str]) -> None:
        """Each named file of the run carries the protection the destination writes it with
        (S3: Object Lock, encryption); DestinationError if one does not. A directory: none."""
        return None

    @abstractmethod
    def size(self, run_id: str, name: str) -> int:
        """Bytes of a published file of a run; DestinationError if it is not there."""

    @abstractmethod
    def open_read(self, run_id: str, name: str) -> BinaryIO:
        """A published file of a run, open for streaming binary reads."""

    def copy_into(self, run_id: str, name: str, out) -> None:
        """A published file of a run streamed into ``out`` (anything with ``write``)."""
        with self.open_read(run_id, name) as src:
            while chunk := src.read(CHUNK):
                out.write(chunk)

    def read_bytes(self, run_id: str, name: str) -> bytes:
        with self.open_read(run_id, name) as f:
            return f.read()
