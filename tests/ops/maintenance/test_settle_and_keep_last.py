"""settle and keep_last through the whole chain: such a file is never archived nor deleted."""

import json

from ._support import archive_members, decisions, run_ok


def test_settling_and_kept_last_files_are_never_archived_or_deleted(sandbox):
    policy = sandbox.config["policies"][0]
    policy.update(older_than="1m", settle="10m", keep_last=3)
    sandbox.write_config()
    minute = 1 / 1440
    sandbox.file("settling.log", "the core may still write this", age_days=2 * minute)  # old enough, not settled
    sandbox.file("just-now.log", "written a moment ago", age_days=0)
    sandbox.file("newest-settled.log", "kept by keep_last", age_days=1)
    sandbox.file("old-1.log", "expired", age_days=2)
    sandbox.file("old-2.log", "expired", age_days=3)

    run_ok(sandbox, "maintenance")
    (run_id,) = sandbox.runs()
    assert sandbox.snapshot() == {
        "logs/settling.log": b"the core may still write this",
        "logs/just-now.log": b"written a moment ago",
        "logs/newest-settled.log": b"kept by keep_last",
    }
    assert sorted(archive_members(sandbox.backups / run_id / "logs.tar.zst")) == [b"old-1.log", b"old-2.log"]
    sums = (sandbox.backups / run_id / "logs.sha256").read_bytes()
    assert b"settling.log" not in sums and b"just-now.log" not in sums and b"newest-settled" not in sums
    assert sorted(d["path"] for d in decisions(sandbox, run_id)) == ["old-1.log", "old-2.log"]

    scan = json.loads((sandbox.run_dir(run_id) / "scan.ok.json").read_bytes())
    # keep_last 3 is the three newest matching files: two of them settling (settle decides
    # first), the third kept by keep_last although it is older than older_than.
    assert scan["policies"]["logs"]["reasons"] == {"settle": 2, "keep_last": 1, "older_than": 2}


def test_an_expired_file_the_core_writes_to_after_scan_is_neither_archived_nor_deleted(sandbox):
    """Scanned as expired, then written again (so now within settle): it stays, in full."""
    sandbox.file("reopened.log", "old content\n", age_days=40)
    run_ok(sandbox, "scan")
    path = sandbox.data / "logs" / "reopened.log"
    with open(path, "ab") as f:
        f.write(b"the core reopened it\n")
    run_ok(sandbox, "backup")
    run_ok(sandbox, "verify")
    run_ok(sandbox, "clean")
    assert path.read_bytes() == b"old content\nthe core reopened it\n"
    (run_id,) = sandbox.runs()
    (decision,) = decisions(sandbox, run_id)
    assert decision["event"] == "kept"
    assert archive_members(sandbox.backups / run_id / "logs.tar.zst") == []
    assert (sandbox.backups / run_id / "logs.sha256").read_bytes() == b""
