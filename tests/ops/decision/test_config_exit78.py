"""A bad retention.yaml through the real scripts: exit 78, the file and key on stderr,
and nothing created (no state, no log, no backup directory) and no data touched."""

import copy

import pytest


def _set_policy(key, value):
    def apply(cfg, sandbox):
        cfg["policies"][0][key] = value

    return apply


def _set_top(key, value):
    def apply(cfg, sandbox):
        cfg[key] = value

    return apply


def _del_top(key):
    def apply(cfg, sandbox):
        del cfg[key]

    return apply


def _root_is_state_dir(cfg, sandbox):
    cfg["policies"][0]["root"] = str(sandbox.state)


BAD = [
    # (id, mutation, key that stderr must name)
    ("bad_duration", _set_policy("older_than", "30 days"), "policies[0].older_than"),
    ("keep_last_string", _set_policy("keep_last", "5"), "policies[0].keep_last"),
    ("unknown_policy_key", _set_policy("olderthan", "30d"), "policies[0].olderthan"),
    ("unknown_top_key", _set_top("policy", []), "policy"),
    ("reversed_glob_range", _set_policy("include", ["[z-a]*.log"]), "policies[0].include[0]"),
    ("root_is_state_dir", _root_is_state_dir, "policies[0].root"),
    ("root_slash", _set_policy("root", "/"), "policies[0].root"),
    ("version_2", _set_top("version", 2), "version"),
    ("missing_version", _del_top("version"), "version"),
]


@pytest.mark.parametrize("mutate, key", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_scan_with_bad_config_exits_78_naming_file_and_key_and_creates_nothing(sandbox, mutate, key):
    old = sandbox.file("2026/old.log", age_days=400)
    before = sandbox.snapshot()
    cfg = copy.deepcopy(sandbox.config)
    mutate(cfg, sandbox)
    sandbox.write_config(cfg)

    res = sandbox.run("scan")

    assert res.returncode == 78, res.stderr
    assert key in res.stderr
    assert str(sandbox.config_path) in res.stderr
    assert "Traceback" not in res.stderr
    assert not (sandbox.base / "var").exists(), "no state, log or backup directory may be created"
    assert sandbox.snapshot() == before and old.exists()


@pytest.mark.parametrize(
    "text", ["version: 1\npolicies: [\n", "- version: 1\n"], ids=["invalid_yaml", "top_level_list"]
)
def test_scan_with_unparsable_config_exits_78_naming_file(sandbox, text):
    sandbox.config_path.write_text(text)
    res = sandbox.run("scan")
    assert res.returncode == 78, res.stderr
    assert str(sandbox.config_path) in res.stderr
    assert "Traceback" not in res.stderr
    assert not (sandbox.base / "var").exists()


def test_scan_with_missing_config_exits_78_naming_file(sandbox):
    sandbox.config_path.unlink()
    res = sandbox.run("scan")
    assert res.returncode == 78, res.stderr
    assert str(sandbox.config_path) in res.stderr
    assert not (sandbox.base / "var").exists()


@pytest.mark.parametrize("step", ["backup", "verify", "clean", "maintenance"])
def test_every_step_refuses_a_bad_config_with_78_before_touching_anything(sandbox, step):
    sandbox.file("old.log", age_days=400)
    before = sandbox.snapshot()
    cfg = copy.deepcopy(sandbox.config)
    cfg["policies"][0]["keep_last"] = True
    sandbox.write_config(cfg)
    res = sandbox.run(step)
    assert res.returncode == 78, res.stderr
    assert "policies[0].keep_last" in res.stderr and str(sandbox.config_path) in res.stderr
    assert not (sandbox.base / "var").exists()
    assert sandbox.snapshot() == before


def test_the_unmodified_sandbox_config_scans_fine(sandbox):
    # the control for the rows above: the same sandbox without the mutation exits 0
    sandbox.file("2026/old.log", age_days=400)
    res = sandbox.run("scan")
    assert res.returncode == 0, res.stderr
    assert sandbox.state.exists()
