"""The operators' guide for unattended runs, proven through scripts/maintenance.py as cron runs it.

(a) a failed backup deletes nothing; (b) running twice gives the same result; (c) every log
line lands in the fixed log dir and nowhere else, one line per clean decision; (d) with the
toolkit absent, broken or disabled, the data is untouched.
"""

import os
import re
import stat

import pytest

from ._support import archive_members, decisions, log_records, run_ok, tree, tree_diff


def _host(sandbox):
    """Aged data as a QTS host leaves it: expired logs, recent ones, and one the core writes now."""
    sandbox.file("2026-08/engine.log", "engine started\n" * 40, age_days=90)
    sandbox.file("2026-08/gateway.log", "gateway\n" * 40, age_days=89)
    sandbox.file("2026-09/engine.log", "engine again\n" * 40, age_days=60)
    sandbox.file("2026-11/engine.log", "recent\n", age_days=3)
    sandbox.file("current.log", "being written\n", age_days=0)
    return sandbox.snapshot()


EXPIRED = {"logs/2026-08/engine.log", "logs/2026-08/gateway.log", "logs/2026-09/engine.log"}


# -- (a) a failed backup deletes nothing ---------------------------------------------------


def _destination_is_a_file(sandbox):
    sandbox.backups.parent.mkdir(parents=True, exist_ok=True)
    sandbox.backups.write_bytes(b"an operator's file where the backup directory should be\n")
    return {}


def _crash_mid_archive(sandbox):
    return {"QTS_OPS_CRASH_AT": "backup.after_member:2"}


def _crash_after_publish(sandbox):
    return {"QTS_OPS_CRASH_AT": "backup.before_manifest"}


@pytest.mark.parametrize(
    "fault, published",
    [(_destination_is_a_file, False), (_crash_mid_archive, False), (_crash_after_publish, True)],
    ids=["destination-path-is-a-file", "sigkill-mid-archive", "sigkill-after-publish"],
)
def test_a_failed_backup_deletes_nothing_and_clean_refuses(sandbox, fault, published):
    data = _host(sandbox)
    env = fault(sandbox)
    result = sandbox.run("maintenance", env=env)
    assert result.returncode == 1, f"maintenance exited {result.returncode}: {result.stderr}"
    (run_id,) = sandbox.runs()
    assert not (sandbox.run_dir(run_id) / "backup.ok.json").exists()
    assert sandbox.snapshot() == data
    if sandbox.backups.is_dir():  # a destination never shows a half-written run
        visible = [n for n in os.listdir(sandbox.backups) if not n.startswith(".")]
        assert visible == ([run_id] if published else [])

    before = tree(sandbox.base)
    cleaned = sandbox.run("clean", "--run", run_id)
    assert cleaned.returncode == 2, cleaned.stderr
    assert tree_diff(before, tree(sandbox.base)) == []
    assert sandbox.snapshot() == data

    if published:  # the next cron tick finishes the same run, adopting what was published
        run_ok(sandbox, "maintenance")
        assert sandbox.runs() == [run_id], "the unfinished run was resumed, not repeated"
        assert os.listdir(sandbox.backups) == [run_id], "no second archive of the same run"
        assert sandbox.snapshot() == {k: v for k, v in data.items() if k not in EXPIRED}


# -- (b) running twice gives the same result -----------------------------------------------


def test_running_maintenance_twice_gives_the_same_result(sandbox):
    data = _host(sandbox)
    run_ok(sandbox, "maintenance")
    after_first = sandbox.snapshot()
    assert after_first == {k: v for k, v in data.items() if k not in EXPIRED}
    (first,) = sandbox.runs()
    archives_before = tree(sandbox.backups)

    run_ok(sandbox, "maintenance")
    assert sandbox.snapshot() == after_first
    assert tree(sandbox.backups) == archives_before, "no archive was added, rewritten or removed"
    second = [r for r in sandbox.runs() if r != first]
    assert len(second) == 1
    assert decisions(sandbox, second[0]) == [], "the second run deleted (or even considered) nothing"
    assert [r["event"] for r in decisions(sandbox, first)] == ["deleted"] * 3
    members = archive_members(sandbox.backups / first / "logs.tar.zst")
    assert sorted(members) == sorted(p.removeprefix("logs/").encode() for p in EXPIRED)

    # Everything the toolkit created over both runs is private to its user.
    wrong = []
    for top in (sandbox.state, sandbox.logs, sandbox.backups):
        for dirpath, _dirs, files in os.walk(top):
            for path in [dirpath] + [os.path.join(dirpath, f) for f in files]:
                mode = stat.S_IMODE(os.lstat(path).st_mode)
                if mode != (0o700 if os.path.isdir(path) else 0o600):
                    wrong.append(f"{path}: {oct(mode)}")
    assert wrong == []


# -- (c) logs land in the fixed log dir and nowhere else -----------------------------------


def test_every_log_line_lands_in_the_fixed_log_dir_and_nowhere_else(sandbox, tmp_path):
    _host(sandbox)
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    top_before = sorted(os.listdir(sandbox.base))
    data_dirs_before = {rel for rel, what in tree(sandbox.data).items() if what[0] == "dir"}

    # The core rewrites one expired file after its backup: clean must keep it, and say so.
    changed = sandbox.data / "logs" / "2026-09" / "engine.log"
    env = {"TMPDIR": str(tmpdir), "TEMP": str(tmpdir), "TMP": str(tmpdir), "QTS_OPS_CRASH_AT": "verify.before_manifest"}
    assert sandbox.run("maintenance", env=env).returncode == 1  # stop between verify and clean
    (run_id,) = sandbox.runs()
    with open(changed, "ab") as f:
        f.write(b"the core appended a line\n")
    result = sandbox.run("maintenance", env={"TMPDIR": str(tmpdir), "TEMP": str(tmpdir), "TMP": str(tmpdir)})
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", ""), "under cron a successful run prints nothing"

    assert os.listdir(tmpdir) == []
    assert sorted(os.listdir(sandbox.base)) == sorted(top_before + ["var"])
    assert sorted(os.listdir(sandbox.base / "var")) == ["backups", "log", "state"]
    logs = os.listdir(sandbox.logs)
    assert logs and all(re.fullmatch(r"ops-\d{4}-\d{2}\.log", n) for n in logs), logs
    data_now = tree(sandbox.data)
    assert {rel for rel, what in data_now.items() if what[0] == "file"} == {
        b"logs/2026-09/engine.log",
        b"logs/2026-11/engine.log",
        b"logs/current.log",
    }
    assert {rel for rel, what in data_now.items() if what[0] == "dir"} <= data_dirs_before

    records = log_records(sandbox)
    assert {r["step"] for r in records} == {"maintenance", "scan", "backup", "verify", "clean", "scrub"}
    clean_lines = decisions(sandbox, run_id)
    by_path = {}
    for r in clean_lines:
        assert r["path"] not in by_path, f"two decision lines for {r['path']}"
        by_path[r["path"]] = r
    assert set(by_path) == {"2026-08/engine.log", "2026-08/gateway.log", "2026-09/engine.log"}
    assert by_path["2026-09/engine.log"]["event"] == "kept"
    assert by_path["2026-09/engine.log"]["reason"].startswith("changed since backup (size, mtime")
    for path in ("2026-08/engine.log", "2026-08/gateway.log"):
        assert by_path[path]["event"] == "deleted"
        assert by_path[path]["reason"]
    for line in (sandbox.logs / logs[0]).read_bytes().splitlines():
        assert line.startswith(b"{") and line.endswith(b"}"), line


# -- (d) with ops absent, broken or disabled, the data is untouched -------------------------


def _no_config(sandbox):
    sandbox.config_path.unlink()
    return 78


def _broken_config(sandbox):
    sandbox.config_path.write_text("version: 1\npolicies:\n  - name: logs\n    root: [unclosed\n")
    return 78


def _invalid_config(sandbox):
    sandbox.config["policies"][0]["older_than"] = "thirty days"
    sandbox.write_config()
    return 78


def _disabled(sandbox):
    sandbox.config["policies"] = []
    sandbox.write_config()
    return 0


@pytest.mark.parametrize(
    "absent",
    [_no_config, _broken_config, _invalid_config, _disabled],
    ids=["no-config", "broken-yaml", "invalid-config", "no-policies"],
)
def test_with_ops_absent_broken_or_disabled_the_data_is_untouched(sandbox, absent):
    _host(sandbox)
    code = absent(sandbox)
    data_before = tree(sandbox.data)
    result = sandbox.run("maintenance")
    assert result.returncode == code, result.stderr
    assert tree(sandbox.data) == data_before
    if code == 78:  # refused before anything: not even a state, log or backup directory
        assert sorted(os.listdir(sandbox.base)) == sorted(
            n for n in ("data", "retention.yaml") if (sandbox.base / n).exists()
        )
    assert not sandbox.backups.exists() or os.listdir(sandbox.backups) == []
