"""scripts/find.py's human output: every path whole on an 80-column terminal, and names that
are not UTF-8 written escaped as the journal writes them, never as U+FFFD."""

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

from tools.sandbox import SCRIPTS

from ._support import run_ok

DEEP = "2026/01/05/" + "a-rather-long-directory-name/" * 2


def _on_a_terminal(sandbox, *args: str, columns: int = 80) -> str:
    """The script's output on a pseudo-terminal ``columns`` wide, escape sequences removed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "QTS_OPS_LOCK_FD")}
    env.update(TERM="xterm-256color", QTS_OPS_PRIORITY="normal")
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "find.py"), "--config", str(sandbox.config_path), *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=sandbox.base,
        start_new_session=True,
    )
    os.close(slave)
    out, deadline = b"", time.monotonic() + 60
    try:
        while time.monotonic() < deadline and select.select([master], [], [], 1)[0]:
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:  # EIO: the child's side of the terminal is closed
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        proc.wait(timeout=60)
    assert proc.returncode == 0, out
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07", "", out.decode()).replace("\r", "")


def test_find_on_an_80_column_terminal_shows_every_path_whole(sandbox):
    names = [f"{DEEP}ticks-{i}.log" for i in range(3)]
    for name in names:
        sandbox.file(name, name)
    run_ok(sandbox, "maintenance")
    paths = [
        json.loads(line)["path"]
        for line in run_ok(sandbox, "find", "--file", str(sandbox.data / "*"), "--json").stdout.splitlines()
    ]
    assert len(paths) == 3 and all(len(p) > 80 for p in paths)

    shown = _on_a_terminal(sandbox, "--file", str(sandbox.data / "*"))

    assert "\u2026" not in shown, shown  # rich's ellipsis: a cell was cut
    # The table's first column, read down: the paths, each folded over as many lines as it needs.
    column = "".join(line.split("\u2502")[1].strip() for line in shown.splitlines() if line.startswith("\u2502"))
    assert column == "".join(paths), shown


def test_find_prints_a_name_that_is_not_utf8_escaped_as_the_journal_does(sandbox):
    name = b"fills-\xe9\xff.log"
    path = os.path.join(os.fsencode(sandbox.data / "logs"), name)
    with open(path, "wb") as f:
        f.write(b"fill\n")
    os.utime(path, (1_600_000_000, 1_600_000_000))
    run_ok(sandbox, "maintenance")
    assert b'"path":"fills-\\udce9\\udcff.log"' in (sandbox.run_dir() / "clean.journal.jsonl").read_bytes()
    escaped = str(sandbox.data / "logs") + "/fills-\\udce9\\udcff.log"

    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "find.py"),
            "--config",
            str(sandbox.config_path),
            "--file",
            str(sandbox.data / "logs" / "fills-*"),
        ],
        capture_output=True,
        env={**os.environ, "QTS_OPS_PRIORITY": "normal"},
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    rows = [line.split(b"\t") for line in result.stdout.splitlines()]
    assert [row[0] for row in rows[2:]] == [escaped.encode()], result.stdout
    assert b"\xe9\xff" not in result.stdout and "\ufffd".encode() not in result.stdout
