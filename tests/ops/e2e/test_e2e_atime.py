"""Backing a file up must not change it, its access time included: backup opens sources
with O_NOATIME (an atime update per file is a journal write per file on the trading
host), and falls back to a plain open where the kernel refuses it (not the owner)."""

import os
import time

from ops.sys.paths import Beneath


def test_backup_leaves_every_source_access_time_as_it_was(sandbox):
    day = 86400 * 10**9
    names = [f"a/{i}.log" for i in range(5)]
    for name in names:
        sandbox.file(name, f"{name}\n" * 100)
    root = sandbox.data / "logs"
    # Ten days ago: a plain read under relatime (the default mount option) would update it.
    stale = time.time_ns() - 10 * day
    for name in names:
        st = os.stat(root / name)
        os.utime(root / name, ns=(stale, st.st_mtime_ns))
    before = {n: os.stat(root / n).st_atime_ns for n in names}
    for step in ("scan", "backup"):
        assert sandbox.run(step).returncode == 0
    assert {n: os.stat(root / n).st_atime_ns for n in names} == before


def test_a_reader_who_does_not_own_the_file_still_opens_it(tmp_path):
    # O_NOATIME on someone else's file is EPERM even for a reader allowed to read it; a
    # real unprivileged child (uid nobody) checks the fallback, since root may always ask.
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.log").write_bytes(b"root's file\n")
    os.chmod(tmp_path, 0o755)
    os.chmod(tmp_path / "d", 0o755)
    os.chmod(tmp_path / "d" / "f.log", 0o644)
    pid = os.fork()
    if pid == 0:  # the child: hold the root, drop to nobody, open beneath it, report by exit code
        try:
            with Beneath(tmp_path) as beneath:
                os.setgid(65534)
                os.setuid(65534)
                fd, _ = beneath.open_regular("d/f.log")
                ok = os.read(fd, 100) == b"root's file\n"
                os.close(fd)
            os._exit(0 if ok else 3)
        except BaseException:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
