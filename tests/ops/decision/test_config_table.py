"""The config's field tables (ops/config/fields.py) and what is made from them: the records'
defaults, the digest a run is scanned under, docs/config-reference.md and
docs/retention.schema.json (which retention.yaml and the demo's config must satisfy)."""

import copy
import json
import re
import textwrap
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from ops.config import Destination, Policy, load_config
from ops.config.fields import DESTINATION, POLICY, REQUIRED, TABLES, record_fields
from ops.config.reference import SCHEMA, generated, json_schema
from ops.demo import CONFIG as DEMO_CONFIG
from ops.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]

# A config with every kind of key, its paths absolute so that the digest depends on nothing
# but this text. The digest is recorded in every run's manifests: a change to how it is
# computed (a field renamed, added to or dropped from the digest, a default changed) would
# make every unfinished run refuse to continue after an upgrade, so it must be a decision.
PINNED = textwrap.dedent(r"""
    version: 1
    state_dir: /srv/qts-ops/state
    log_dir: /srv/qts-ops/log
    metrics_file: /srv/qts-ops/metrics/qts_ops.prom
    on_failure: logger -t qts-ops failed
    backup:
      compression: zstd
      require_verified_copies: 2
      destinations:
        - {name: local, type: local, path: /mnt/backup/qts}
        - name: offsite
          type: s3
          bucket: qts-archive
          prefix: host-a/
          endpoint_url: http://127.0.0.1:9000
          region: eu-west-1
          storage_class: STANDARD_IA
          connect_timeout: 3
          deadline: 2m
    policies:
      - name: logs
        root: /data/qts/logs
        include: ["**/*.log"]
        exclude: ["**/current.log"]
        older_than: 30d
        settle: 5m
        keep_last: 5
        missing_ok: true
      - name: ticks
        root: /data/qts/ticks
        include: ["**/*.parquet"]
        age_from: path
        path_date: '(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})'
        older_than: 90d
        compression: none
        prune_empty_dirs: true
      - name: dumps
        root: /data/qts/dumps
        keep_daily: 7
        keep_weekly: 4
        keep_monthly: 12
        keep_yearly: 2
        protect: ["**/*.keep"]
        min_age: 2d
        max_total_size: 200GiB
      - name: pressure
        root: /data/qts/scratch
        min_free: 15%
    """)
PINNED_DIGEST = "48ba0825e6f4503c13fb4bb33bc9896c049bea1e4853d9e6cae35a2a76460d6d"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "retention.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --- the digest ----------------------------------------------------------------------------


def test_the_digest_of_a_fixed_config_is_pinned(tmp_path):
    assert load_config(write(tmp_path, PINNED)).identity()["digest"] == PINNED_DIGEST


def test_the_digest_leaves_out_what_decides_nothing_about_deletion(tmp_path):
    doc = yaml.safe_load(PINNED)
    doc["backup"]["compression"] = "gzip"
    doc["backup"]["destinations"][1].update(connect_timeout=10, read_timeout=5, deadline="10m")
    doc.update(log_dir="/srv/other/log", on_failure_timeout="5m", compact_runs_after="1d", restore_grace="1d")
    assert load_config(write(tmp_path, yaml.safe_dump(doc))).identity()["digest"] == PINNED_DIGEST


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["backup"].update(require_verified_copies=1),
        lambda d: d["backup"]["destinations"][1].update(prefix="host-b/"),
        lambda d: d["policies"][2].update(keep_weekly=5),
        lambda d: d["policies"][3].update(settle="10m", include=["**/*"]),
        lambda d: d["policies"][0].update(max_delete="25%"),  # unset, it leaves the pinned digest alone
    ],
    ids=["quorum", "s3_prefix", "calendar", "include", "brake"],
)
def test_the_digest_follows_the_rules(tmp_path, change):
    doc = yaml.safe_load(PINNED)
    change(doc)
    assert load_config(write(tmp_path, yaml.safe_dump(doc))).identity()["digest"] != PINNED_DIGEST


def test_a_default_written_out_leaves_the_digest_alone(tmp_path):
    doc = yaml.safe_load(PINNED)
    doc["policies"][3].update(settle="10m", include=["**"], prune_empty_dirs=False, keep_last=0)
    assert load_config(write(tmp_path, yaml.safe_dump(doc))).identity()["digest"] == PINNED_DIGEST


# --- the records come from the tables ------------------------------------------------------


def test_a_policy_read_with_every_default_equals_the_dataclass_defaults(tmp_path):
    cfg = load_config(write(tmp_path, "version: 1\npolicies: [{name: p, root: data, older_than: 7d}]\n"))
    (p,) = cfg.policies
    assert p == Policy(name="p", root=tmp_path / "data", older_than=p.older_than)


def test_each_destination_type_holds_the_dataclass_defaults_of_the_other(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            "version: 1\nbackup:\n  destinations:\n"
            "    - {name: local, type: local, path: b}\n    - {name: offsite, type: s3, bucket: x}\n",
        )
    )
    local, s3 = cfg.destinations
    assert local == Destination(name="local", type="local", path=tmp_path / "b")
    assert s3 == Destination(name="offsite", type="s3", bucket="x")
    assert (s3.prefix, s3.connect_timeout, s3.read_timeout, s3.deadline) == ("", 5.0, 60.0, 120.0)


def test_every_table_key_is_a_record_field_and_the_policy_keeps_its_field_order():
    assert [f.name for f in fields(Policy)] == [f.key for f in POLICY.fields]
    # Policy(...) is built positionally from its first eight fields in tests and tools.
    assert [f.name for f in fields(Policy)][:8] == [
        "name",
        "root",
        "include",
        "exclude",
        "older_than",
        "settle",
        "keep_last",
        "missing_ok",
    ]
    # Every key of a destination's tables, a nested mapping's (object_lock) by its field's name.
    assert {f.name for f in fields(Destination)} == {f.name for f, _ in record_fields(*DESTINATION.tables.values())}
    assert {"object_lock_mode", "object_lock_retain", "sse", "bandwidth"} <= {f.name for f in fields(Destination)}


def test_an_unknown_key_lists_exactly_the_table_keys(tmp_path):
    path = write(tmp_path, "version: 1\npolicies: [{name: p, root: d, older_than: 1d, olderthan: 2d}]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    allowed = re.search(r"\(allowed: (.*)\)", str(info.value)).group(1).split(", ")
    assert allowed == sorted(f.key for f in POLICY.fields)
    assert [f.key for f in POLICY.fields if f.default is REQUIRED] == ["name", "root"]


# --- the generated files -------------------------------------------------------------------


@pytest.mark.parametrize("name", list(generated()))
def test_the_generated_file_is_up_to_date_with_the_tables(name):
    path = REPO / name
    assert path.exists() and path.read_text(encoding="utf-8") == generated()[name], (
        f"{name} is out of date with ops/config/fields.py: run make config-reference and commit it"
    )


def test_the_reference_names_every_key_of_every_table():
    text = generated()["docs/config-reference.md"]
    for table in TABLES:
        section = text.split(f"## {table.where}\n", 1)[1].split("\n## ", 1)[0]
        for f in table.fields:
            assert f"| `{f.key}`" in section, (table.where, f.key)


# --- the JSON Schema -----------------------------------------------------------------------
# A validator for the part of JSON Schema (2020-12) that reference.py emits; a keyword it
# does not know fails the test below rather than being ignored.

KNOWN = {
    "$schema",
    "title",
    "description",
    "default",
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "enum",
    "const",
    "minLength",
    "minimum",
    "exclusiveMinimum",
    "pattern",
    "anyOf",
    "oneOf",
}
TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def errors(schema: dict, value, at: str = "") -> list[str]:
    """Why ``value`` does not satisfy ``schema`` (empty: it does)."""
    out = []
    if "type" in schema and not TYPES[schema["type"]](value):
        return [f"{at}: not {schema['type']}"]
    if "const" in schema and not (value == schema["const"] and type(value) is type(schema["const"])):
        out.append(f"{at}: not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{at}: not one of {schema['enum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            out.append(f"{at}: too short")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(f"{at}: does not match {schema['pattern']}")
    if TYPES["number"](value):
        if value < schema.get("minimum", value):
            out.append(f"{at}: below {schema['minimum']}")
        if "exclusiveMinimum" in schema and not value > schema["exclusiveMinimum"]:
            out.append(f"{at}: not above {schema['exclusiveMinimum']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            out.append(f"{at}: too few items")
        for i, item in enumerate(value):
            out += errors(schema.get("items", {}), item, f"{at}[{i}]")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        out += [f"{at}.{k}: required" for k in schema.get("required", []) if k not in value]
        for k, v in value.items():
            if k in props:
                out += errors(props[k], v, f"{at}.{k}")
            elif schema.get("additionalProperties", True) is False:
                out.append(f"{at}.{k}: not allowed")
    if "anyOf" in schema and all(errors(s, value, at) for s in schema["anyOf"]):
        out.append(f"{at}: matches none of anyOf")
    if "oneOf" in schema and sum(not errors(s, value, at) for s in schema["oneOf"]) != 1:
        out.append(f"{at}: does not match exactly one of oneOf")
    return out


def _keywords(schema) -> set[str]:
    if isinstance(schema, list):
        return set().union(*map(_keywords, schema)) if schema else set()
    if not isinstance(schema, dict):
        return set()
    found = set(schema)
    for k, v in schema.items():
        if k == "properties":
            found |= set().union(*map(_keywords, v.values()))
        elif k in ("items", "anyOf", "oneOf"):
            found |= _keywords(v)
    return found


def test_the_schema_uses_only_keywords_the_validator_knows():
    assert _keywords(json_schema()) <= KNOWN


def test_the_schema_file_is_json_of_draft_2020_12():
    schema = json.loads((REPO / SCHEMA).read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize(
    "text",
    [
        (REPO / "retention.yaml").read_text(encoding="utf-8"),
        DEMO_CONFIG,
        PINNED,
        "version: 1\n",
        "version: 1\npolicies:\n",
    ],
    ids=["retention.yaml", "demo", "pinned", "minimal", "policies_left_empty"],
)
def test_configs_the_loader_accepts_satisfy_the_schema(tmp_path, text):
    load_config(write(tmp_path, text))  # the control: the loader takes it
    assert errors(json_schema(), yaml.safe_load(text)) == []


def _bad(change):
    doc = yaml.safe_load(PINNED)
    change(doc)
    return doc


@pytest.mark.parametrize(
    "doc",
    [
        _bad(lambda d: d.pop("version")),
        _bad(lambda d: d.update(version=2)),
        _bad(lambda d: d.update(retention=1)),
        _bad(lambda d: d["policies"][0].update(older_than="30 days")),
        _bad(lambda d: d["policies"][0].update(keep_last=True)),
        _bad(lambda d: d["policies"][0].update(name="Logs")),
        _bad(lambda d: d["policies"][0].pop("root")),
        _bad(lambda d: d["policies"][1].update(age_from="ctime")),
        _bad(lambda d: d["policies"][2].update(max_total_size="15%")),
        _bad(lambda d: d["backup"].update(destinations=[])),
        _bad(lambda d: d["backup"]["destinations"][0].update(bucket="x")),
        _bad(lambda d: d["backup"]["destinations"][1].pop("bucket")),
        _bad(lambda d: d["backup"]["destinations"][1].update(type="ftp")),
        _bad(lambda d: d["backup"]["destinations"][1].update(connect_timeout=0)),
    ],
    ids=[
        "no_version",
        "version_2",
        "unknown_top_key",
        "bad_duration",
        "count_a_bool",
        "bad_name",
        "no_root",
        "bad_choice",
        "share_as_size",
        "no_destinations",
        "local_with_bucket",
        "s3_without_bucket",
        "unknown_type",
        "zero_timeout",
    ],
)
def test_the_schema_refuses_what_the_loader_refuses_for_its_shape(tmp_path, doc):
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, yaml.safe_dump(doc)))
    assert errors(json_schema(), doc) != []


def test_the_schema_accepts_every_optional_key_at_its_default(tmp_path):
    doc = {"version": 1, "backup": {}, "policies": [{"name": "p", "root": "d"}]}
    where = {"top level": doc, "backup": doc["backup"], "policies[]": doc["policies"][0]}
    for table in TABLES:
        for f in table.fields:
            if table.where in where and f.default not in (REQUIRED, None) and f.kind.table is None:
                where[table.where][f.key] = copy.deepcopy(f.default)
    doc["policies"][0]["older_than"] = "1d"
    load_config(write(tmp_path, yaml.safe_dump(doc)))
    assert errors(json_schema(), doc) == []
