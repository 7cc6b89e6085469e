"""FIFOs and sockets under a root, matching include, never block or break a run: they are
left alone and each is reported in the log. Nor do they in the run's own state."""

import errno
import os
import socket
import stat
from pathlib import Path

from e2e_support import events_for

from ops.sys.paths import open_plain_file
from tools.sandbox import log_events, tar_members


def test_fifo_and_socket_matching_include_are_skipped_logged_and_left_alone(sandbox, monkeypatch):
    root = sandbox.data / "logs"
    sandbox.file("plain.log", "old line\n" * 10)
    (root / "feeds").mkdir()
    os.mkfifo(root / "feeds" / "quotes.log")
    monkeypatch.chdir(root)  # a socket path is limited to 108 bytes; bind it relative to the root
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind("gateway.log")
    old = os.stat(root / "plain.log").st_mtime_ns
    for special in (root / "feeds" / "quotes.log", root / "gateway.log"):
        os.utime(special, ns=(old, old))  # as expired as the plain file
    identity = {p: os.lstat(root / p) for p in ("feeds/quotes.log", "gateway.log")}

    done = sandbox.run("maintenance", timeout=60)  # a FIFO opened for reading would hang here
    assert done.returncode == 0, done.stderr

    for rel, st in identity.items():
        now = os.lstat(root / rel)
        assert (now.st_ino, stat.S_IFMT(now.st_mode)) == (st.st_ino, stat.S_IFMT(st.st_mode)), f"{rel} was touched"
        assert [e["event"] for e in events_for(sandbox, rel)] == ["skip"], (
            f"{rel} is not reported as skipped (once, and nothing else): {events_for(sandbox, rel)}"
        )
    assert not (root / "plain.log").exists(), "the regular file next to them was not cleaned"
    [run_id] = sandbox.runs()
    assert tar_members(sandbox.backups / run_id / "logs.tar.zst") == ["plain.log"]


def test_file_swapped_for_fifo_after_scan_does_not_hang_backup_and_is_kept(sandbox):
    root = sandbox.data / "logs"
    sandbox.file("ticks.log", "tick\n" * 10)
    sandbox.file("bars.log", "bar\n" * 10)
    assert sandbox.run("scan").returncode == 0
    os.unlink(root / "ticks.log")
    os.mkfifo(root / "ticks.log")

    for step in ("backup", "verify", "clean"):
        done = sandbox.run(step, timeout=60)
        assert done.returncode == 0, f"{step}: {done.stderr}"

    assert stat.S_ISFIFO(os.lstat(root / "ticks.log").st_mode), "the FIFO in the file's place was removed"
    assert not events_for(sandbox, "ticks.log", "deleted")
    assert [e["event"] for e in log_events(sandbox) if e.get("path") == "bars.log"] == ["deleted"]
    [run_id] = sandbox.runs()
    assert tar_members(sandbox.backups / run_id / "logs.tar.zst") == ["bars.log"]


def test_run_state_opens_only_regular_files(tmp_path, monkeypatch):
    """The one opener of run state: a symlink, FIFO, socket, device or directory is an
    OSError at once (never a read that blocks or has no end), a regular file opens."""
    (tmp_path / "plain").write_bytes(b"{}\n")
    with open_plain_file(tmp_path / "plain") as f:
        assert f.read() == b"{}\n"
    (tmp_path / "link").symlink_to(tmp_path / "plain")
    os.mkfifo(tmp_path / "fifo")
    monkeypatch.chdir(tmp_path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind("sock")
    expected = {
        tmp_path / "link": errno.ELOOP,
        tmp_path / "fifo": errno.EINVAL,
        tmp_path / "sock": errno.EINVAL,
        Path("/dev/zero"): errno.EINVAL,
        tmp_path: errno.EINVAL,
    }
    for path, code in expected.items():
        try:
            open_plain_file(path).close()
        except OSError as exc:
            assert exc.errno == code, (path, exc)
        else:
            raise AssertionError(f"{path} was opened")


def _one_finished_run(sandbox) -> str:
    sandbox.file("a.log", "alpha\n")
    done = sandbox.run("maintenance", timeout=60)
    assert done.returncode == 0, done.stderr
    return sandbox.runs()[-1]


def _fifo_in_place_of(path) -> None:
    path.unlink()
    os.mkfifo(path)


def test_a_fifo_for_the_newest_runs_backup_manifest_is_refused_by_cron_not_waited_on(sandbox):
    sandbox.file("a.log", "alpha\n")
    for step in ("scan", "backup"):
        assert sandbox.run(step).returncode == 0
    _fifo_in_place_of(sandbox.run_dir() / "backup.ok.json")  # maintenance reads it to pick the run
    result = sandbox.run("maintenance", timeout=60)
    assert result.returncode == 2, result.stderr
    assert "backup.ok.json is not a regular file" in result.stderr
    assert sandbox.snapshot() == {"logs/a.log": b"alpha\n"}
    status = sandbox.run("status", timeout=60)  # and status reports it instead of hanging
    assert status.returncode == 0, status.stderr
    assert "backup.ok.json is damaged (backup.ok.json is not a regular file)" in status.stdout


def test_a_fifo_for_an_older_runs_scan_manifest_does_not_stop_the_next_scan(sandbox):
    first = _one_finished_run(sandbox)
    _fifo_in_place_of(sandbox.run_dir(first) / "scan.ok.json")  # scan reads the last one for its clock check
    sandbox.file("b.log", "bravo\n")
    result = sandbox.run("maintenance", timeout=60)
    assert result.returncode == 0, result.stderr
    assert sandbox.snapshot() == {}


def test_a_catalogue_that_is_not_a_file_is_a_plain_error_for_find(sandbox):
    run_id = _one_finished_run(sandbox)
    catalogue = sandbox.state / "catalogue" / f"{run_id}.jsonl"
    _fifo_in_place_of(catalogue)
    result = sandbox.run("find", "--file", "*", timeout=60)
    assert result.returncode == 1, result.stderr
    assert f"catalogue file {catalogue} cannot be read" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_clean_journal_swapped_for_a_symlink_neither_follows_nor_truncates_it(sandbox):
    sandbox.file("a.log", "alpha\n")
    for step in ("scan", "backup", "verify"):
        assert sandbox.run(step).returncode == 0
    target = sandbox.base / "precious.txt"
    target.write_bytes(b"a torn line: no newline at the end")
    (sandbox.run_dir() / "clean.journal.jsonl").symlink_to(target)
    result = sandbox.run("clean", timeout=60)
    assert result.returncode == 1, result.stderr
    assert target.read_bytes() == b"a torn line: no newline at the end"
    assert sandbox.snapshot() == {"logs/a.log": b"alpha\n"}
