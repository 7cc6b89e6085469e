"""Trials on hostile inputs: odd names (newlines, non-UTF-8, leading dashes, 255 bytes),
long paths, hard links, a FIFO, a socket and a symlink; a tree 2,000 directories deep
below a path past PATH_MAX; and the chain run as uid nobody, with a file and a directory
it cannot read."""

import ctypes
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from ops.state.lock import LOCK_FD_ENV
from tools.chaos.dataset import Dataset, FileSpec, configure, dataset, random_content
from tools.chaos.files import DIR_FLAGS
from tools.chaos.oracle import data_ids, judge, settle
from tools.chaos.runner import real_run
from tools.sandbox import DAY, SCRIPTS, log_events

NOBODY = 65534


HOSTILE_NAMES = [
    b"-rf.log",
    b"--help.log",
    b"-- .log",
    b"line\nbreak.log",
    b"carriage\rreturn.log",
    b"\xff\xfe-not-utf8.log",
    b"caf\xe9-latin1.log",
    b"back\\slash.log",
    b"  spaces  .log",
    b"quote\"'.log",
    b"star*?[x].log",
    b"tab\tname.log",
    b"\xe2\x80\x8b-zero-width.log",
    b"n" * 251 + b".log",
]


def _bind_socket(dir_path: Path, name: str) -> None:
    fd = os.open(dir_path, DIR_FLAGS)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.bind(f"/proc/self/fd/{fd}/{name}")  # short however deep the directory is
    finally:
        os.close(fd)


def trial_hostile_names(rng, sb, scratch, out):
    configure(sb, rng, journals=False)
    ds = dataset(sb, rng, 2, 8)
    root = sb.data / "logs"
    old = time.time() - 90 * DAY
    for name in rng.sample(HOSTILE_NAMES, k=rng.randint(6, len(HOSTILE_NAMES))):
        d = rng.choice([b"", b"-dir", b"odd\ndir", b"\xfe\xfd"])
        ds.add("logs", (d + b"/" if d else b"") + name, random_content(rng), 90, True)
    long_dir = b"/".join(b"L%02d" % i + b"x" * 200 for i in range(rng.randint(10, 17)))  # ~2-3.5 KB
    ds.add("logs", long_dir + b"/long-path.log", b"deep and long\n" * 5, 90, True)
    first = ds.add("logs", b"links/first.log", b"one inode, two names\n" * 3, 90, True)
    os.link(root / "links/first.log", root / "links/second.log")
    ds.files[b"logs/links/second.log"] = FileSpec("logs", b"links/second.log", first.content, True, first.mtime)
    (root / "special").mkdir()
    os.mkfifo(root / "special/feed.log")
    _bind_socket(root / "special", "gateway.log")
    outside = sb.base / "outside.log"
    outside.write_bytes(b"outside\n")
    os.symlink(outside, root / "special/link.log")
    for special in ("feed.log", "gateway.log", "link.log"):
        os.utime(root / "special" / special, (old, old), follow_symlinks=False)
    out.faults += 1
    got = real_run(sb, timeout=120)
    out.recovered = got.code == 0
    if got.code:
        out.bad(f"maintenance on hostile names exited {got.code}: {got.out[-400:]}")
    now = judge(sb, ds, scratch, out)
    reported = {e.get("path") for e in log_events(sb) if e["event"] == "skip"}
    for rel, kind in ((b"special/feed.log", "fifo"), (b"special/gateway.log", "socket")):
        if now.special.get(b"logs/" + rel) != kind:
            out.bad(f"{rel!r} ({kind}) was removed or replaced")
        if os.fsdecode(rel) not in reported:
            out.bad(f"{rel!r} ({kind}) was not reported as skipped")
    if b"logs/special/link.log" not in now.links or outside.read_bytes() != b"outside\n":
        out.bad("a symlink under the root, or its target outside, was touched")
    settle(sb, ds, out)


DEEP = 2000


def trial_hostile_deep(rng, sb, scratch, out):
    configure(sb, rng, dests=1, journals=False)
    ds = Dataset(sb)
    depths = sorted({1000, DEEP, *(rng.randint(1, DEEP) for _ in range(3))})
    for depth in depths:
        ds.add("logs", b"d/" * depth + b"at-%d.log" % depth, b"depth %d\n" % depth, 60, True)
    deepest = len(os.fsencode(sb.data / "logs")) + 1 + 2 * DEEP + len(b"at-%d.log" % DEEP)
    out.notes.append(
        f"deepest file: {DEEP} directories, {2 * DEEP + 11}-byte relative path, "
        f"{deepest}-byte absolute path (PATH_MAX is {os.pathconf('/', 'PC_PATH_MAX')})"
    )
    out.faults += 1
    got = real_run(sb, timeout=300)
    out.recovered = got.code == 0
    if got.code:
        out.bad(f"maintenance on a {DEEP}-deep tree exited {got.code}: {got.out[-400:]}")
    if "RecursionError" in got.out:
        out.bad("a recursion limit was hit")
    judge(sb, ds, scratch, out)
    settle(sb, ds, out, passes=1)


def blocked_ancestor(path: Path, uid: int, gid: int) -> Path | None:
    """The topmost directory on the way to ``path`` that ``uid`` cannot search, or None."""
    for p in [*reversed(path.parents), path]:
        st = os.stat(p)
        m = st.st_mode
        if not ((st.st_uid == uid and m & 0o100) or (st.st_gid == gid and m & 0o010) or m & 0o001):
            return p
    return None


_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, MS_BIND, MS_REC, MS_PRIVATE = 0x00020000, 4096, 16384, 1 << 18


def drop_to_nobody(bind_src: Path | None, bind_dst: Path | None):
    """preexec_fn: (in a private mount namespace, bind the sandbox where nobody can reach
    it, then) drop to uid/gid nobody with no supplementary groups."""
    src, dst = (os.fsencode(bind_src), os.fsencode(bind_dst)) if bind_src else (None, None)

    def preexec():
        if src:
            if _libc.unshare(CLONE_NEWNS) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
            if _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
                raise OSError(ctypes.get_errno(), "mount --make-rprivate /")
            if _libc.mount(src, dst, None, MS_BIND, None) != 0:
                raise OSError(ctypes.get_errno(), "mount --bind")
            os.chdir(dst)
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    return preexec


def trial_hostile_uid(rng, sb, scratch, out):
    configure(sb, rng, journals=False)
    ds = dataset(sb, rng, 4, 20)
    secret = ds.add("logs", b"private/orders-0600.log", b"only root may read this\n" * 4, 90, True)
    vaulted = ds.add("logs", b"vault/fills-in-0700-dir.log", b"in a directory nobody may list\n", 90, True)
    ds.not_expected_gone |= {secret.key, vaulted.key}
    for dirpath, dirs, files in os.walk(sb.base):
        for n in dirs + files:
            os.lchown(os.path.join(dirpath, n), NOBODY, NOBODY)
    os.chown(sb.base, NOBODY, NOBODY)
    os.chmod(sb.base, 0o755)
    secret_path = sb.data / "logs" / "private" / "orders-0600.log"
    os.chown(secret_path, 0, 0)
    os.chmod(secret_path, 0o600)
    os.chown(sb.data / "logs" / "vault", 0, 0)
    os.chmod(sb.data / "logs" / "vault", 0o700)
    blocked = blocked_ancestor(sb.base, NOBODY, NOBODY)
    config = sb.config_path
    if blocked is not None:  # e.g. pytest's 0700 basetemp: reach the sandbox through a bind mount
        config = blocked / sb.config_path.name
    cmd = [sys.executable, str(SCRIPTS / "maintenance.py"), "--config", str(config)]
    env = dict(os.environ, QTS_OPS_PRIORITY="normal", HOME="/nonexistent")
    env.pop(LOCK_FD_ENV, None)
    try:
        got = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            cwd="/",
            preexec_fn=drop_to_nobody(sb.base if blocked else None, blocked),
        )
    except subprocess.SubprocessError as exc:
        out.skipped = (
            f"cannot run the chain as uid {NOBODY} here ({blocked} blocks it and the bind mount failed): {exc}"
        )
        return
    out.faults += 1
    out.mechanism = "setuid nobody" + (f" (private bind mount over {blocked})" if blocked else "")
    out.recovered = got.returncode == 0
    if got.returncode:
        out.bad(f"maintenance as nobody exited {got.returncode}: {got.stderr[-400:]}")
    judge(sb, ds, scratch, out)
    if secret_path.read_bytes() != secret.content:
        out.bad("the file nobody cannot read was lost")
    said = [e for e in log_events(sb) if e.get("path") == "private/orders-0600.log"]
    if not any(e["event"] == "not_archived" and "Permission denied" in e.get("reason", "") for e in said):
        out.bad(f"the unreadable file was not reported as not archived (permission denied): {said}")
    said = [e for e in log_events(sb) if e.get("path") == "vault"]
    if not any(e["event"] == "skip" and "Permission denied" in e.get("reason", "") for e in said):
        out.bad(f"the directory nobody cannot list was not reported (its expired files are kept unsaid): {said}")
    if os.stat(sb.state).st_uid != NOBODY:
        out.bad("the state dir is not owned by the dropped uid")
    if any(k in data_ids(sb) for k in ds.expected_gone()):  # one more clean run, as nobody too
        subprocess.run(
            cmd,
            capture_output=True,
            env=env,
            timeout=120,
            cwd="/",
            preexec_fn=drop_to_nobody(sb.base if blocked else None, blocked),
        )
    out.kept_forever = sorted(k for k in ds.expected_gone() if k in data_ids(sb))
