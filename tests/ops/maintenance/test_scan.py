"""scripts/scan.py alone: it records, it never archives or deletes, and it is idempotent."""

import json
import os

from ._support import RUN_A, change_one_byte, run_ok, tree, tree_diff


def _entries(sandbox, run_id):
    lines = (sandbox.run_dir(run_id) / "scan.logs.jsonl").read_bytes().splitlines()
    return [json.loads(line) for line in lines]


def test_scan_records_expired_files_by_root_relative_path_and_changes_no_data(sandbox):
    sandbox.file("old.log", "old")
    sandbox.file("a/b/deep.log", "deep")
    sandbox.file("young.log", "young", age_days=2)
    sandbox.file("old.txt", "not matched by the include glob")
    link = sandbox.data / "logs" / "link.log"
    os.symlink(sandbox.data / "logs" / "old.log", link)
    os.utime(link, (1_600_000_000, 1_600_000_000), follow_symlinks=False)  # an old link, still never listed
    data_before = tree(sandbox.data)
    run_ok(sandbox, "scan", "--run", RUN_A)
    assert tree(sandbox.data) == data_before
    assert sorted(e["path"] for e in _entries(sandbox, RUN_A)) == ["a/b/deep.log", "old.log"]
    assert not sandbox.backups.exists()
    manifest = json.loads((sandbox.run_dir(RUN_A) / "scan.ok.json").read_bytes())
    assert manifest["policies"]["logs"]["expired"] == 2
    assert manifest["run_id"] == RUN_A


def test_scan_rerun_after_success_exits_0_changes_nothing_and_refuses_once_tampered(sandbox):
    sandbox.file("old.log")
    run_ok(sandbox, "scan", "--run", RUN_A)
    sandbox.file("arrived-later.log")  # a rerun must not silently re-scan into the same run
    before = tree(sandbox.base)
    result = sandbox.run("scan", "--run", RUN_A)
    assert result.returncode == 0, result.stderr
    assert tree_diff(before, tree(sandbox.base)) == []
    assert [e["path"] for e in _entries(sandbox, RUN_A)] == ["old.log"]

    change_one_byte(sandbox.run_dir(RUN_A) / "scan.ok.json", b'"expired": ')
    before = tree(sandbox.base)
    result = sandbox.run("scan", "--run", RUN_A)
    assert result.returncode == 2, result.stderr
    assert tree_diff(before, tree(sandbox.base)) == []


def test_scan_fails_on_a_missing_root_unless_missing_ok(sandbox):
    sandbox.config["policies"][0]["root"] = "data/absent"
    sandbox.write_config()
    result = sandbox.run("scan", "--run", RUN_A)
    assert result.returncode == 1, result.stderr
    assert "data/absent" in result.stderr
    assert not (sandbox.run_dir(RUN_A) / "scan.ok.json").exists()
    sandbox.config["policies"][0]["missing_ok"] = True
    sandbox.write_config()
    run_ok(sandbox, "scan", "--run", RUN_A)
    assert json.loads((sandbox.run_dir(RUN_A) / "scan.ok.json").read_bytes())["policies"] == {}


def test_scan_of_a_root_that_is_a_symbolic_link_says_so_and_records_nothing(sandbox):
    real = sandbox.data / "real-logs"
    (sandbox.data / "logs").rename(real)
    (sandbox.data / "logs").symlink_to(real)
    sandbox.file("old.log", "old")  # through the link: the file is in real-logs
    result = sandbox.run("scan", "--run", RUN_A)
    assert result.returncode == 1, result.stderr
    assert f"policy logs: root {sandbox.data / 'logs'} is a symbolic link" in result.stderr, result.stderr
    assert "is not a directory" not in result.stderr
    assert not (sandbox.run_dir(RUN_A) / "scan.ok.json").exists()
    assert (real / "old.log").read_text() == "old"
