"""The exit-code table, exactly, on the scripts cron calls: 64 usage, 75 lock busy, 78 config."""

import fcntl
import os
import signal
import subprocess
import sys

import pytest

from ._support import RUN_A, run_ok, tree, tree_diff


@pytest.mark.parametrize(
    "script, args",
    [
        ("scan", ["--run", "not-an-id"]),
        ("verify", ["--run", "../20261126T031700Z-4f2a"]),
        ("clean", ["--bogus"]),
        ("maintenance", ["--run", RUN_A]),  # the chain picks its own run
    ],
)
def test_a_bad_argument_exits_64_and_creates_nothing(sandbox, script, args):
    sandbox.file("old.log")
    before = tree(sandbox.base)
    result = sandbox.run(script, *args)
    assert result.returncode == 64, result.stderr
    assert "--help" in result.stderr
    assert tree_diff(before, tree(sandbox.base, ignore=())) == []


@pytest.mark.parametrize("script", ["clean", "maintenance"])
def test_help_exits_0_and_lists_the_exit_codes(sandbox, script):
    result = sandbox.run(script, "--help")
    assert result.returncode == 0, result.stderr
    for code in ("64", "75", "78"):
        assert code in result.stdout


def test_every_script_exits_75_at_once_and_changes_nothing_while_the_lock_is_held(sandbox, subtests):
    sandbox.file("old.log")
    run_ok(sandbox, "scan", "--run", RUN_A)  # backup would now archive, if it ran
    # Another process's open file description holds the lock, as a running chain would.
    fd = os.open(sandbox.state / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for script, args in [
            ("scan", []),
            ("backup", ["--run", RUN_A]),
            ("verify", ["--run", RUN_A]),
            ("clean", ["--run", RUN_A]),
            ("maintenance", []),
        ]:
            with subtests.test(msg=script):
                before = tree(sandbox.base)
                result = sandbox.run(script, *args, timeout=20)
                assert result.returncode == 75, result.stderr
                assert "holds the lock" in result.stderr
                assert tree_diff(before, tree(sandbox.base)) == []
        assert sandbox.snapshot() == {"logs/old.log": b"x"}
    finally:
        os.close(fd)
    run_ok(sandbox, "backup", "--run", RUN_A)  # released: the same command now works
    assert os.listdir(sandbox.backups) == [RUN_A]


def test_the_lock_dies_with_its_holder(sandbox):
    sandbox.file("old.log")
    sandbox.state.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)\n",
            str(sandbox.state / "lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        assert sandbox.run("scan", "--run", RUN_A).returncode == 75
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    run_ok(sandbox, "scan", "--run", RUN_A)


def _config_cases(sandbox):
    base = sandbox.config
    pol = base["policies"][0]

    def with_policy(**kw):
        return dict(base, policies=[dict(pol, **kw)])

    return [
        ("unknown top-level key", dict(base, retention_days=30), "retention_days"),
        ("unknown policy key", with_policy(delete_everything="yes"), "policies[0].delete_everything"),
        ("wrong type", with_policy(keep_last="5"), "policies[0].keep_last"),
        ("root is /", with_policy(root="/"), "policies[0].root"),
        ("root is the state dir", with_policy(root="var/state"), "policies[0].root"),
        ("root contains the backups", with_policy(root="var"), "policies[0].root"),
    ]


def test_every_script_exits_78_on_a_bad_config_naming_the_key_and_changes_nothing(sandbox, subtests):
    sandbox.file("old.log")
    scripts = ["scan", "maintenance", "backup", "verify", "clean"]
    for i, (label, config, key) in enumerate(_config_cases(sandbox)):
        sandbox.write_config(config)
        script = scripts[i % len(scripts)]
        with subtests.test(msg=f"{script}: {label}"):
            before = tree(sandbox.base)
            result = sandbox.run(script)
            assert result.returncode == 78, result.stderr
            assert key in result.stderr
            assert tree_diff(before, tree(sandbox.base, ignore=())) == []
    with subtests.test(msg="clean: not YAML"):
        sandbox.config_path.write_text("version: 1\npolicies: [\n")
        result = sandbox.run("clean", "--run", RUN_A)
        assert result.returncode == 78, result.stderr
        assert not sandbox.state.exists()
    assert sandbox.snapshot() == {"logs/old.log": b"x"}
