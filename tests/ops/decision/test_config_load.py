"""ops.config.load_config: retention.yaml schema version 1, on real files under tmp_path.

Each error row is a change to a valid config; the error must be a ConfigError with exit
code 78 whose message names the config file and the offending key.
"""

import copy
from pathlib import Path

import pytest
import yaml

from ops.config import load_config
from ops.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]

VALID = {
    "version": 1,
    "state_dir": "var/state",
    "log_dir": "var/log",
    "backup": {
        "compression": "zstd",
        "require_verified_copies": 1,
        "destinations": [{"name": "local", "type": "local", "path": "var/backups"}],
    },
    "policies": [
        {
            "name": "logs",
            "root": "data/logs",
            "include": ["**/*.log"],
            "exclude": ["**/current.log"],
            "older_than": "30d",
            "settle": "10m",
            "keep_last": 0,
            "missing_ok": False,
        },
        {"name": "journals", "root": "data/journals", "older_than": "90d"},
    ],
}


def write(tmp_path: Path, doc, name="retention.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.code == 78
    assert str(path) in str(info.value), "the message must name the config file"
    return info.value


# --- valid configs ------------------------------------------------------------------------


def test_minimal_config_gets_the_documented_defaults(tmp_path):
    cfg = load_config(write(tmp_path, {"version": 1}))
    assert cfg.state_dir == tmp_path / "var/state"
    assert cfg.log_dir == tmp_path / "var/log"
    assert cfg.compression == "zstd"
    assert cfg.require_verified_copies == 1
    assert [(d.name, d.type, d.path) for d in cfg.destinations] == [("local", "local", tmp_path / "var/backups")]
    assert cfg.policies == ()


def test_minimal_policy_gets_the_documented_defaults(tmp_path):
    cfg = load_config(write(tmp_path, {"version": 1, "policies": [{"name": "p", "root": "data", "older_than": "7d"}]}))
    (p,) = cfg.policies
    assert p.name == "p"
    assert p.root == tmp_path / "data"
    assert p.include == ("**",)
    assert p.exclude == ()
    assert (p.older_than.text, p.older_than.seconds) == ("7d", 7 * 86400)
    assert (p.settle.text, p.settle.seconds) == ("10m", 600)
    assert p.keep_last == 0
    assert p.missing_ok is False


def test_full_config_loads_every_field(tmp_path):
    cfg = load_config(write(tmp_path, VALID))
    logs, journals = cfg.policies
    assert logs.include == ("**/*.log",) and logs.exclude == ("**/current.log",)
    assert logs.older_than.ns == 30 * 86400 * 10**9
    assert logs.settle.ns == 600 * 10**9
    assert journals.root == tmp_path / "data/journals"
    assert cfg.policy("journals") is journals
    with pytest.raises(ConfigError):
        cfg.policy("nope")


def test_policies_key_left_empty_means_no_policies(tmp_path):
    assert load_config(write(tmp_path, "version: 1\npolicies:\n")).policies == ()


@pytest.mark.parametrize(
    "text, seconds", [("0s", 0), ("45s", 45), ("5m", 300), ("2h", 7200), ("30d", 2592000), ("2w", 1209600)]
)
def test_every_duration_unit_is_accepted(tmp_path, text, seconds):
    cfg = load_config(write(tmp_path, {"version": 1, "policies": [{"name": "p", "root": "d", "older_than": text}]}))
    assert cfg.policies[0].older_than.seconds == seconds


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_every_compression_is_accepted(tmp_path, compression):
    assert (
        load_config(write(tmp_path, {"version": 1, "backup": {"compression": compression}})).compression == compression
    )


def test_two_destinations_allow_quorum_two(tmp_path):
    doc = {
        "version": 1,
        "backup": {
            "require_verified_copies": 2,
            "destinations": [
                {"name": "a", "type": "local", "path": "b1"},
                {"name": "b", "type": "local", "path": "/abs/b2"},
            ],
        },
    }
    cfg = load_config(write(tmp_path, doc))
    assert cfg.require_verified_copies == 2
    assert [d.path for d in cfg.destinations] == [tmp_path / "b1", Path("/abs/b2")]


def test_relative_paths_resolve_against_the_config_directory_not_the_cwd(tmp_path, monkeypatch):
    conf_dir = tmp_path / "etc" / "qts"
    conf_dir.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    doc = copy.deepcopy(VALID)
    doc["policies"][0]["root"] = "data/../data/./logs"
    doc["policies"][1]["root"] = str(tmp_path / "abs-journals")
    write(conf_dir, doc)
    monkeypatch.chdir(elsewhere)
    cfg = load_config(Path("../etc/qts/retention.yaml"))  # a relative config path, too
    assert cfg.state_dir == conf_dir / "var/state"
    assert cfg.log_dir == conf_dir / "var/log"
    assert cfg.destinations[0].path == conf_dir / "var/backups"
    assert cfg.policies[0].root == conf_dir / "data/logs"
    assert cfg.policies[1].root == tmp_path / "abs-journals"
    for p in (cfg.state_dir, cfg.log_dir, cfg.destinations[0].path, *(x.root for x in cfg.policies)):
        assert p.is_absolute()


def test_the_shipped_retention_yaml_loads():
    cfg = load_config(REPO / "retention.yaml")
    assert cfg.state_dir == REPO / "var/state"
    assert cfg.log_dir == REPO / "var/log"
    assert [p.name for p in cfg.policies] == ["runtime-logs", "journals"]
    assert all(p.missing_ok for p in cfg.policies)
    assert all(REPO in p.root.parents for p in cfg.policies)
    assert cfg.policies[0].keep_last == 5


# --- every class of error: ConfigError, code 78, file and key in the message ---------------


def _set(path, value):
    """A mutation that sets doc[path...] = value (path: keys and list indexes)."""

    def apply(doc, base):
        node = doc
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value(base) if callable(value) else value

    return apply


def _del(path):
    def apply(doc, base):
        node = doc
        for k in path[:-1]:
            node = node[k]
        del node[path[-1]]

    return apply


def _root_over_second_destination(doc, base):
    doc["backup"]["destinations"].append({"name": "srv", "type": "local", "path": "/srv/qts-backups"})
    doc["policies"].append({"name": "srv", "root": "/srv", "older_than": "1d"})


P0 = ("policies", 0)
DEST0 = ("backup", "destinations", 0)

ERRORS = [
    # (id, mutation, key the message must name)
    ("unknown_top_level_key", _set(("retention",), "x"), "retention"),
    ("unknown_backup_key", _set(("backup", "compresion"), "zstd"), "backup.compresion"),
    ("unknown_destination_key", _set((*DEST0, "bucket"), "b"), "backup.destinations[0].bucket"),
    ("unknown_policy_key", _set((*P0, "olderthan"), "30d"), "policies[0].olderthan"),
    ("unknown_key_in_second_policy", _set(("policies", 1, "kind"), "x"), "policies[1].kind"),
    ("missing_version", _del(("version",)), "version"),
    ("version_2", _set(("version",), 2), "version"),
    ("version_as_string", _set(("version",), "1"), "version"),
    ("version_true", _set(("version",), True), "version"),
    ("state_dir_empty", _set(("state_dir",), ""), "state_dir"),
    ("state_dir_not_a_string", _set(("state_dir",), 5), "state_dir"),
    ("log_dir_list", _set(("log_dir",), ["a"]), "log_dir"),
    ("backup_not_a_mapping", _set(("backup",), ["zstd"]), "backup"),
    ("bad_compression", _set(("backup", "compression"), "xz"), "backup.compression"),
    ("compression_null", _set(("backup", "compression"), None), "backup.compression"),
    ("quorum_zero", _set(("backup", "require_verified_copies"), 0), "backup.require_verified_copies"),
    (
        "quorum_above_destination_count",
        _set(("backup", "require_verified_copies"), 2),
        "backup.require_verified_copies",
    ),
    ("quorum_string", _set(("backup", "require_verified_copies"), "1"), "backup.require_verified_copies"),
    ("quorum_bool", _set(("backup", "require_verified_copies"), True), "backup.require_verified_copies"),
    ("no_destinations", _set(("backup", "destinations"), []), "backup.destinations"),
    ("destinations_not_a_list", _set(("backup", "destinations"), {"name": "local"}), "backup.destinations"),
    ("destination_type_s3_with_a_path", _set((*DEST0, "type"), "s3"), "backup.destinations[0].path"),
    ("destination_type_ftp", _set((*DEST0, "type"), "ftp"), "backup.destinations[0].type"),
    ("destination_type_a_list", _set((*DEST0, "type"), ["local"]), "backup.destinations[0].type"),
    ("destination_type_a_mapping", _set((*DEST0, "type"), {"s3": 1}), "backup.destinations[0].type"),
    ("destination_without_path", _del((*DEST0, "path")), "backup.destinations[0].path"),
    ("destination_bad_name", _set((*DEST0, "name"), "Local"), "backup.destinations[0].name"),
    (
        "duplicate_destination_names",
        _set(
            ("backup", "destinations"),
            [{"name": "a", "type": "local", "path": "b1"}, {"name": "a", "type": "local", "path": "b2"}],
        ),
        "backup.destinations[1].name",
    ),
    ("policies_not_a_list", _set(("policies",), {"name": "logs"}), "policies"),
    ("policies_empty_mapping", _set(("policies",), {}), "policies"),
    ("policy_not_a_mapping", _set(P0, "logs"), "policies[0]"),
    ("policy_without_name", _del((*P0, "name")), "policies[0].name"),
    ("policy_without_root", _del((*P0, "root")), "policies[0].root"),
    ("policy_without_older_than", _del((*P0, "older_than")), "policies[0].older_than"),
    ("name_uppercase", _set((*P0, "name"), "Logs"), "policies[0].name"),
    ("name_leading_dash", _set((*P0, "name"), "-logs"), "policies[0].name"),
    ("name_with_space", _set((*P0, "name"), "run logs"), "policies[0].name"),
    ("name_with_slash", _set((*P0, "name"), "a/b"), "policies[0].name"),
    ("name_trailing_newline", _set((*P0, "name"), "logs\n"), "policies[0].name"),
    ("name_empty", _set((*P0, "name"), ""), "policies[0].name"),
    ("name_int", _set((*P0, "name"), 5), "policies[0].name"),
    ("duplicate_policy_names", _set(("policies", 1, "name"), "logs"), "policies[1].name"),
    ("older_than_words", _set((*P0, "older_than"), "30 days"), "policies[0].older_than"),
    ("older_than_no_unit", _set((*P0, "older_than"), "30"), "policies[0].older_than"),
    ("older_than_int", _set((*P0, "older_than"), 30), "policies[0].older_than"),
    ("older_than_negative", _set((*P0, "older_than"), "-1d"), "policies[0].older_than"),
    ("older_than_years", _set((*P0, "older_than"), "1y"), "policies[0].older_than"),
    ("older_than_uppercase_unit", _set((*P0, "older_than"), "30D"), "policies[0].older_than"),
    ("older_than_fraction", _set((*P0, "older_than"), "1.5d"), "policies[0].older_than"),
    ("older_than_trailing_newline", _set((*P0, "older_than"), "30d\n"), "policies[0].older_than"),
    ("older_than_non_ascii_digits", _set((*P0, "older_than"), "\u0663\u0660d"), "policies[0].older_than"),
    ("settle_bad", _set((*P0, "settle"), "soon"), "policies[0].settle"),
    ("keep_last_string", _set((*P0, "keep_last"), "5"), "policies[0].keep_last"),
    ("keep_last_true", _set((*P0, "keep_last"), True), "policies[0].keep_last"),
    ("keep_last_negative", _set((*P0, "keep_last"), -1), "policies[0].keep_last"),
    ("keep_last_float", _set((*P0, "keep_last"), 2.0), "policies[0].keep_last"),
    ("missing_ok_string_yes", _set((*P0, "missing_ok"), "yes"), "policies[0].missing_ok"),
    ("missing_ok_int", _set((*P0, "missing_ok"), 1), "policies[0].missing_ok"),
    ("include_a_string", _set((*P0, "include"), "**/*.log"), "policies[0].include"),
    ("include_empty_pattern", _set((*P0, "include"), ["*.log", ""]), "policies[0].include[1]"),
    ("include_not_a_string", _set((*P0, "include"), [5]), "policies[0].include[0]"),
    ("include_double_star_inside_segment", _set((*P0, "include"), ["a**b"]), "policies[0].include[0]"),
    ("include_unclosed_bracket", _set((*P0, "include"), ["[abc"]), "policies[0].include[0]"),
    ("include_reversed_range", _set((*P0, "include"), ["[z-a].log"]), "policies[0].include[0]"),
    ("include_absolute", _set((*P0, "include"), ["/var/log/*.log"]), "policies[0].include[0]"),
    ("exclude_unclosed_bracket", _set((*P0, "exclude"), ["ok", "x/["]), "policies[0].exclude[1]"),
    ("root_slash", _set((*P0, "root"), "/"), "policies[0].root"),
    ("root_dotdot_to_slash", _set((*P0, "root"), "../" * 40), "policies[0].root"),
    ("root_empty", _set((*P0, "root"), ""), "policies[0].root"),
    ("root_equals_state_dir", _set((*P0, "root"), "var/state"), "policies[0].root"),
    ("root_equals_state_dir_spelled_differently", _set((*P0, "root"), "./var/x/../state/"), "policies[0].root"),
    ("root_equals_state_dir_absolute", _set((*P0, "root"), lambda base: str(base / "var/state")), "policies[0].root"),
    ("root_equals_log_dir", _set((*P0, "root"), "var/log"), "policies[0].root"),
    ("root_equals_backup_path", _set((*P0, "root"), "var/backups"), "policies[0].root"),
    ("root_contains_state_dir", _set((*P0, "root"), "var"), "policies[0].root"),
    ("root_is_config_dir_containing_everything", _set((*P0, "root"), "."), "policies[0].root"),
    ("root_inside_state_dir", _set((*P0, "root"), "var/state/runs"), "policies[0].root"),
    ("root_inside_backups", _set((*P0, "root"), "var/backups/x"), "policies[0].root"),
    ("second_policy_root_is_log_dir", _set(("policies", 1, "root"), "var/log"), "policies[1].root"),
    ("root_contains_second_destination", _root_over_second_destination, "policies[2].root"),
]


@pytest.mark.parametrize("mutate, key", [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_config_error_names_file_and_key_and_exits_78(tmp_path, mutate, key):
    doc = copy.deepcopy(VALID)
    mutate(doc, tmp_path)
    err = load_error(write(tmp_path, doc))
    assert f": {key}: " in err.message, err.message


def test_mutation_table_starts_from_a_valid_config(tmp_path):
    # otherwise every error row above could pass for the wrong reason
    load_config(write(tmp_path, VALID))


def test_error_message_says_what_is_wrong(tmp_path):
    doc = copy.deepcopy(VALID)
    doc["policies"][0]["older_than"] = "30 days"
    msg = load_error(write(tmp_path, doc)).message
    assert "30 days" in msg and "30d" in msg  # the bad value and an example of a good one


# --- errors that have no key: the file itself ---------------------------------------------


def test_missing_file_is_a_config_error_naming_the_path(tmp_path):
    err = load_error(tmp_path / "nope.yaml")
    assert "not found" in err.message


@pytest.mark.parametrize(
    "text",
    [
        "version: 1\npolicies: [\n",
        "version: 1\n  state_dir: x\n",
        "version: 1\nbackup: {compression: zstd\n",
        "\tversion: 1\n",
    ],
    ids=["unclosed_flow_list", "bad_indent", "unclosed_flow_map", "tab_indent"],
)
def test_invalid_yaml_is_a_config_error_naming_the_path(tmp_path, text):
    err = load_error(write(tmp_path, text))
    assert "YAML" in err.message


def test_non_utf8_file_is_a_config_error_naming_the_path(tmp_path):
    path = tmp_path / "retention.yaml"
    path.write_bytes(b"version: 1\nstate_dir: caf\xe9\n")
    load_error(path)


def test_config_path_that_is_a_directory_is_a_config_error(tmp_path):
    load_error(tmp_path)


@pytest.mark.parametrize(
    "text",
    ["", "# only a comment\n", "- version: 1\n", "just a string\n"],
    ids=["empty", "comment_only", "top_level_list", "top_level_scalar"],
)
def test_a_document_that_is_not_a_config_mapping_is_a_config_error(tmp_path, text):
    load_error(write(tmp_path, text))


def test_version_one_point_zero_is_not_version_1(tmp_path):
    err = load_error(write(tmp_path, {"version": 1.0}))
    assert ": version: " in err.message


def test_root_reaching_the_state_dir_through_a_symlink_is_refused(tmp_path):
    (tmp_path / "var" / "state").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(tmp_path / "var")
    doc = {"version": 1, "policies": [{"name": "p", "root": "alias/state", "older_than": "1d"}]}
    err = load_error(write(tmp_path, doc))
    assert "policies[0].root" in err.message and "state_dir" in err.message
