"""What an operator types after `make <target>` reaches the script byte for byte: neither make
nor the shell reads it as code. Real make, from the repository root, as cron runs it."""

import json
import os

import pytest
import yaml

from tools.sandbox import Sandbox

from ._operator_support import aged, make
from ._support import run_ok

RUN = "20260101T000000Z-aaaa"
# Each broke on its way through the Makefile while values were pasted into recipes: a quote
# or a newline ended the shell's string ("unexpected EOF"), make expanded $H (and would run
# $(...)), the shell ran the backticks and looked up "auid=0(root)...".
HOSTILE = {
    "quote": 'with "quote".log',
    "newline": "new\nline.log",
    "dollar": "dollar$HOME.log",
    "backticks": "a`id`.log",
    "make-function": "make$(info INJECTED).log",
}


def _config_in_a_directory_with_a_space(sandbox) -> str:
    """The sandbox's settings in "<base>/conf dir/my retention.yaml" (so its paths start with ../)."""
    config = sandbox.base / "conf dir" / "my retention.yaml"
    config.parent.mkdir()
    settings = dict(sandbox.config, state_dir="../var/state", log_dir="../var/log")
    settings["backup"] = dict(
        settings["backup"], destinations=[{"name": "local", "type": "local", "path": "../var/backups"}]
    )
    settings["policies"] = [dict(settings["policies"][0], root="../data/logs")]
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    return str(config)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """Every hostile name deleted and catalogued by one maintenance run."""
    sandbox = Sandbox(tmp_path_factory.mktemp("make_values"))
    config = _config_in_a_directory_with_a_space(sandbox)
    for name in HOSTILE.values():
        aged(sandbox, name, name.encode() + b"\n")
    run_ok(sandbox, "maintenance", "--config", config)
    assert sandbox.snapshot() == {}, "every hostile name was deleted"
    return sandbox, config


def test_make_steps_take_a_config_path_with_a_space_and_a_run(sandbox):
    config = _config_in_a_directory_with_a_space(sandbox)
    aged(sandbox, "old.log", b"old\n")
    for step in ("scan", "backup", "verify", "clean"):
        result = make(step, f"CONFIG={config}", f"RUN={RUN}")
        assert result.returncode == 0, (step, result.stdout, result.stderr)
    assert sandbox.runs() == [RUN]
    assert sandbox.snapshot() == {}
    status = make("status", f"CONFIG={config}")
    assert status.returncode == 0, status.stdout + status.stderr
    assert RUN in status.stdout
    runs = make("status", f"CONFIG={config}", "DEST=local")
    assert (runs.returncode, runs.stdout.split()) == (0, [RUN]), runs.stderr
    plan = make("plan", f"CONFIG={config}")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    maintenance = make("maintenance", f"CONFIG={config}")
    assert maintenance.returncode == 0, maintenance.stdout + maintenance.stderr


def _shown(path: str) -> str:
    """How find prints a path: a control character JSON-escaped (a newline would split the row)."""
    return json.dumps(path, ensure_ascii=False)[1:-1] if "\n" in path else path


@pytest.mark.parametrize("kind", HOSTILE)
def test_make_find_passes_file_unchanged(host, kind):
    sandbox, config = host
    path = str(sandbox.data / "logs" / HOSTILE[kind])
    result = make("find", f"CONFIG={config}", f"FILE={path}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "INJECTED" not in (result.stdout + result.stderr).splitlines(), "make ran a function in the value"
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [row[:2] for row in rows if row[0] == _shown(path)] == [[_shown(path), *sandbox.runs()]], result.stdout


def test_make_restore_passes_file_and_to_unchanged(host):
    sandbox, config = host
    to = sandbox.base / 'to "q" $HOME `id` $(info INJECTED)\nend'
    for name in HOSTILE.values():
        path = str(sandbox.data / "logs" / name)
        result = make("restore", f"CONFIG={config}", f"FILE={path}", f"TO={to}")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "INJECTED" not in (result.stdout + result.stderr).splitlines()
        assert (to / "logs" / name).read_bytes() == name.encode() + b"\n"
    assert sorted(os.listdir(to / "logs")) == sorted(HOSTILE.values())
    assert sandbox.snapshot() == {}, "TO was honoured: nothing went back to the root"


def test_make_scan_hands_a_bad_run_to_the_script_which_says_what_is_wrong(sandbox):
    result = make("scan", f"CONFIG={sandbox.config_path}", 'RUN=x"`id`$HOME')
    assert result.returncode == 2  # make's own status for a failed recipe: the script exited 64
    assert "Error 64" in result.stderr
    assert "'x\"`id`$HOME' is not a run id" in result.stderr, result.stderr


def test_find_takes_a_relative_glob_from_the_current_directory(host):
    sandbox, _config = host
    result = run_ok(sandbox, "find", "--file", "data/logs/*.log", "--json")  # the sandbox is its cwd
    found = sorted(json.loads(line)["rel"] for line in result.stdout.splitlines())
    assert found == sorted(HOSTILE.values())
    dotted = run_ok(sandbox, "find", "--file", "./data/logs/a*", "--json")
    assert [json.loads(line)["rel"] for line in dotted.stdout.splitlines()] == [HOSTILE["backticks"]]
