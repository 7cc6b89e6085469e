"""Typed records of what a step's manifest says, for the steps after it to read.

The manifests stay plain JSON an operator can grep; the code that acts on them reads
them through these frozen records, so a key is spelled in one place and a missing one
is an error at the first read, not a KeyError deep in a step.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class ScannedPolicy:
    """One policy as scan recorded it (``scan.ok.json`` "policies")."""

    name: str
    root: str
    root_id: tuple[int, int]  # (device, inode) of the root when it was scanned
    entries: str  # the entry file's name in the run directory
    expired: int
    expired_bytes: int
    prune_empty_dirs: bool  # absent in a run scanned before the key: off, as the default
    prune_after_ns: int
    nested_roots: tuple[str, ...]  # other policies' roots beneath this one, relative to it

    @classmethod
    def of(cls, name: str, doc: dict) -> "ScannedPolicy":
        return cls(
            name=name,
            root=doc["root"],
            root_id=(doc["root_dev"], doc["root_ino"]),
            entries=doc["entries"],
            expired=doc["expired"],
            expired_bytes=doc["expired_bytes"],
            prune_empty_dirs=bool(doc.get("prune_empty_dirs", False)),
            prune_after_ns=int(doc.get("prune_after_ns", 0)),
            nested_roots=tuple(doc.get("nested_roots", ())),
        )


def scanned_policies(scan: dict) -> dict[str, ScannedPolicy]:
    """Every policy of a scan manifest, by name, in its order."""
    return {name: ScannedPolicy.of(name, doc) for name, doc in scan["policies"].items()}


@dataclass(frozen=True)
class ArchivedPolicy:
    """One policy as backup recorded it (``backup.ok.json`` "policies"): its archive and
    checksum file on every destination, their SHA-256s and sizes as written."""

    name: str
    compression: str
    archive: str
    archive_sha256: str
    archive_bytes: int
    sums: str
    sums_sha256: str
    sums_bytes: int | None  # None in a run backed up before it was recorded: the file only has to be there
    member_bytes: int

    @classmethod
    def of(cls, name: str, doc: dict, compression: str) -> "ArchivedPolicy":
        """``compression``: the run's, for a record from before each policy carried its own."""
        return cls(
            name=name,
            compression=doc.get("compression", compression),
            archive=doc["archive"],
            archive_sha256=doc["archive_sha256"],
            archive_bytes=doc["archive_bytes"],
            sums=doc["sums"],
            sums_sha256=doc["sums_sha256"],
            sums_bytes=doc.get("sums_bytes"),
            member_bytes=doc["member_bytes"],
        )


def archived_policies(backup: dict) -> dict[str, ArchivedPolicy]:
    """Every policy of a backup manifest, by name, in its order."""
    return {
        name: ArchivedPolicy.of(name, doc, backup.get("compression", "")) for name, doc in backup["policies"].items()
    }
