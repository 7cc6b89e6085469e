"""The keys of retention.yaml, once: one table per mapping, one row per key.

A row (``Field``) gives the key, the kind of value it reads (``Kind``: a duration, a size, a
count...), its default (or ``REQUIRED``) and one line for the reference. Everything else
comes from these tables: the keys each mapping allows and requires, the defaults, the
fields of ``Config``, ``Policy`` and ``Destination`` (ops/config/model.py), the reading
(ops/config/load.py), the digest a run is scanned under, docs/config-reference.md and
docs/retention.schema.json (ops/config/reference.py).

What one key cannot say alone (two places that overlap, the quorum against the number of
destinations, path_date against age_from, a policy with no rule that expires anything) is
checked by explicit code in ops/config/load.py, after the tables have been read.

A kind's reader is called as ``read(value, key, reader)`` and refuses a value with
``raise reader.fail(key, message)``: the message then names the file and the dotted key.
"""

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ops.config.globs import compile_globs
from ops.config.values import (
    DURATION_RE,
    NAME_RE,
    PERCENT_RE,
    RATE_RE,
    RETAIN_RE,
    SIZE_RE,
    Duration,
    Size,
    compile_path_date,
    parse_duration,
    parse_rate,
    parse_retain,
    parse_size,
)
from ops.sys.pace import DEFAULT as DEFAULT_PACE
from ops.sys.pace import PACES
from ops.sys.window import SPAN_RE, Span, parse_span, zone

COMPRESSIONS = ("zstd", "gzip", "none")
REQUIRED = type("Required", (), {"__repr__": lambda self: "REQUIRED"})()
WHEN_SET = "when set"


@dataclass(frozen=True)
class Kind:
    """What one key holds and how it is read."""

    name: str  # the type column of the reference
    doc: str  # what a value of this kind looks like, for the reference's legend
    type: object  # the Python type of the value read, for the dataclasses
    read: Callable  # (value, key, reader) -> the value, or raise reader.fail(key, message)
    schema: dict = field(default_factory=dict)  # its JSON Schema (nested kinds: built from their table)
    relative: bool = False  # read against the config file's directory: a dataclass cannot default it
    table: "Table | Variants | None" = None  # the mapping a nested kind reads
    many: str | None = None  # a list of such mappings: what one of them is called ("policy")

    @property
    def inline(self) -> bool:
        """A nested mapping whose fields are the enclosing record's own (``backup``)."""
        return self.table is not None and self.many is None


@dataclass(frozen=True)
class Field:
    key: str
    kind: Kind
    default: object  # REQUIRED; None: unset unless written; else a YAML value, read like a written one
    doc: str
    attr: str | None = ""  # the dataclass field ("": the key); None: checked, then dropped (version)
    nullable: bool = False  # a written null (``policies:`` with nothing after it) means the default
    # Decides what may be deleted: part of Config.identity()'s digest. WHEN_SET: only once
    # written (a key added later), so the digest of a config without it stays what it was
    # and an upgrade leaves no unfinished run behind.
    digest: bool | str = True

    @property
    def name(self) -> str | None:
        return self.key if self.attr == "" else self.attr


@dataclass(frozen=True)
class Table:
    """One mapping of retention.yaml: where it sits (``policies[]``), a paragraph, its fields."""

    where: str
    doc: str
    fields: tuple[Field, ...]


@dataclass(frozen=True)
class Variants:
    """A mapping whose ``tag`` key picks its table (a destination's ``type``)."""

    what: str  # "destination", for the messages
    tag: str
    tables: dict[str, Table]  # each holds every field of its variant, the tag among them


def record_fields(*tables: Table) -> Iterator[tuple[Field, bool]]:
    """The fields a record built from ``tables`` holds, in order, with whether every table
    requires it: nested mappings flattened in, dropped fields left out, a key met twice
    (a variant's common fields) once."""
    seen = set()
    for table in tables:
        for f in table.fields:
            if f.kind.inline:
                yield from record_fields(f.kind.table)
            elif f.name is not None and f.name not in seen:
                seen.add(f.name)
                required = all(g.default is REQUIRED for t in tables for g in t.fields if g.name == f.name)
                yield f, required and all(any(g.name == f.name for g in t.fields) for t in tables)


# --- kinds of value ------------------------------------------------------------------------


def _typed(value, key, r, kind, what):
    # bool is an int in Python; a YAML 'yes' must not pass as a count.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise r.fail(key, f"expected {what}, got {value!r}")
    return value


def _string(value, key, r) -> str:
    value = _typed(value, key, r, str, "a string")
    if not value:
        raise r.fail(key, "must not be empty")
    return value


def _name(value, key, r) -> str:
    name = _string(value, key, r)
    if not NAME_RE.match(name):
        raise r.fail(key, f"{name!r} must match [a-z0-9][a-z0-9_-]*")
    return name


def _path(value, key, r) -> Path:
    return Path(os.path.normpath(r.base / _string(value, key, r)))


def _version(value, key, r) -> int:
    if type(value) is not int or value != 1:
        raise r.fail(key, f"unsupported schema version {value!r} (this toolkit reads version 1)")
    return value


def _count(value, key, r) -> int:
    value = _typed(value, key, r, int, "an integer")
    if value < 0:
        raise r.fail(key, f"must be 0 or more, got {value}")
    return value


def _parsed(parse: Callable) -> Callable:
    def read(value, key, r):
        try:
            return parse(value)
        except ValueError as exc:
            raise r.fail(key, str(exc)) from None

    return read


_duration = _parsed(parse_duration)


def _seconds(value, key, r) -> float:
    """A positive number of seconds (``10``, ``2.5``) or a duration (``2m``)."""
    if isinstance(value, str):
        seconds = _duration(value, key, r).seconds
    elif isinstance(value, (int, float)) and not isinstance(value, bool):  # a YAML 'yes' is no number
        seconds = value
    else:
        raise r.fail(key, f"expected a number of seconds or a duration like 30s, got {value!r}")
    if not 0 < seconds < float("inf"):  # NaN fails this too
        raise r.fail(key, f"must be a finite number of seconds above 0, got {value!r}")
    return float(seconds)


def _globs(value, key, r) -> tuple[str, ...]:
    value = _typed(value, key, r, list, "a list of glob strings")
    patterns = tuple(_string(v, f"{key}[{i}]", r) for i, v in enumerate(value))
    for i, pattern in enumerate(patterns):
        try:
            compile_globs([pattern])
        except ValueError as exc:
            raise r.fail(f"{key}[{i}]", str(exc)) from None
    return patterns


def _path_date(value, key, r) -> str:
    pattern = _string(value, key, r)
    _parsed(compile_path_date)(pattern, key, r)
    return pattern


def _spans(value, key, r) -> tuple[Span, ...]:
    value = _typed(value, key, r, list, "a list of spans like 'Mon-Fri 17:30-07:30'")
    if not value:
        raise r.fail(key, "at least one span is needed (to run at any time, leave window out)")
    return tuple(_parsed(parse_span)(v, f"{key}[{i}]", r) for i, v in enumerate(value))


def _timezone(value, key, r) -> str:
    name = _string(value, key, r)
    _parsed(zone)(name, key, r)
    return name


def _pattern(rx) -> str:
    """A Python pattern as a JSON Schema (ECMA-262) one: written so that only \\Z differs."""
    return rx.pattern.replace(r"\Z", "$")


def choice(*options: str) -> Kind:
    said = f"{options[0]} or {options[1]}" if len(options) == 2 else f"one of {', '.join(options)}"

    def read(value, key, r):
        if value not in options:
            raise r.fail(key, f"expected {said}, got {value!r}")
        return value

    return Kind(" | ".join(options), "", str, read, {"enum": list(options)})


def mapping(table: Table) -> Kind:
    """A nested mapping whose fields are the enclosing record's own (``backup``)."""
    return Kind("mapping", "", dict, lambda value, key, r: r.table(table, value, key), table=table)


def many(what: str, one: str, table: Table | Variants, at_least_one: bool = False) -> Kind:
    """A list of mappings (``policies``), each read by ``table``; a list of dicts."""

    def read(value, key, r):
        _typed(value, key, r, list, f"a list of {what}")
        if at_least_one and not value:
            raise r.fail(key, f"at least one {one} is needed")
        return [r.table(table, item, f"{key}[{i}]") for i, item in enumerate(value)]

    return Kind(f"list of {what}", "", tuple, read, {"minItems": 1} if at_least_one else {}, table=table, many=one)


DURATION_SCHEMA = {"type": "string", "pattern": _pattern(DURATION_RE)}
SIZE_SCHEMA = [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": _pattern(SIZE_RE)}]

VERSION = Kind("1", "the schema version; this toolkit reads 1", int, _version, {"const": 1})
STRING = Kind("string", "text, not empty", str, _string, {"type": "string", "minLength": 1})
TEXT = Kind("text", "text, possibly empty", str, lambda v, k, r: _typed(v, k, r, str, "a string"), {"type": "string"})
NAME = Kind(
    "name",
    "lower-case letters, digits, _ and -, starting with a letter or digit: `runtime-logs`",
    str,
    _name,
    {"type": "string", "pattern": _pattern(NAME_RE)},
)
PATH = Kind(
    "path",
    "a path; a relative one is taken from the config file's directory, not the working directory",
    Path,
    _path,
    {"type": "string", "minLength": 1},
    relative=True,
)
COUNT = Kind(
    "count", "a whole number, 0 or more (not a string, not true/false)", int, _count, {"type": "integer", "minimum": 0}
)
INTEGER = Kind(
    "integer", "a whole number", int, lambda v, k, r: _typed(v, k, r, int, "an integer"), {"type": "integer"}
)
BOOL = Kind("bool", "true or false", bool, lambda v, k, r: _typed(v, k, r, bool, "true or false"), {"type": "boolean"})
DURATION = Kind(
    "duration", "a whole number and a unit, s m h d or w: `30d`, `10m`, `0s`", Duration, _duration, DURATION_SCHEMA
)
SECONDS = Kind(
    "seconds",
    "a number of seconds above 0 (`10`, `2.5`) or a duration (`2m`)",
    float,
    _seconds,
    {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, DURATION_SCHEMA]},
)
SIZE = Kind(
    "size",
    "bytes (a bare number) or a number and a unit, B KB MB GB TB KiB MiB GiB TiB: `200GiB`, `1.5 TB`",
    Size,
    _parsed(lambda v: parse_size(v, allow_percent=False)),
    {"anyOf": SIZE_SCHEMA},
)


def _share(name: str, of: str) -> Kind:
    """A size, or a share below 100% of ``of``."""
    return Kind(
        name,
        f"a size, or a share below 100% of {of}",
        Size,
        _parsed(lambda v: parse_size(v, allow_percent=True)),
        {"anyOf": [*SIZE_SCHEMA, {"type": "string", "pattern": _pattern(PERCENT_RE)}]},
    )


SHARE = _share("size or share", "the root's filesystem: `15%`")
RATE = Kind(
    "rate",
    "bytes per second, a size and `/s`, at least `1MiB/s`: `100MiB/s`",
    int,
    _parsed(parse_rate),
    {"type": "string", "pattern": _pattern(RATE_RE)},
)
BRAKE = _share(
    "size or share of the policy",
    "the policy's matching files, by count or by bytes, whichever is larger: `25%`",
)
RETAIN = Kind(
    "retention",
    "a whole number and a unit, d w or y (365 days): `7y`",
    Duration,
    _parsed(parse_retain),
    {"type": "string", "pattern": _pattern(RETAIN_RE)},
)
SPANS = Kind(
    "spans",
    "a list of a day or day range (Mon..Sun) and a time span `HH:MM-HH:MM` (24:00 allowed): "
    "`Mon-Fri 17:30-07:30`; a span that crosses midnight belongs to the day it starts on",
    tuple,
    _spans,
    {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": _pattern(SPAN_RE)}},
)
TIMEZONE = Kind(
    "timezone", "an IANA timezone name: `America/New_York`", str, _timezone, {"type": "string", "minLength": 1}
)
GLOBS = Kind(
    "globs",
    "a list of glob patterns relative to the policy root; `*` and `?` stay within a directory, "
    "a `**` segment spans any number of them",
    tuple,
    _globs,
    {"type": "array", "items": {"type": "string", "minLength": 1}},
)
PATH_DATE = Kind(
    "regex",
    "a Python regular expression with the named groups y, m and d (H and M optional)",
    str,
    _path_date,
    {"type": "string", "minLength": 1},
)
KINDS = (
    VERSION,
    STRING,
    TEXT,
    NAME,
    PATH,
    COUNT,
    INTEGER,
    BOOL,
    DURATION,
    SECONDS,
    SIZE,
    SHARE,
    BRAKE,
    RATE,
    RETAIN,
    SPANS,
    TIMEZONE,
    GLOBS,
    PATH_DATE,
)


# --- the tables ----------------------------------------------------------------------------

CALENDAR = ("keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
_PERIOD = {"keep_daily": "day", "keep_weekly": "ISO week", "keep_monthly": "month", "keep_yearly": "year"}

POLICY = Table(
    "policies[]",
    "One policy: which files under `root` expire and when. A policy needs at least one of "
    "`older_than`, a `keep_*` calendar rule, `max_total_size` or `min_free` to expire anything. "
    "Its root must not be `/`, must not overlap `state_dir`, `log_dir` or a destination's path, "
    "and must not contain the config file.",
    (
        Field("name", NAME, REQUIRED, "the policy's name, unique among the policies"),
        Field("root", PATH, REQUIRED, "the directory whose files the policy decides"),
        Field("include", GLOBS, ["**"], "the files under root the policy decides"),
        Field("exclude", GLOBS, [], "files among those included that it never touches"),
        Field("older_than", DURATION, None, "a file expires once its age exceeds this"),
        Field("settle", DURATION, "10m", "a file modified this recently is never touched"),
        Field("keep_last", COUNT, 0, "the newest N matching files are kept whatever their age"),
        Field("missing_ok", BOOL, False, "a missing root is a warning, not a failure"),
        Field("age_from", choice("mtime", "path"), "mtime", "a file's age: from its mtime, or from a date in its path"),
        Field(
            "path_date",
            PATH_DATE,
            None,
            "where a file's date is in its root-relative path; required with age_from: path, refused without it",
            nullable=True,
        ),
        Field("min_age", DURATION, "0s", "the floor no rule, space pressure included, can cross"),
        Field(
            "max_total_size", SIZE, None, "the oldest eligible files expire until the policy's files total at most this"
        ),
        Field(
            "min_free", SHARE, None, "the oldest eligible files expire until the root's filesystem has this much free"
        ),
        Field("protect", GLOBS, [], "files never touched, whatever the other rules say"),
        *(
            Field(k, COUNT, 0, f"the newest file in each of the last N {_PERIOD[k]}s that have files is kept")
            for k in CALENDAR
        ),
        Field(
            "compression",
            choice(*COMPRESSIONS),
            None,
            "this policy's archives' compression, overriding backup.compression (none for data already compressed)",
        ),
        Field(
            "max_delete",
            BRAKE,
            None,
            "the deletion brake: a run that would expire more of the policy than this expires none of it and "
            "exits 1 (ALLOW_LARGE_DELETE=<policy> lets one run through); unset: no brake",
            digest=WHEN_SET,
        ),
        Field(
            "prune_empty_dirs",
            BOOL,
            False,
            "clean removes a directory it emptied that nothing touched within the policy's horizon "
            "(never a root); off, since the core may still write there",
        ),
    ),
)

OBJECT_LOCK = Table(
    "backup.destinations[].object_lock (type: s3)",
    "S3 Object Lock: every object of a run is written locked (archives, .sha256 files, SHA256SUMS, "
    "MANIFEST.json), and verify counts a copy only if each object reports that lock. The bucket "
    "must have Object Lock enabled; backup fails the destination, naming the bucket, if it has not.",
    (
        Field(
            "mode",
            choice("governance", "compliance"),
            None,
            "the lock's mode",
            attr="object_lock_mode",
            digest=WHEN_SET,
        ),
        Field("retain", RETAIN, None, "how long each object stays locked", attr="object_lock_retain", digest=WHEN_SET),
    ),
)

_COMMON = (
    Field("name", NAME, REQUIRED, "the destination's name, unique among the destinations"),
    Field("type", choice("local", "s3"), REQUIRED, "which kind of destination this is"),
)
# Credentials are deliberately not among the keys: they come from the AWS chain only.
DESTINATION = Variants(
    "destination",
    "type",
    {
        "local": Table(
            "backup.destinations[] (type: local)",
            "A directory, typically on another disk or a mount. Two destinations may not be one place "
            "(the same path, one inside the other, or one a link to the other).",
            (*_COMMON, Field("path", PATH, REQUIRED, "the directory the archives are written to")),
        ),
        "s3": Table(
            "backup.destinations[] (type: s3)",
            "A bucket in S3 or an S3-compatible store (MinIO); credentials come from the AWS "
            "environment, never from this file. Two destinations on the same store and bucket "
            "may not have overlapping prefixes. The timeouts decide nothing about deletion.",
            (
                *_COMMON,
                Field("bucket", STRING, REQUIRED, "the bucket the archives are written to"),
                Field("prefix", TEXT, "", "the key prefix, relative and ending in / (`host-a/`); empty: the bucket"),
                Field("endpoint_url", STRING, None, "the store's URL (MinIO); unset: AWS itself"),
                Field("region", STRING, None, "the bucket's region"),
                Field("storage_class", STRING, None, "the storage class the archives are written with"),
                Field("bandwidth", RATE, None, "bytes per second of uploads and of downloads, at most", digest=False),
                Field("object_lock", mapping(OBJECT_LOCK), {}, "see object_lock below"),
                Field(
                    "sse",
                    choice("AES256", "aws:kms"),
                    None,
                    "server-side encryption every upload requests, and verify checks each object reports",
                    digest=WHEN_SET,
                ),
                Field(
                    "sse_kms_key_id",
                    STRING,
                    None,
                    "the KMS key of sse: aws:kms (unset: the bucket's default)",
                    digest=WHEN_SET,
                ),
                Field("connect_timeout", SECONDS, 5, "how long opening a connection may take", digest=False),
                Field("read_timeout", SECONDS, 60, "how long an open request may stay silent", digest=False),
                Field(
                    "deadline",
                    SECONDS,
                    120,
                    "how long one request may take with its retries; none starts that could not end by then",
                    digest=False,
                ),
            ),
        ),
    },
)

BACKUP = Table(
    "backup",
    "Where the archives go, and how many copies must verify before anything is deleted.",
    (
        Field(
            "compression", choice(*COMPRESSIONS), "zstd", "how archives are compressed (zstd at level 3)", digest=False
        ),
        Field(
            "destinations",
            many("destinations", "destination", DESTINATION, at_least_one=True),
            [{"name": "local", "type": "local", "path": "var/backups"}],
            "where the archives are written; see the two tables below",
        ),
        Field(
            "require_verified_copies",
            INTEGER,
            1,
            "destinations that must verify a run's archives before its files are deleted "
            "(1 to the number of destinations)",
        ),
    ),
)

WINDOW = Table(
    "window",
    "When maintenance may run. Outside the window scan, backup, verify, clean and the chain do "
    "nothing and exit 0 (logged as outside_window); a step running when the window closes stops at "
    "its next safe point, within seconds, and the next run inside the window resumes its run. "
    "IGNORE_WINDOW=1 (--ignore-window) runs anyway; restore, find, status and plan never look. "
    "Unset: any time.",
    (
        Field(
            "timezone",
            TIMEZONE,
            None,
            "the timezone the spans are read in; unset: the host's local time",
            attr="window_timezone",
            digest=False,
        ),
        Field("allow", SPANS, None, "the spans of the week maintenance may run in", attr="window", digest=False),
    ),
)

SCRUB = Table(
    "scrub",
    "Re-reading the copies (make scrub, and the end of make maintenance): every run on every "
    "destination is checked as verify checks it at least once per cycle, and a damaged or lost "
    "copy is repaired from another that passes.",
    (
        Field(
            "cycle",
            DURATION,
            "30d",
            "every run on every destination is re-read at least this often",
            attr="scrub_cycle",
            digest=False,
        ),
    ),
)

TOP = Table(
    "top level",
    "Relative paths resolve against the directory of the config file.",
    (
        Field("version", VERSION, REQUIRED, "the schema version of this file", attr=None),
        Field("state_dir", PATH, "var/state", "run manifests and the lock", digest=False),
        Field("log_dir", PATH, "var/log", "every log line of every step, ops-YYYY-MM.log", digest=False),
        Field(
            "pace",
            choice(*PACES),
            DEFAULT_PACE,
            "how hard the steps may use the disk: gentle leaves the trading core its latency "
            "(small paced flushes and unlink batches, rests while the disk is busy); full is the "
            "fastest, for a window when nothing trades",
            digest=False,
        ),
        Field(
            "window",
            mapping(WINDOW),
            {},
            "when maintenance may run; see window below",
        ),
        Field(
            "io_limit",
            RATE,
            None,
            "bytes per second backup reads from the roots, verify and restore read from destinations, "
            "and the toolkit writes to local destinations, at most, each; unset: no limit",
            digest=False,
        ),
        Field("backup", mapping(BACKUP), {}, "the backup settings; see backup below"),
        Field("scrub", mapping(SCRUB), {}, "re-reading the copies; see scrub below"),
        Field("policies", many("policies", "policy", POLICY), [], "the retention policies; see below", nullable=True),
        Field(
            "metrics_file",
            PATH,
            None,
            "a Prometheus textfile rewritten after every step; not inside a policy root",
            digest=False,
        ),
        Field(
            "on_failure",
            STRING,
            None,
            "a shell command run when a run fails (given QTS_OPS_RUN_ID, QTS_OPS_EXIT_CODE)",
            digest=False,
        ),
        Field("on_failure_timeout", DURATION, "60s", "how long on_failure may run", digest=False),
        Field(
            "compact_runs_after",
            DURATION,
            "90d",
            "the state of runs that finished longer ago is packed into state_dir/compacted/",
            digest=False,
        ),
        Field(
            "restore_grace",
            DURATION,
            "30d",
            "how long scan keeps a file restored into its policy root",
            digest=False,
        ),
    ),
)

TABLES = (TOP, WINDOW, SCRUB, BACKUP, *DESTINATION.tables.values(), OBJECT_LOCK, POLICY)
POLICY_KEYS = frozenset(f.key for f in POLICY.fields)
