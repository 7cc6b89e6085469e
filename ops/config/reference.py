"""What the tables of ops/config/fields.py say, for people and for editors: a Markdown
reference of every key and a JSON Schema of retention.yaml.

scripts/config_reference.py (``make config-reference``) writes them to docs/; a test fails
when the files there differ from what the tables make now.
"""

import json

from ops.config.fields import KINDS, REQUIRED, TABLES, TOP, Field, Kind, Table, Variants

MARKDOWN = "docs/config-reference.md"
SCHEMA = "docs/retention.schema.json"
_HEADER = (
    "<!-- Generated from ops/config/fields.py by `make config-reference` (scripts/config_reference.py):"
    " edit the tables there, not this file. -->"
)


def generated() -> dict[str, str]:
    """Each generated file's path in the repository and its text."""
    return {MARKDOWN: markdown(), SCHEMA: json.dumps(json_schema(), indent=2) + "\n"}


# --- Markdown ------------------------------------------------------------------------------


def _yaml(value) -> str:
    """A default as it would be written in retention.yaml (flow style; JSON is YAML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value:
        return value
    return json.dumps(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _type(kind: Kind) -> str:
    if kind.many is not None:
        return f"list of {kind.many} mappings"
    return kind.name


def _default(f: Field) -> str:
    if f.default is REQUIRED:
        return "**required**"
    if f.default is None:
        return "unset"
    if f.kind.inline:
        return "see below"
    return f"`{_yaml(f.default)}`"


def _section(table: Table) -> list[str]:
    kept = [f for f in table.fields if f.name is not None and not f.kind.inline]
    every = all(_digested(f) for f in kept)
    lines = [
        f"## {table.where}",
        "",
        table.doc + (" Every key of it is part of the rules a run is scanned under." if every else ""),
    ]
    lines += ["", "| key | type | default | what it does |", "|---|---|---|---|"]
    for f in table.fields:
        key = f"`{f.key}`" + (" †" if _digested(f) and not every else "")
        lines.append(f"| {key} | {_cell(_type(f.kind))} | {_cell(_default(f))} | {_cell(f.doc)} |")
    return [*lines, ""]


def _digested(f: Field) -> bool:
    """Whether changing the key changes Config.identity()'s digest (a nested mapping's own
    keys say it for themselves; version is read, not kept)."""
    return f.digest and f.name is not None and not f.kind.inline


def markdown() -> str:
    lines = [
        _HEADER,
        "",
        "# retention.yaml reference (schema version 1)",
        "",
        "Every key the loader (ops/config) accepts, from the same tables it reads them by. An unknown",
        "key, a value of the wrong type, a key written twice in one mapping, or a failed check across",
        "keys is an error (exit 78) whose message names the file and the key, e.g.",
        "`retention.yaml: policies[0].older_than: expected a duration like 30d ...`.",
        "",
        "Keys marked † are part of the rules a run is scanned under (the digest of",
        "`Config.identity()`): change one while a run is unfinished and the next `make maintenance`",
        "leaves that run and starts a new one under the new rules (a step named by hand refuses",
        "it). The other keys decide nothing about what may be deleted and may change at any time.",
        "",
        f"Editors that read JSON Schema can check the file against `{SCHEMA}` (generated from the",
        "same tables), e.g. with the line `# yaml-language-server: $schema=docs/retention.schema.json`.",
        "The schema checks the shape of the file; the loader remains the judge (places that",
        "overlap, the quorum against the destinations, a share below 100% ...).",
        "",
        "## Types",
        "",
        "| type | a value of it |",
        "|---|---|",
        *(f"| {_cell(k.name)} | {_cell(k.doc)} |" for k in KINDS),
        "| a \\| b | one of the words listed |",
        "",
    ]
    for table in TABLES:
        lines += _section(table)
    return "\n".join(lines).rstrip("\n") + "\n"


# --- JSON Schema ---------------------------------------------------------------------------


def _object(table: Table, tag: tuple[str, str] | None = None) -> dict:
    properties = {}
    for f in table.fields:
        schema = _field(f)
        if tag and f.key == tag[0]:
            schema = {"const": tag[1], "description": f.doc}
        properties[f.key] = schema
    out = {"type": "object", "properties": properties}
    required = [f.key for f in table.fields if f.default is REQUIRED]
    if required:
        out["required"] = required
    return {**out, "additionalProperties": False}


def _nested(t: Table | Variants) -> dict:
    if isinstance(t, Variants):
        return {"oneOf": [_object(table, (t.tag, name)) for name, table in t.tables.items()]}
    return _object(t)


def _field(f: Field) -> dict:
    kind = f.kind
    if kind.many is not None:
        schema = {"type": "array", "items": _nested(kind.table), **kind.schema}
    elif kind.table is not None:
        schema = _nested(kind.table)
    else:
        schema = dict(kind.schema)
    if f.nullable:
        schema = {"anyOf": [schema, {"type": "null"}]}
    schema["description"] = f.doc
    if f.default is not REQUIRED and f.default is not None:
        schema["default"] = f.default
    return schema


def json_schema() -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "retention.yaml (QTS Ops, schema version 1)",
        "description": "Generated from ops/config/fields.py by `make config-reference`; the loader remains the judge.",
        **_object(TOP),
    }
