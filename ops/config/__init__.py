"""retention.yaml (schema version 1): loaded and validated here and nowhere else.

Every error names the file and the key (``retention.yaml: policies[0].older_than: ...``)
and carries exit code 78.
"""

import hashlib
import json
import os
import re
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from ops.config.globs import compile_globs
from ops.errors import ConfigError

COMPRESSIONS = ("zstd", "gzip", "none")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*\Z")  # \Z: "$" would let a trailing newline in
DURATION_RE = re.compile(r"^([0-9]+)([smhdw])\Z")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
SIZE_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?) ?(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\Z")
SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}
PERCENT_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)%\Z")
# Credentials are deliberately not among the keys: they come from the AWS chain only.
DESTINATION_KEYS = {
    "local": {"name", "type", "path"},
    "s3": {
        "name",
        "type",
        "bucket",
        "prefix",
        "endpoint_url",
        "region",
        "storage_class",
        "connect_timeout",
        "read_timeout",
        "deadline",
    },
}
# How long an S3 request may wait (seconds): patience, which decides nothing about deletion.
TIMEOUT_KEYS = ("connect_timeout", "read_timeout", "deadline")
CALENDAR = ("keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
POLICY_KEYS = {
    "name",
    "root",
    "include",
    "exclude",
    "older_than",
    "settle",
    "keep_last",
    "missing_ok",
    "age_from",
    "path_date",
    "min_age",
    "max_total_size",
    "min_free",
    "protect",
    "compression",
    "prune_empty_dirs",
    *CALENDAR,
}


@dataclass(frozen=True)
class Duration:
    text: str
    seconds: int

    @property
    def ns(self) -> int:
        return self.seconds * 1_000_000_000


@dataclass(frozen=True)
class Destination:
    name: str
    type: str  # local | s3
    path: Path | None = None  # local
    bucket: str | None = None  # s3, and the rest below
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    storage_class: str | None = None
    connect_timeout: float = 5.0  # seconds to open a connection
    read_timeout: float = 60.0  # seconds of silence an open request is given
    deadline: float = 120.0  # seconds one request may take with its retries; none starts that could not end by then


@dataclass(frozen=True)
class Size:
    """A byte count (``200GiB``) or a share of the root's filesystem (``15%``)."""

    text: str
    bytes: int = 0
    percent: float | None = None

    def of(self, filesystem_bytes: int) -> int:
        return self.bytes if self.percent is None else int(filesystem_bytes * self.percent / 100)


@dataclass(frozen=True)
class Policy:
    name: str
    root: Path
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    older_than: Duration | None
    settle: Duration
    keep_last: int
    missing_ok: bool
    age_from: str = "mtime"  # mtime | path
    path_date: str | None = None  # regex with named groups y, m, d (optional H, M)
    min_age: Duration = Duration("0s", 0)
    max_total_size: Size | None = None
    min_free: Size | None = None
    protect: tuple[str, ...] = ()
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    compression: str | None = None  # overrides backup.compression (none for parquet and other packed data)
    prune_empty_dirs: bool = False  # remove directories clean emptied (never a root); off: the core may write there

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


@dataclass(frozen=True)
class Config:
    path: Path
    state_dir: Path
    log_dir: Path
    compression: str
    require_verified_copies: int
    destinations: tuple[Destination, ...]
    policies: tuple[Policy, ...] = field(default=())
    metrics_file: Path | None = None  # Prometheus textfile, rewritten atomically after every step
    on_failure: str | None = None  # shell command run when a run fails (QTS_OPS_RUN_ID, QTS_OPS_EXIT_CODE)
    on_failure_timeout: Duration = Duration("60s", 60)
    compact_runs_after: Duration = Duration("90d", 90 * 86400)
    restore_grace: Duration = Duration("30d", 30 * 86400)  # scan keeps a file restored into its root this long

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
        decide what may be deleted (every policy, every destination, the quorum).

        A run carries it from scan on; every later step and any resume compare it, so a run
        is never finished under rules other than those it was scanned and copied under.
        Settings that decide nothing about deletion (logs, metrics, hooks) are left out:
        changing them does not orphan a run.
        """
        rules = {
            "policies": [asdict(p) for p in self.policies],
            "destinations": [{k: v for k, v in asdict(d).items() if k not in TIMEOUT_KEYS} for d in self.destinations],
            "require_verified_copies": self.require_verified_copies,
        }
        canonical = json.dumps(rules, sort_keys=True, separators=(",", ":"), default=str)
        return {
            "host": socket.gethostname(),
            "config": str(self.path.resolve()),
            "digest": hashlib.sha256(canonical.encode()).hexdigest(),
        }


def parse_size(text, allow_percent: bool) -> Size:
    if type(text) is int and text >= 0:  # a bare YAML number is bytes
        return Size(str(text), bytes=text)
    if isinstance(text, str):
        m = PERCENT_RE.match(text)
        if m and allow_percent and float(m.group(1)) < 100:
            return Size(text, percent=float(m.group(1)))
        m = SIZE_RE.match(text)
        if m:
            return Size(text, bytes=int(float(m.group(1)) * SIZE_UNITS[m.group(2)]))
    what = "a size like 200GiB" + (" or a share like 15%" if allow_percent else "")
    raise ValueError(f"expected {what}, got {text!r}")


def compile_path_date(pattern: str) -> re.Pattern:
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    missing = {"y", "m", "d"} - set(rx.groupindex)
    if missing:
        raise ValueError(f"needs the named groups y, m and d (missing: {', '.join(sorted(missing))})")
    return rx


def parse_duration(text: str) -> Duration:
    m = DURATION_RE.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"expected a duration like 30d (units s m h d w), got {text!r}")
    return Duration(text, int(m.group(1)) * UNIT_SECONDS[m.group(2)])


class _Reader:
    """Walks the YAML tree keeping the dotted key for error messages."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {message}")

    def mapping(self, value, key: str, allowed: set[str], required: set[str] = frozenset()) -> dict:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {type(value).__name__}")
        for k in value:
            if k not in allowed:
                raise self.fail(f"{key}.{k}" if key else str(k), f"unknown key (allowed: {', '.join(sorted(allowed))})")
        for k in sorted(required):
            if k not in value:
                raise self.fail(f"{key}.{k}" if key else k, "required key is missing")
        return value

    def typed(self, value, key: str, kind, what: str):
        # bool is an int in Python; a YAML 'yes' must not pass as a count.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(key, f"expected {what}, got {value!r}")
        return value

    def string(self, value, key: str) -> str:
        value = self.typed(value, key, str, "a string")
        if not value:
            raise self.fail(key, "must not be empty")
        return value

    def globs(self, value, key: str) -> tuple[str, ...]:
        value = self.typed(value, key, list, "a list of glob strings")
        patterns = tuple(self.string(v, f"{key}[{i}]") for i, v in enumerate(value))
        for i, pattern in enumerate(patterns):
            try:
                compile_globs([pattern])
            except ValueError as exc:
                raise self.fail(f"{key}[{i}]", str(exc)) from None
        return patterns

    def choice(self, value, key: str, allowed: tuple[str, ...]) -> str:
        if value not in allowed:
            raise self.fail(key, f"expected one of {', '.join(allowed)}, got {value!r}")
        return value

    def size(self, value, key: str, allow_percent: bool = False) -> Size:
        try:
            return parse_size(value, allow_percent)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None

    def count(self, value, key: str) -> int:
        value = self.typed(value, key, int, "an integer")
        if value < 0:
            raise self.fail(key, f"must be 0 or more, got {value}")
        return value

    def duration(self, value, key: str) -> Duration:
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None

    def seconds(self, value, key: str) -> float:
        """A positive number of seconds (``10``, ``2.5``) or a duration (``2m``)."""
        if isinstance(value, str):
            seconds = self.duration(value, key).seconds
        elif isinstance(value, (int, float)) and not isinstance(value, bool):  # a YAML 'yes' is no number
            seconds = value
        else:
            raise self.fail(key, f"expected a number of seconds or a duration like 30s, got {value!r}")
        if not 0 < seconds < float("inf"):  # NaN fails this too
            raise self.fail(key, f"must be a finite number of seconds above 0, got {value!r}")
        return float(seconds)

    def directory(self, value, key: str, base: Path) -> Path:
        return Path(os.path.normpath(base / self.string(value, key)))


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: str, first: int, second: int):
        super().__init__(f"{key}: written twice")
        self.key, self.first, self.second = key, first, second


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping: PyYAML would keep the
    last silently, so ``older_than: 30d`` followed by ``older_than: 1d`` would delete at 1d.
    (Keys merged in with ``<<`` may still be overridden: that is what a merge is for.)"""

    def construct_document(self, node):
        self._keys = {}  # id of each mapping node -> its dotted key, to name a duplicate
        stack = [(node, "")]
        while stack:
            n, key = stack.pop()
            if id(n) in self._keys:  # an alias: that node was named already (and may be its own ancestor)
                continue
            if isinstance(n, yaml.MappingNode):
                self._keys[id(n)] = key
                stack.extend(
                    (v, f"{key}.{k.value}" if key else str(k.value))
                    for k, v in n.value
                    if isinstance(k, yaml.ScalarNode)
                )
            elif isinstance(n, yaml.SequenceNode):
                self._keys[id(n)] = key
                stack.extend((v, f"{key}[{i}]") for i, v in enumerate(n.value))
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            lines = {}
            for k, _ in node.value:
                if not isinstance(k, yaml.ScalarNode) or k.tag == "tag:yaml.org,2002:merge":
                    continue
                name = self.construct_object(k)
                if name in lines:
                    outer = self._keys.get(id(node), "")
                    raise _DuplicateKey(f"{outer}.{name}" if outer else str(name), lines[name], k.start_mark.line + 1)
                lines[name] = k.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _same_s3_place(a: Destination, b: Destination) -> bool:
    """Whether two S3 destinations would write under the same keys: the same store and
    bucket, and one prefix a prefix of the other ("" holds every prefix)."""

    def store(d: Destination) -> str:
        return (d.endpoint_url or "").rstrip("/").lower()  # None: AWS itself

    nested = a.prefix.startswith(b.prefix) or b.prefix.startswith(a.prefix)
    return (store(a), a.bucket) == (store(b), b.bucket) and nested


def _within(inner: Path, outer: Path) -> bool:
    """Whether ``inner`` is ``outer`` or beneath it, as written or through symlinks."""
    for a, b in ((inner, outer), (Path(os.path.realpath(inner)), Path(os.path.realpath(outer)))):
        if a == b or b in a.parents:
            return True
    return False


def load_config(path: str | os.PathLike) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: config file not found", hint="pass --config PATH (or CONFIG=PATH to make)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKey as exc:
        raise ConfigError(
            f"{path}: {exc.key}: written twice (lines {exc.first} and {exc.second}); YAML would silently keep the last",
            hint="keep one of them",
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    base = path.resolve().parent
    r = _Reader(path)

    top = r.mapping(
        doc if doc is not None else {},
        "",
        {
            "version",
            "state_dir",
            "log_dir",
            "backup",
            "policies",
            "metrics_file",
            "on_failure",
            "on_failure_timeout",
            "compact_runs_after",
            "restore_grace",
        },
        {"version"},
    )
    if type(top["version"]) is not int or top["version"] != 1:
        raise r.fail("version", f"unsupported schema version {top['version']!r} (this toolkit reads version 1)")
    state_dir = r.directory(top.get("state_dir", "var/state"), "state_dir", base)
    log_dir = r.directory(top.get("log_dir", "var/log"), "log_dir", base)

    backup = r.mapping(top.get("backup", {}), "backup", {"compression", "require_verified_copies", "destinations"})
    compression = r.choice(backup.get("compression", "zstd"), "backup.compression", COMPRESSIONS)
    raw_dests = backup.get("destinations", [{"name": "local", "type": "local", "path": "var/backups"}])
    r.typed(raw_dests, "backup.destinations", list, "a list of destinations")
    if not raw_dests:
        raise r.fail("backup.destinations", "at least one destination is needed")
    destinations = []
    for i, raw in enumerate(raw_dests):
        key = f"backup.destinations[{i}]"
        kind = r.mapping(raw, key, DESTINATION_KEYS["local"] | DESTINATION_KEYS["s3"], {"type"})["type"]
        if kind not in DESTINATION_KEYS:
            raise r.fail(f"{key}.type", f"unknown destination type {kind!r} (supported: local, s3)")
        d = r.mapping(
            raw,
            key,
            DESTINATION_KEYS[kind],
            {"name", "type", "path"} if kind == "local" else {"name", "type", "bucket"},
        )
        name = r.string(d["name"], f"{key}.name")
        if not NAME_RE.match(name):
            raise r.fail(f"{key}.name", f"{name!r} must match [a-z0-9][a-z0-9_-]*")
        if name in {x.name for x in destinations}:
            raise r.fail(f"{key}.name", f"duplicate destination name {name!r}")
        if kind == "local":
            destinations.append(Destination(name, "local", path=r.directory(d["path"], f"{key}.path", base)))
            continue
        prefix = r.typed(d.get("prefix", ""), f"{key}.prefix", str, "a string")
        if prefix and (not prefix.endswith("/") or prefix.startswith("/") or ".." in prefix.split("/")):
            raise r.fail(f"{key}.prefix", f"expected a relative key prefix ending in '/', like host-a/, got {prefix!r}")
        destinations.append(
            Destination(
                name,
                "s3",
                bucket=r.string(d["bucket"], f"{key}.bucket"),
                prefix=prefix,
                **{k: r.string(d[k], f"{key}.{k}") for k in ("endpoint_url", "region", "storage_class") if k in d},
                **{k: r.seconds(d[k], f"{key}.{k}") for k in TIMEOUT_KEYS if k in d},
            )
        )
    quorum = r.typed(backup.get("require_verified_copies", 1), "backup.require_verified_copies", int, "an integer")
    if not 1 <= quorum <= len(destinations):
        raise r.fail(
            "backup.require_verified_copies",
            f"must be between 1 and the number of destinations ({len(destinations)}), got {quorum}",
        )

    for i, d in enumerate(destinations):
        for j, other in enumerate(destinations[:i]):
            # Two names for one place would count one copy twice towards the quorum.
            if d.path and other.path and (_within(d.path, other.path) or _within(other.path, d.path)):
                raise r.fail(
                    f"backup.destinations[{i}].path",
                    f"{d.path} is the same place as, or overlaps, "
                    f"backup.destinations[{j}].path ({other.path}); each copy needs a place of its own",
                )
            if d.type == other.type == "s3" and _same_s3_place(d, other):
                raise r.fail(
                    f"backup.destinations[{i}].prefix",
                    f"bucket {d.bucket} prefix {d.prefix!r} overlaps "
                    f"backup.destinations[{j}] (prefix {other.prefix!r}) on the same store; "
                    "each copy needs a place of its own",
                )

    reserved = {"state_dir": state_dir, "log_dir": log_dir}
    reserved.update({f"backup.destinations[{i}].path": d.path for i, d in enumerate(destinations) if d.path})
    policies = []
    raw_policies = top.get("policies")
    for i, raw in enumerate(
        r.typed([] if raw_policies is None else raw_policies, "policies", list, "a list of policies")
    ):
        key = f"policies[{i}]"
        p = r.mapping(raw, key, POLICY_KEYS, {"name", "root"})
        name = r.string(p["name"], f"{key}.name")
        if not NAME_RE.match(name):
            raise r.fail(f"{key}.name", f"{name!r} must match [a-z0-9][a-z0-9_-]*")
        if name in {x.name for x in policies}:
            raise r.fail(f"{key}.name", f"duplicate policy name {name!r}")
        root = r.directory(p["root"], f"{key}.root", base)
        if root == Path("/"):
            raise r.fail(f"{key}.root", "a policy root must not be /")
        for what, place in reserved.items():
            if _within(place, root) or _within(root, place):
                raise r.fail(
                    f"{key}.root",
                    f"{root} overlaps {what} ({place}); a policy must never reach the toolkit's own files",
                )
        if _within(Path(os.path.abspath(path)), root):  # expired with the data, the next run would find no config
            raise r.fail(
                f"{key}.root", f"{root} contains the config file {os.path.abspath(path)}; a policy must never reach it"
            )
        age_from = p.get("age_from", "mtime")
        if age_from not in ("mtime", "path"):
            raise r.fail(f"{key}.age_from", f"expected mtime or path, got {age_from!r}")
        path_date = p.get("path_date")
        if age_from == "path" and path_date is None:
            raise r.fail(f"{key}.path_date", "required with age_from: path (a regex with named groups y, m, d)")
        if path_date is not None and age_from != "path":
            raise r.fail(f"{key}.path_date", "is only read with age_from: path; set that too, or remove path_date")
        if path_date is not None:
            try:
                compile_path_date(r.string(path_date, f"{key}.path_date"))
            except ValueError as exc:
                raise r.fail(f"{key}.path_date", str(exc)) from None
        policy = Policy(
            name=name,
            root=root,
            include=r.globs(p.get("include", ["**"]), f"{key}.include"),
            exclude=r.globs(p.get("exclude", []), f"{key}.exclude"),
            older_than=r.duration(p["older_than"], f"{key}.older_than") if "older_than" in p else None,
            settle=r.duration(p.get("settle", "10m"), f"{key}.settle"),
            keep_last=r.count(p.get("keep_last", 0), f"{key}.keep_last"),
            missing_ok=r.typed(p.get("missing_ok", False), f"{key}.missing_ok", bool, "true or false"),
            age_from=age_from,
            path_date=path_date,
            min_age=r.duration(p.get("min_age", "0s"), f"{key}.min_age"),
            max_total_size=r.size(p["max_total_size"], f"{key}.max_total_size") if "max_total_size" in p else None,
            min_free=r.size(p["min_free"], f"{key}.min_free", allow_percent=True) if "min_free" in p else None,
            protect=r.globs(p.get("protect", []), f"{key}.protect"),
            **{k: r.count(p.get(k, 0), f"{key}.{k}") for k in CALENDAR},
            compression=r.choice(p["compression"], f"{key}.compression", COMPRESSIONS) if "compression" in p else None,
            prune_empty_dirs=r.typed(
                p.get("prune_empty_dirs", False), f"{key}.prune_empty_dirs", bool, "true or false"
            ),
        )
        if policy.older_than is None and not policy.calendar and not policy.has_space_rules:
            raise r.fail(
                f"{key}.older_than",
                "required unless keep_daily/weekly/monthly/yearly, max_total_size or min_free says when files expire",
            )
        policies.append(policy)
    metrics_file = r.directory(top["metrics_file"], "metrics_file", base) if "metrics_file" in top else None
    if metrics_file is not None:
        for what, place in reserved.items():
            if metrics_file == place:
                raise r.fail("metrics_file", f"{metrics_file} is {what}")
        for i, p in enumerate(policies):
            if _within(metrics_file, p.root):
                raise r.fail(
                    "metrics_file", f"{metrics_file} lies inside policies[{i}].root; it would be expired with the data"
                )
    return Config(
        path,
        state_dir,
        log_dir,
        compression,
        quorum,
        tuple(destinations),
        tuple(policies),
        metrics_file=metrics_file,
        on_failure=r.string(top["on_failure"], "on_failure") if "on_failure" in top else None,
        on_failure_timeout=r.duration(top.get("on_failure_timeout", "60s"), "on_failure_timeout"),
        compact_runs_after=r.duration(top.get("compact_runs_after", "90d"), "compact_runs_after"),
        restore_grace=r.duration(top.get("restore_grace", "30d"), "restore_grace"),
    )
