"""retention.yaml (schema version 1): loaded and validated here and nowhere else.

Every error names the file and the key (``retention.yaml: policies[0].older_than: ...``)
and carries exit code 78.
"""

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ops.errors import ConfigError
from ops.retention.globs import compile_globs

COMPRESSIONS = ("zstd", "gzip", "none")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
DURATION_RE = re.compile(r"^(\d+)([smhdw])$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


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
    type: str
    path: Path


@dataclass(frozen=True)
class Policy:
    name: str
    root: Path
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    older_than: Duration
    settle: Duration
    keep_last: int
    missing_ok: bool


@dataclass(frozen=True)
class Config:
    path: Path
    state_dir: Path
    log_dir: Path
    compression: str
    require_verified_copies: int
    destinations: tuple[Destination, ...]
    policies: tuple[Policy, ...] = field(default=())

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

    def duration(self, value, key: str) -> Duration:
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None

    def directory(self, value, key: str, base: Path) -> Path:
        return Path(os.path.normpath(base / self.string(value, key)))


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def load_config(path: str | os.PathLike) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found", hint="pass --config PATH (or CONFIG=PATH to make)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    base = path.resolve().parent
    r = _Reader(path)

    top = r.mapping(doc if doc is not None else {}, "", {"version", "state_dir", "log_dir", "backup", "policies"}, {"version"})
    if top["version"] != 1 or isinstance(top["version"], bool):
        raise r.fail("version", f"unsupported schema version {top['version']!r} (this toolkit reads version 1)")
    state_dir = r.directory(top.get("state_dir", "var/state"), "state_dir", base)
    log_dir = r.directory(top.get("log_dir", "var/log"), "log_dir", base)

    backup = r.mapping(top.get("backup", {}), "backup", {"compression", "require_verified_copies", "destinations"})
    compression = backup.get("compression", "zstd")
    if compression not in COMPRESSIONS:
        raise r.fail("backup.compression", f"expected one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    raw_dests = backup.get("destinations", [{"name": "local", "type": "local", "path": "var/backups"}])
    r.typed(raw_dests, "backup.destinations", list, "a list of destinations")
    if not raw_dests:
        raise r.fail("backup.destinations", "at least one destination is needed")
    destinations = []
    for i, raw in enumerate(raw_dests):
        key = f"backup.destinations[{i}]"
        d = r.mapping(raw, key, {"name", "type", "path"}, {"name", "type", "path"})
        name = r.string(d["name"], f"{key}.name")
        if not NAME_RE.match(name):
            raise r.fail(f"{key}.name", f"{name!r} must match [a-z0-9][a-z0-9_-]*")
        if name in {x.name for x in destinations}:
            raise r.fail(f"{key}.name", f"duplicate destination name {name!r}")
        if d["type"] != "local":
            raise r.fail(f"{key}.type", f"unknown destination type {d['type']!r} (supported: local)")
        destinations.append(Destination(name, "local", r.directory(d["path"], f"{key}.path", base)))
    quorum = r.typed(backup.get("require_verified_copies", 1), "backup.require_verified_copies", int, "an integer")
    if not 1 <= quorum <= len(destinations):
        raise r.fail("backup.require_verified_copies", f"must be between 1 and the number of destinations ({len(destinations)}), got {quorum}")

    reserved = {"state_dir": state_dir, "log_dir": log_dir}
    reserved.update({f"backup.destinations[{i}].path": d.path for i, d in enumerate(destinations)})
    policies = []
    for i, raw in enumerate(r.typed(top.get("policies", []) or [], "policies", list, "a list of policies")):
        key = f"policies[{i}]"
        p = r.mapping(raw, key, {"name", "root", "include", "exclude", "older_than", "settle", "keep_last", "missing_ok"}, {"name", "root", "older_than"})
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
                raise r.fail(f"{key}.root", f"{root} overlaps {what} ({place}); a policy must never reach the toolkit's own files")
        keep_last = r.typed(p.get("keep_last", 0), f"{key}.keep_last", int, "an integer")
        if keep_last < 0:
            raise r.fail(f"{key}.keep_last", f"must be 0 or more, got {keep_last}")
        policies.append(Policy(
            name=name,
            root=root,
            include=r.globs(p.get("include", ["**"]), f"{key}.include"),
            exclude=r.globs(p.get("exclude", []), f"{key}.exclude"),
            older_than=r.duration(p["older_than"], f"{key}.older_than"),
            settle=r.duration(p.get("settle", "10m"), f"{key}.settle"),
            keep_last=keep_last,
            missing_ok=r.typed(p.get("missing_ok", False), f"{key}.missing_ok", bool, "true or false"),
        ))
    return Config(path, state_dir, log_dir, compression, quorum, tuple(destinations), tuple(policies))
