"""retention.yaml: the keys of the retention rules (age_from, path_date, min_age,
max_total_size, min_free, protect, keep_daily/weekly/monthly/yearly, optional older_than).

Each bad row is one change to a valid config, loaded from a real file; the error is a
ConfigError with exit code 78 whose message names the file and the key. A few rows also go
through the real scan script: exit 78, the key on stderr, nothing created.
"""

import copy
from pathlib import Path

import pytest
import yaml

from ops.config import load_config, parse_size
from ops.errors import ConfigError

BASE = {
    "version": 1,
    "policies": [
        {"name": "logs", "root": "data/logs", "older_than": "30d"},
        {"name": "ticks", "root": "data/ticks", "older_than": "90d"},
    ],
}


def write(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "retention.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def with_policy(index: int, drop: tuple[str, ...] = (), **keys) -> dict:
    doc = copy.deepcopy(BASE)
    for k in drop:
        doc["policies"][index].pop(k)
    doc["policies"][index].update(keys)
    return doc


BAD = [
    # (id, config, key the message must name, a word of the explanation)
    ("size_with_unknown_unit", with_policy(1, max_total_size="200 gigs"), "policies[1].max_total_size", "200GiB"),
    ("size_negative", with_policy(1, max_total_size="-5GiB"), "policies[1].max_total_size", "size"),
    ("size_as_a_percent", with_policy(1, max_total_size="15%"), "policies[1].max_total_size", "size"),
    ("size_empty", with_policy(1, max_total_size=""), "policies[1].max_total_size", "size"),
    ("size_a_list", with_policy(1, max_total_size=["1GiB"]), "policies[1].max_total_size", "size"),
    ("min_free_150_percent", with_policy(1, min_free="150%"), "policies[1].min_free", "15%"),
    ("min_free_100_percent", with_policy(1, min_free="100%"), "policies[1].min_free", "15%"),
    ("min_free_negative_percent", with_policy(1, min_free="-5%"), "policies[1].min_free", "15%"),
    ("min_free_bad_unit", with_policy(1, min_free="10 GiBs"), "policies[1].min_free", "15%"),
    (
        "path_date_without_day_group",
        with_policy(1, age_from="path", path_date=r"(?P<y>\d{4})-(?P<m>\d{2})"),
        "policies[1].path_date",
        "missing: d",
    ),
    (
        "path_date_without_any_group",
        with_policy(1, age_from="path", path_date=r"\d{4}-\d{2}-\d{2}"),
        "policies[1].path_date",
        "missing: d, m, y",
    ),
    (
        "path_date_not_a_regex",
        with_policy(1, age_from="path", path_date=r"(?P<y>\d{4}"),
        "policies[1].path_date",
        "regular expression",
    ),
    ("path_date_empty", with_policy(1, age_from="path", path_date=""), "policies[1].path_date", "empty"),
    ("path_date_not_a_string", with_policy(1, age_from="path", path_date=2026), "policies[1].path_date", "string"),
    ("age_from_path_without_path_date", with_policy(1, age_from="path"), "policies[1].path_date", "age_from"),
    ("age_from_unknown", with_policy(1, age_from="ctime"), "policies[1].age_from", "mtime or path"),
    ("no_expiring_rule_at_all", with_policy(1, drop=("older_than",)), "policies[1].older_than", "required"),
    (
        "no_expiring_rule_but_min_age",
        with_policy(1, drop=("older_than",), min_age="7d", protect=["x/**"]),
        "policies[1].older_than",
        "keep_daily",
    ),
    (
        "calendar_count_zero_is_no_rule",
        with_policy(0, drop=("older_than",), keep_daily=0),
        "policies[0].older_than",
        "required",
    ),
    ("negative_keep_daily", with_policy(1, keep_daily=-1), "policies[1].keep_daily", "0 or more"),
    ("negative_keep_yearly", with_policy(1, keep_yearly=-3), "policies[1].keep_yearly", "0 or more"),
    ("keep_weekly_a_string", with_policy(1, keep_weekly="4"), "policies[1].keep_weekly", "integer"),
    ("keep_monthly_a_bool", with_policy(1, keep_monthly=True), "policies[1].keep_monthly", "integer"),
    ("keep_daily_a_float", with_policy(1, keep_daily=1.5), "policies[1].keep_daily", "integer"),
    ("min_age_not_a_duration", with_policy(1, min_age="7 days"), "policies[1].min_age", "duration"),
    ("protect_not_a_list", with_policy(1, protect="keep/**"), "policies[1].protect", "list"),
    ("protect_bad_glob", with_policy(1, protect=["ok/**", "[z-a]*"]), "policies[1].protect[1]", ""),
    ("protect_empty_glob", with_policy(1, protect=[""]), "policies[1].protect[0]", "empty"),
    ("misspelt_rule_key", with_policy(1, keep_dayly=7), "policies[1].keep_dayly", "unknown key"),
]


@pytest.mark.parametrize("doc, key, word", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_rule_key_is_a_config_error_naming_the_key(tmp_path, doc, key, word):
    path = write(tmp_path, doc)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert info.value.code == 78
    assert f"{path}: {key}: " in message, message
    assert word in message


GOOD = [
    ("calendar_alone", {"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 12, "keep_yearly": 3}),
    ("max_total_size_alone", {"max_total_size": "200GiB"}),
    ("min_free_percent_alone", {"min_free": "15%"}),
    ("min_free_size_alone", {"min_free": "10GiB"}),
    (
        "older_than_with_everything",
        {
            "older_than": "30d",
            "age_from": "path",
            "path_date": r"(?P<y>\d{4})(?P<m>\d\d)(?P<d>\d\d)T(?P<H>\d\d)(?P<M>\d\d)",
            "min_age": "2d",
            "keep_last": 3,
            "keep_daily": 1,
            "protect": ["golden/**"],
        },
    ),
]


@pytest.mark.parametrize("keys", [c[1] for c in GOOD], ids=[c[0] for c in GOOD])
def test_valid_rule_keys_load_and_older_than_may_be_left_out(tmp_path, keys):
    doc = with_policy(1, drop=("older_than",), **keys)
    p = load_config(write(tmp_path, doc)).policy("ticks")
    assert p.older_than is None if "older_than" not in keys else p.older_than.text == keys["older_than"]
    for k, v in keys.items():
        got = getattr(p, k)
        text = got.text if hasattr(got, "text") else got
        assert text == (tuple(v) if isinstance(v, list) else v), k


def test_defaults_of_the_rule_keys(tmp_path):
    p = load_config(write(tmp_path, BASE)).policy("logs")
    assert (p.age_from, p.path_date, p.min_age.seconds, p.max_total_size, p.min_free, p.protect) == (
        "mtime",
        None,
        0,
        None,
        None,
        (),
    )
    assert p.calendar == {} and not p.has_space_rules


@pytest.mark.parametrize(
    "text, allow_percent, nbytes, percent",
    [
        ("200GiB", False, 200 * 2**30, None),
        ("1.5KiB", False, 1536, None),
        ("100", False, 100, None),
        ("100 B", False, 100, None),
        ("2GB", False, 2 * 10**9, None),
        ("3 TiB", False, 3 * 2**40, None),
        ("15%", True, 0, 15.0),
        ("0%", True, 0, 0.0),
        ("99.5%", True, 0, 99.5),
    ],
)
def test_parse_size_reads_units_and_shares(text, allow_percent, nbytes, percent):
    size = parse_size(text, allow_percent)
    assert (size.text, size.bytes, size.percent) == (text, nbytes, percent)


def test_min_free_share_is_taken_of_the_filesystem_size():
    assert parse_size("15%", True).of(10_000) == 1500
    assert parse_size("2KiB", True).of(10_000) == 2048


THROUGH_SCAN = [
    ("min_free_150_percent", {"min_free": "150%"}, "policies[0].min_free"),
    ("path_date_without_groups", {"age_from": "path", "path_date": r"\d{8}"}, "policies[0].path_date"),
    ("negative_keep_daily", {"keep_daily": -1}, "policies[0].keep_daily"),
]


@pytest.mark.parametrize("keys, key", [c[1:] for c in THROUGH_SCAN], ids=[c[0] for c in THROUGH_SCAN])
def test_scan_script_exits_78_on_a_bad_rule_key_and_creates_nothing(sandbox, keys, key):
    sandbox.file("old.log", age_days=400)
    before = sandbox.snapshot()
    cfg = copy.deepcopy(sandbox.config)
    cfg["policies"][0].update(keys)
    sandbox.write_config(cfg)
    res = sandbox.run("scan")
    assert res.returncode == 78, res.stderr
    assert key in res.stderr and str(sandbox.config_path) in res.stderr
    assert "Traceback" not in res.stderr
    assert not (sandbox.base / "var").exists()
    assert sandbox.snapshot() == before


def test_scan_script_names_older_than_when_no_rule_says_when_files_expire(sandbox):
    cfg = copy.deepcopy(sandbox.config)
    del cfg["policies"][0]["older_than"]
    sandbox.write_config(cfg)
    res = sandbox.run("scan")
    assert res.returncode == 78, res.stderr
    assert "policies[0].older_than" in res.stderr
    cfg["policies"][0]["keep_daily"] = 7  # the control: a calendar rule is enough
    sandbox.write_config(cfg)
    assert sandbox.run("scan").returncode == 0


def test_path_date_without_age_from_path_names_the_key(tmp_path):
    cfg = tmp_path / "retention.yaml"
    cfg.write_text(
        "version: 1\npolicies:\n"
        "  - {name: t, root: d, older_than: 1d, path_date: '(?P<y>\\d{4})(?P<m>\\d\\d)(?P<d>\\d\\d)'}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert "policies[0].path_date" in err.value.message and str(cfg) in err.value.message


def test_max_total_size_as_a_bare_number_is_bytes(tmp_path):
    cfg = tmp_path / "retention.yaml"
    cfg.write_text("version: 1\npolicies:\n  - {name: t, root: d, max_total_size: 1000}\n")
    assert load_config(cfg).policies[0].max_total_size.bytes == 1000


def test_policy_compression_overrides_the_global_one_and_is_checked(tmp_path):
    cfg = tmp_path / "retention.yaml"
    cfg.write_text("version: 1\npolicies:\n  - {name: t, root: d, older_than: 1d, compression: none}\n")
    assert load_config(cfg).policies[0].compression == "none"
    cfg.write_text("version: 1\npolicies:\n  - {name: t, root: d, older_than: 1d, compression: lz4}\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert "policies[0].compression" in err.value.message
