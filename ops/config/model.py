"""What a loaded retention.yaml is: ``Config``, its ``Policy`` and ``Destination`` records.

Their fields are not written here: ``record`` makes each class a frozen dataclass of the
fields of its tables in ops/config/fields.py, in table order, with the table's defaults.
This module adds what the records do.
"""

import hashlib
import json
import socket
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path

from ops.config.fields import CALENDAR, DESTINATION, POLICY, REQUIRED, TOP, WHEN_SET, Table, record_fields
from ops.config.values import Duration
from ops.errors import ConfigError


class _Defaults:
    """A reader for a table's own defaults, which are valid by construction."""

    base = None

    def fail(self, key: str, message: str) -> Exception:
        return AssertionError(f"the default of {key} does not read: {message}")


def record(*tables: Table, first: tuple[tuple[str, type], ...] = (), defaults: bool = True):
    """Class decorator: the class as a frozen dataclass whose fields are ``first`` and then
    those of ``tables`` (see fields.record_fields). A field every table requires has no
    default; one only some variants hold defaults to None; so does an unset optional one;
    else the default is the table's, read like a written value (``"10m"`` -> Duration)."""

    def build(cls):
        annotations = dict(first)
        fields = []
        for f, required in record_fields(*tables):
            fields.append(f)
            annotations[f.name] = f.kind.type
            if not defaults or required:
                continue
            if f.default is None or f.default is REQUIRED:
                annotations[f.name] = f.kind.type | None
                setattr(cls, f.name, None)
            else:
                assert not f.kind.relative, f"{f.key}: a default read against the config's directory"
                setattr(cls, f.name, f.kind.read(f.default, f.key, _Defaults()))
        cls.__annotations__ = annotations
        cls.FIELDS = tuple(fields)
        return dataclass(frozen=True)(cls)

    return build


@record(*DESTINATION.tables.values())
class Destination:
    """A destination as written: local (``path``) or s3 (``bucket`` and the rest)."""


@record(POLICY)
class Policy:
    """One policy's rules."""

    @property
    def prune_after(self) -> Duration:
        """How long an emptied directory must have been untouched before it is removed:
        the longest of older_than, min_age and settle (a directory written within the
        policy's own horizon is one the core still uses)."""
        return max((d for d in (self.older_than, self.min_age, self.settle) if d is not None), key=lambda d: d.seconds)

    @property
    def calendar(self) -> dict[str, int]:
        """The calendar rules in force, in the order they claim files."""
        return {k: getattr(self, k) for k in CALENDAR if getattr(self, k)}

    @property
    def has_space_rules(self) -> bool:
        return self.max_total_size is not None or self.min_free is not None


@record(TOP, first=(("path", Path),), defaults=False)
class Config:
    """A loaded retention.yaml: ``path`` is the file; every other field is a key of it
    (those of ``backup`` among them: compression, destinations, require_verified_copies)."""

    def policy(self, name: str) -> Policy:
        for p in self.policies:
            if p.name == name:
                return p
        raise ConfigError(f"{self.path}: no policy named {name!r}")

    def destination(self, name: str) -> Destination:
        for d in self.destinations:
            if d.name == name:
                return d
        raise ConfigError(f"{self.path}: no destination named {name!r}")

    def identity(self) -> dict:
        """Who scanned a run: this host, this config file, and a digest of the settings that
        decide what may be deleted (every policy, every destination, the quorum: the fields
        the tables mark ``digest``).

        A run carries it from scan on; every later step and any resume compare it, so a run
        is never finished under rules other than those it was scanned and copied under.
        Settings that decide nothing about deletion (logs, metrics, hooks, S3 timeouts) are
        left out: changing them does not orphan a run.
        """
        canonical = json.dumps(_rules(self), sort_keys=True, separators=(",", ":"), default=str)
        return {
            "host": socket.gethostname(),
            "config": str(self.path.resolve()),
            "digest": hashlib.sha256(canonical.encode()).hexdigest(),
        }


def _rules(value):
    """``value`` with only its digested fields, as plain data (the digest's JSON)."""
    if hasattr(value, "FIELDS"):
        return {
            f.name: _rules(getattr(value, f.name))
            for f in value.FIELDS
            if f.digest and not (f.digest == WHEN_SET and getattr(value, f.name) is None)
        }
    if is_dataclass(value):  # Duration, Size
        return asdict(value)
    if isinstance(value, tuple):
        return [_rules(v) for v in value]
    return value
