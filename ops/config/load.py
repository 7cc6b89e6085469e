"""Reading retention.yaml: the YAML (a key written twice refused), then every mapping by its
table (ops/config/fields.py), then the checks no single key can make.

Every error names the file and the key (``retention.yaml: policies[0].older_than: ...``)
and carries exit code 78.
"""

import os
from pathlib import Path

import yaml

from ops.config.fields import REQUIRED, TOP, Table, Variants
from ops.config.model import Config, Destination, Policy
from ops.errors import ConfigError

_ABSENT = object()


class Reader:
    """Walks the YAML tree by the tables, keeping the dotted key for error messages."""

    def __init__(self, path: Path, base: Path):
        self.path, self.base = path, base

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

    def table(self, table: Table | Variants, value, key: str) -> dict:
        """The mapping ``value`` read by ``table``: each field by name, a default where the key
        is not written (None for an unset optional one), a nested mapping's fields flattened in."""
        if isinstance(table, Variants):
            table = self._variant(table, value, key)
        fields = table.fields
        raw = self.mapping(value, key, {f.key for f in fields}, {f.key for f in fields if f.default is REQUIRED})
        out = {}
        for f in fields:
            written = raw.get(f.key, _ABSENT)
            if written is _ABSENT or (written is None and f.nullable):
                if f.default is None:
                    out[f.name] = None
                    continue
                written = f.default
            read = f.kind.read(written, f"{key}.{f.key}" if key else f.key, self)
            if f.kind.inline:
                out.update(read)
            elif f.name is not None:
                out[f.name] = read
        return out

    def _variant(self, variants: Variants, value, key: str) -> Table:
        every = {f.key for t in variants.tables.values() for f in t.fields}
        tag = self.mapping(value, key, every, {variants.tag})[variants.tag]
        if not isinstance(tag, str) or tag not in variants.tables:  # a list or mapping is no tag (nor hashable)
            raise self.fail(
                f"{key}.{variants.tag}",
                f"unknown {variants.what} {variants.tag} {tag!r} (supported: {', '.join(variants.tables)})",
            )
        return variants.tables[tag]


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


def _read_yaml(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: config file not found", hint="pass --config PATH (or CONFIG=PATH to make)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKey as exc:
        raise ConfigError(
            f"{path}: {exc.key}: written twice (lines {exc.first} and {exc.second}); YAML would silently keep the last",
            hint="keep one of them",
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def load_config(path: str | os.PathLike) -> Config:
    path = Path(path)
    doc = _read_yaml(path)
    r = Reader(path, path.resolve().parent)
    values = r.table(TOP, doc if doc is not None else {}, "")
    values["destinations"] = tuple(Destination(**d) for d in values["destinations"])
    values["policies"] = tuple(Policy(**p) for p in values["policies"])
    config = Config(path=path, **values)
    _check_destinations(config, r)
    _check_policies(config, r)
    if config.window_timezone is not None and config.window is None:
        raise r.fail("window.allow", "required when window is written (a list of spans like 'Mon-Fri 17:30-07:30')")
    return config


# --- what no single key can say ------------------------------------------------------------


def _check_destinations(config: Config, r: Reader) -> None:
    destinations = config.destinations
    for i, d in enumerate(destinations):
        key = f"backup.destinations[{i}]"
        if d.name in {x.name for x in destinations[:i]}:
            raise r.fail(f"{key}.name", f"duplicate destination name {d.name!r}")
        if (d.object_lock_mode is None) != (d.object_lock_retain is None):
            raise r.fail(f"{key}.object_lock", "needs both mode and retain")
        if d.sse_kms_key_id is not None and d.sse != "aws:kms":
            raise r.fail(f"{key}.sse_kms_key_id", "is only used with sse: aws:kms")
        prefix = d.prefix
        if prefix and (not prefix.endswith("/") or prefix.startswith("/") or ".." in prefix.split("/")):
            raise r.fail(f"{key}.prefix", f"expected a relative key prefix ending in '/', like host-a/, got {prefix!r}")
    quorum = config.require_verified_copies
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


def _check_policies(config: Config, r: Reader) -> None:
    reserved = {"state_dir": config.state_dir, "log_dir": config.log_dir}
    reserved.update({f"backup.destinations[{i}].path": d.path for i, d in enumerate(config.destinations) if d.path})
    config_file = os.path.abspath(config.path)
    for i, p in enumerate(config.policies):
        key = f"policies[{i}]"
        if p.name in {x.name for x in config.policies[:i]}:
            raise r.fail(f"{key}.name", f"duplicate policy name {p.name!r}")
        if p.root == Path("/"):
            raise r.fail(f"{key}.root", "a policy root must not be /")
        for what, place in reserved.items():
            if _within(place, p.root) or _within(p.root, place):
                raise r.fail(
                    f"{key}.root",
                    f"{p.root} overlaps {what} ({place}); a policy must never reach the toolkit's own files",
                )
        if _within(Path(config_file), p.root):  # expired with the data, the next run would find no config
            raise r.fail(
                f"{key}.root", f"{p.root} contains the config file {config_file}; a policy must never reach it"
            )
        if p.age_from == "path" and p.path_date is None:
            raise r.fail(f"{key}.path_date", "required with age_from: path (a regex with named groups y, m, d)")
        if p.path_date is not None and p.age_from != "path":
            raise r.fail(f"{key}.path_date", "is only read with age_from: path; set that too, or remove path_date")
        if p.older_than is None and not p.calendar and not p.has_space_rules:
            raise r.fail(
                f"{key}.older_than",
                "required unless keep_daily/weekly/monthly/yearly, max_total_size or min_free says when files expire",
            )
    metrics_file = config.metrics_file
    if metrics_file is not None:
        for what, place in reserved.items():
            if metrics_file == place:
                raise r.fail("metrics_file", f"{metrics_file} is {what}")
        for i, p in enumerate(config.policies):
            if _within(metrics_file, p.root):
                raise r.fail(
                    "metrics_file", f"{metrics_file} lies inside policies[{i}].root; it would be expired with the data"
                )


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
