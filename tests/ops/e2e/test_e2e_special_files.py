"""FIFOs and sockets under a root, matching include, never block or break a run: they are
left alone and each is reported in the log. Nor do they in the run's own state."""

import errno
import os
import socket
import stat

from e2e_support import events_for, log_events, tar_members

from ops.paths import open_plain_file


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
        assert [e["event"] for e in events_for(sandbox, rel)] == ["skip"], \
            f"{rel} is not reported as skipped (once, and nothing else): {events_for(sandbox, rel)}"
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
    """The one opener of manifests and entry files: a symlink, FIFO, socket or device is an
    OSError at once (never a read that blocks or has no end), a regular file opens."""
    (tmp_path / "plain").write_bytes(b"{}\n")
    with open_plain_file(tmp_path / "plain") as f:
        assert f.read() == b"{}\n"
    (tmp_path / "link").symlink_to(tmp_path / "plain")
    os.mkfifo(tmp_path / "fifo")
    monkeypatch.chdir(tmp_path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind("sock")
    expected = {"link": errno.ELOOP, "fifo": errno.EINVAL, "sock": errno.EINVAL, "/dev/zero": errno.EINVAL}
    for name, code in expected.items():
        try:
            open_plain_file(tmp_path / name).close()
        except OSError as exc:
            assert exc.errno == code, (name, exc)
        else:
            raise AssertionError(f"{name} was opened")
