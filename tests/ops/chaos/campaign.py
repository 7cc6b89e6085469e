"""The fault campaign: "failure preserves data", proven by injecting failures.

Every trial builds a fresh sandbox (the shared ``Sandbox`` of tests/conftest.py) with a
random dataset, injects one kind of fault into the real scripts, recovers by running
``scripts/maintenance.py`` again without faults, and then judges the result with
standard tools only (GNU tar, sha256sum) against what the trial wrote:

  * no loss: every file ever written is still there unchanged, or byte-identical in an
    archive that GNU tar extracts, ``sha256sum -c`` accepts and verify.ok.json vouches for;
  * nothing deleted twice, exactly the expected archives per run, no staging left behind
    for a run that completed its backup, the lock free;
  * nothing wrongly kept forever: after recovery (and at most two further clean runs)
    every expired, regular, readable, untouched file is gone.

Faults come in two prices. Expensive ones (a SIGKILL'd chain, a full tmpfs, a racing
writer, hostile trees, eight chains at once) run real chains. Cheap ones (a bit flip
checked by verify, an EIO at a given offset, an fsync failing at the n-th call, a verified
copy lost between verify and clean) run the real step scripts in a process forked from a
warm worker (``fork_run``): the script file is executed as ``__main__`` exactly as
``python scripts/<step>.py`` would, in its own process that can really be SIGKILLed,
without paying interpreter start-up each time.

Storage faults: "disk full" is a real tmpfs mounted as the destination or as the state
dir (skipped, with the mount error, where mount is not permitted); EIO on read, EIO on
fsync and short writes come from the fault-injecting subclass of the real local
destination in inject/faultdest.py. The table says which ran.

``scripts/chaos.py`` is the runner (``make chaos``); test_chaos_slice.py runs a small
seeded slice inside ``make test``.
"""

import ctypes
import hashlib
import importlib
import itertools
import json
import multiprocessing
import os
import random
import re
import runpy
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SCRIPTS = REPO / "scripts"
INJECT = HERE / "inject"
for _p in (REPO, REPO / "tests", REPO / "tests" / "ops" / "e2e", INJECT):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import e2e_support as e2e  # the e2e oracle helpers, reused (sys.path set just above)
import faultdest
from conftest import DAY, Sandbox

from ops import crashpoints
from ops.lock import LOCK_FD_ENV
from ops.manifest import RUN_ID_RE, STEPS

NOBODY = 65534
ARCHIVE_EXTS = (".tar.zst", ".tar.gz", ".tar")
CRASH_POINTS = ["backup.after_member", "backup.after_archive", "backup.before_publish", "publish.before_rename",
                "backup.after_publish", "clean.after_unlink", "scan.before_manifest", "backup.before_manifest",
                "verify.before_manifest", "clean.before_manifest"]
LOCK_BUSY = 75

# Kind -> (trials per CHAOS_TRIALS unit, relative cost for scheduling, description)
KINDS = {
    "sigkill-point": (1.0, 3, "SIGKILL at QTS_OPS_CRASH_AT=<point>[:n], 1-5 crashes in a row, then recovery"),
    "sigkill-time": (0.4, 5, "SIGKILL of the chain's whole process group after a random delay"),
    "disk-full-dest": (0.25, 3, "destination is a tmpfs too small for the archive"),
    "disk-full-state": (0.25, 3, "state dir is a tmpfs too small for the manifests and entry files"),
    "io-read-eio": (0.4, 3, "EIO at a random offset while verify reads a published file"),
    "io-fsync-eio": (0.4, 3, "EIO from the n-th fsync of publish (files, staging dir, parent dir)"),
    "io-short-write": (0.4, 3, "short writes at the file descriptor, some ending in EIO"),
    "corrupt-state": (0.5, 6, "bit flip / truncation / swap from another run of manifests and entry files"),
    "corrupt-dest": (0.5, 5, "bit flip / truncation / swap of archives, .sha256, SHA256SUMS, MANIFEST.json"),
    "copy-lost": (0.4, 4, "after verify, before clean: verified copies removed, cut, extended, symlinked, moved away"),
    "core-race": (0.25, 5, "a writer appends, rewrites, renames, replaces, swaps in symlinks during the chain"),
    "hostile-names": (0.25, 3, "newlines, non-UTF-8, leading dashes, 255-byte names, long paths, links, FIFO, socket"),
    "hostile-deep": (0.01, 20, "a tree 2,000 directories deep, below a path that puts it past PATH_MAX"),
    "hostile-uid": (0.1, 3, "the chain under uid nobody; one expired file and one directory unreadable for it"),
    "concurrency": (0.1, 5, "eight chains started at once"),
    "config-change": (0.4, 3, "between steps: quorum lowered, policy or destination removed, a second config on the state"),
}


# -- results ---------------------------------------------------------------------------------

@dataclass
class Outcome:
    kind: str
    trial: int
    seed: int
    faults: int = 0
    recovered: bool = False
    new_run: bool = False
    lost: list = field(default_factory=list)
    kept_forever: list = field(default_factory=list)
    violations: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    skipped: str = ""
    mechanism: str = ""
    seconds: float = 0.0
    budget: float = 1.0  # scales the cheap faults per trial (the slice in make test uses less)

    def count(self, rng: random.Random, lo: int, hi: int) -> int:
        return max(1, round(rng.randint(lo, hi) * self.budget))

    def bad(self, msg: str) -> None:
        if len(self.violations) < 20:
            self.violations.append(msg)

    @property
    def failed(self) -> bool:
        return bool(self.lost or self.kept_forever or self.violations)


class TrialAbort(Exception):
    """A trial cannot go on (its state is not what the next fault needs); already recorded."""


# -- running the real scripts ---------------------------------------------------------------

@dataclass
class Ran:
    code: int
    out: str


_counter = [0]


def fork_run(sb: Sandbox, script: str, *args: str, env: dict | None = None, timeout: float = 120) -> Ran:
    """Run scripts/<script>.py as __main__ in a child forked from this warm process.

    The child is a real process (its own pid and process group, SIGKILL kills it, its
    exit status is the script's), with the environment a cron job would give it.
    """
    _counter[0] += 1
    out_path = sb.base.parent / f".out-{os.getpid()}-{_counter[0]}"
    path = SCRIPTS / f"{script}.py"
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.setpgid(0, 0)
            fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
            # The parent's sys.stdout/stderr may be pytest's capture objects: ours are fd 1, 2.
            sys.stdout = sys.__stdout__ = open(1, "w", closefd=False, errors="backslashreplace")
            sys.stderr = sys.__stderr__ = open(2, "w", closefd=False, errors="backslashreplace")
            os.chdir(sb.base)
            os.environ.pop(LOCK_FD_ENV, None)  # this process's own environment only
            os.environ["QTS_OPS_PRIORITY"] = "normal"
            os.environ.update(env or {})
            importlib.reload(crashpoints)  # it reads QTS_OPS_CRASH_AT once, at import
            if os.environ.get(faultdest.ENV):
                faultdest.install()
            sys.argv = [str(path), "--config", str(sb.config_path), *args]
            if str(SCRIPTS) not in sys.path:
                sys.path.insert(0, str(SCRIPTS))
            runpy.run_path(str(path), run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    deadline = time.monotonic() + timeout
    status = None
    while status is None:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(st)
            break
        if time.monotonic() > deadline:
            with _suppress():
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            status = -999
            break
        time.sleep(0.002)
    try:
        out = out_path.read_bytes().decode(errors="replace")
        out_path.unlink()
    except FileNotFoundError:
        out = ""
    return Ran(status, out)


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], (OSError, ProcessLookupError))


def real_run(sb: Sandbox, *args: str, env: dict | None = None, timeout: float = 240) -> Ran:
    """scripts/maintenance.py as cron runs it: a new interpreter, steps as its children."""
    try:
        got = sb.run("maintenance", *args, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Ran(-999, "timed out")
    return Ran(got.returncode, got.stderr + got.stdout)


def fork_chain(sb: Sandbox, run_id: str | None, env: dict | None = None) -> tuple[str | None, Ran, str | None]:
    """scan, backup, verify, clean as separate processes on one run, stopping at the first
    failure, as maintenance does: (failed step or None, its result, run id)."""
    said = ""
    for step in STEPS:
        args = ("--run", run_id) if run_id else ()
        got = fork_run(sb, step, *args, env=env)
        said += f"\n[{step}]\n{got.out}"
        if run_id is None and sb.runs():
            run_id = sb.runs()[-1]
        if got.code != 0:
            return step, Ran(got.code, said), run_id
    return None, Ran(0, said), run_id


# -- files -----------------------------------------------------------------------------------

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _walk_parent(top, rel: bytes, create: bool) -> tuple[int, bytes]:
    """(fd of rel's parent directory, last name), one component at a time: any depth."""
    fd = os.open(top, _DIR)
    *dirs, name = rel.split(b"/")
    for d in dirs:
        if create:
            try:
                os.mkdir(d, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
        nxt = os.open(d, _DIR, dir_fd=fd)
        os.close(fd)
        fd = nxt
    return fd, name


def put_file(top, rel: bytes, content: bytes, mtime: float) -> None:
    fd, name = _walk_parent(top, rel, True)
    try:
        f = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644, dir_fd=fd)
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(f, view):]
        finally:
            os.close(f)
        ns = int(mtime * 1e9)
        os.utime(name, ns=(ns, ns), dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(fd)


@dataclass
class Tree:
    files: dict  # rel bytes -> content
    ids: dict  # rel bytes -> (ino, size, mtime_ns, ctime_ns)
    links: dict  # rel bytes -> symlink target
    special: dict  # rel bytes -> "fifo" | "socket" | ...


def read_tree(top, content: bool = True) -> Tree:
    """Every entry beneath ``top`` by descriptor (no PATH_MAX, no recursion): bytes paths."""
    t = Tree({}, {}, {}, {})
    try:
        top_fd = os.open(top, _DIR)
    except FileNotFoundError:
        return t

    def scan(fd: int, rel: bytes) -> list[bytes]:
        subdirs = []
        for entry in os.scandir(fd):
            name = os.fsencode(entry.name)
            path = rel + b"/" + name if rel else name
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(name)
            elif stat.S_ISLNK(st.st_mode):
                t.links[path] = os.readlink(name, dir_fd=fd)
            elif stat.S_ISREG(st.st_mode):
                t.ids[path] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                if content:
                    f = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                    with os.fdopen(f, "rb") as fh:
                        t.files[path] = fh.read()
            else:
                t.special[path] = "fifo" if stat.S_ISFIFO(st.st_mode) else \
                    "socket" if stat.S_ISSOCK(st.st_mode) else "other"
        return sorted(subdirs, reverse=True)

    stack = [(b"", top_fd, scan(top_fd, b""))]
    while stack:
        rel, fd, pending = stack[-1]
        if not pending:
            os.close(fd)
            stack.pop()
            continue
        name = pending.pop()
        child = os.open(name, _DIR, dir_fd=fd)
        crel = rel + b"/" + name if rel else name
        stack.append((crel, child, scan(child, crel)))
    return t


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- datasets --------------------------------------------------------------------------------

@dataclass
class FileSpec:
    root: str  # policy root dir name under data/
    rel: bytes
    content: bytes
    expired: bool  # should be gone once everything settles
    mtime: float

    @property
    def key(self) -> bytes:
        return self.root.encode() + b"/" + self.rel


class Dataset:
    def __init__(self, sb: Sandbox):
        self.sb = sb
        self.files: dict[bytes, FileSpec] = {}  # key -> the newest version the core wrote
        self.not_expected_gone: set[bytes] = set()  # kept for a reason (unreadable, touched, special)

    def add(self, root: str, rel: bytes, content: bytes, age_days: float, expired: bool) -> FileSpec:
        mtime = time.time() - age_days * DAY
        put_file(os.fsencode(self.sb.data / root), rel, content, mtime)
        spec = FileSpec(root, rel, content, expired, mtime)
        self.files[spec.key] = spec
        return spec

    def expected_gone(self) -> set[bytes]:
        return {k for k, f in self.files.items() if f.expired} - self.not_expected_gone


def _content(rng: random.Random) -> bytes:
    r = rng.random()
    size = 0 if r < 0.04 else rng.randint(1, 2000) if r < 0.75 else rng.randint(2000, 60000) if r < 0.97 \
        else rng.randint(60000, 300000)
    if rng.random() < 0.5:
        return rng.randbytes(size)
    words = [b"tick", b"bar", b"fill", b"order", b"100.25", b"ESZ6", b"\n"]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + b" "
    return bytes(out[:size])


def configure(sb: Sandbox, rng: random.Random, dests: int | None = None, journals: bool | None = None) -> None:
    """Random compression, one or two destinations (quorum 1 or 2), one or two policies."""
    cfg = sb.config
    cfg["backup"]["compression"] = rng.choice(["zstd", "zstd", "gzip", "none"])
    dests = dests or rng.choice([1, 1, 2])
    if dests == 2:
        cfg["backup"]["destinations"].append({"name": "offsite", "type": "local", "path": "var/offsite"})
        cfg["backup"]["require_verified_copies"] = rng.choice([1, 2])
    sb.write_config()
    if journals if journals is not None else rng.random() < 0.4:
        e2e.add_policy(sb, "journals", "journals", ["**/*.jsonl"])


def dataset(sb: Sandbox, rng: random.Random, n_min: int = 4, n_max: int = 30, expired_p: float = 0.7) -> Dataset:
    ds = Dataset(sb)
    roots = [(Path(p["root"]).name, p["include"][0].rpartition(".")[2]) for p in sb.config["policies"]]
    dirs = [b"", b"", b"2026", b"2026/11", b"a", b"a/b/c", b"ticks/ESZ6", b"x y"]
    for i in range(rng.randint(n_min, n_max)):
        root, ext = rng.choice(roots)
        d = rng.choice(dirs)
        rel = (d + b"/" if d else b"") + b"f%04d." % i + ext.encode()
        expired = rng.random() < expired_p
        age = rng.uniform(32, 400) if expired else rng.uniform(0, 25)
        ds.add(root, rel, _content(rng), age, expired)
    return ds


# -- the oracle ------------------------------------------------------------------------------

def _json(path: Path):
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def destinations(sb: Sandbox) -> dict[str, Path]:
    return {d["name"]: (sb.base / d["path"]) for d in sb.config["backup"]["destinations"]}


def policy_roots(sb: Sandbox) -> dict[str, str]:
    return {p["name"]: Path(p["root"]).name for p in sb.config["policies"]}


def vouched_runs(sb: Sandbox) -> set[tuple[str, str]]:
    """(destination, run) pairs whose verify.ok.json says they verified."""
    got = set()
    for run_id in sb.runs():
        verify = _json(sb.state / "runs" / run_id / "verify.ok.json") or {}
        names = verify.get("verified") if isinstance(verify, dict) else None
        got |= {(d, run_id) for d in names or [] if isinstance(d, str)}
    return got


def archived(sb: Sandbox, scratch: Path, out: Outcome, cache: dict | None = None,
             vouched: set | None = None) -> dict[bytes, set[str]]:
    """key -> SHA-256s of that file in every archive verify vouched for, as GNU tar
    extracts it and sha256sum -c accepts it. ``cache`` keeps what one run directory
    yielded, keyed by its files' identities, so an unchanged run is not extracted again.
    ``vouched``: (destination, run) pairs known verified before a trial damaged their
    verify.ok.json (damage after the fact does not undo a verification)."""
    got: dict[bytes, set[str]] = {}
    vouched = vouched_runs(sb) | (vouched or set())
    roots = policy_roots(sb)
    for dname, ddir in destinations(sb).items():
        for run_id in e2e.published_runs(ddir):
            if not RUN_ID_RE.match(run_id):
                continue
            if (dname, run_id) not in vouched:
                continue
            rdir = ddir / run_id
            ident = (dname, run_id, tuple((e.name, e.stat().st_size, e.stat().st_mtime_ns, e.stat().st_ino)
                                          for e in sorted(os.scandir(rdir), key=lambda e: e.name)))
            if cache is not None and ident in cache:
                for key, shas in cache[ident].items():
                    got.setdefault(key, set()).update(shas)
                continue
            mine: dict[bytes, set[str]] = {}
            sums = subprocess.run(["sha256sum", "--quiet", "--strict", "-c", "SHA256SUMS"], cwd=rdir,
                                  capture_output=True, text=True)
            if sums.returncode:
                out.bad(f"{dname}/{run_id}: verified run fails sha256sum -c SHA256SUMS: {sums.stdout[:200]}")
                continue
            for archive in sorted(rdir.iterdir()):
                ext = next((e for e in ARCHIVE_EXTS if archive.name.endswith(e)), None)
                if ext is None:
                    continue
                policy = archive.name[: -len(ext)]
                into = scratch / f"{dname}-{run_id}-{policy}"
                into.mkdir(parents=True)
                x = subprocess.run(["tar", "-xf", str(archive), "-C", str(into)], capture_output=True, text=True)
                if x.returncode:
                    out.bad(f"{dname}/{run_id}/{archive.name}: GNU tar cannot extract it: {x.stderr[:300]}")
                    continue
                sums_file = rdir / f"{policy}.sha256"
                if sums_file.stat().st_size == 0:
                    # Every expired file changed before backup read it: an archive with no
                    # member, and an empty .sha256 that `sha256sum -c` rejects ("no properly
                    # formatted checksum lines"). Reported in the notes; GNU tar must agree.
                    out.notes.append("a run archived no member of a policy: its empty .sha256 makes the "
                                     "contract's `sha256sum -c` check exit 1")
                    if read_tree(into).files:
                        out.bad(f"{dname}/{run_id}/{archive.name}: members, but an empty {sums_file.name}")
                    remove_tree(into)
                    continue
                c = subprocess.run(["sha256sum", "--quiet", "--strict", "-c", str(sums_file)],
                                   cwd=into, capture_output=True, text=True)
                if c.returncode:
                    out.bad(f"{dname}/{run_id}/{policy}.sha256: sha256sum -c fails on GNU tar's extraction: "
                            f"{(c.stdout + c.stderr)[:300]}")
                    continue
                for rel, data in read_tree(into).files.items():
                    mine.setdefault(roots.get(policy, policy).encode() + b"/" + rel, set()).add(sha(data))
                remove_tree(into)
            for key, shas in mine.items():
                got.setdefault(key, set()).update(shas)
            if cache is not None:
                cache[ident] = mine
    return got


def judge(sb: Sandbox, ds: Dataset, scratch: Path, out: Outcome, changed_ok: set[bytes] = frozenset(),
          cache: dict | None = None, vouched: set | None = None) -> Tree:
    """The whole oracle; records lost files and violations in ``out``. Returns the data tree."""
    now = read_tree(sb.data)
    arch = None
    for key, spec in ds.files.items():
        have = now.files.get(key)
        if have == spec.content:
            continue
        if have is not None and key not in changed_ok:
            out.bad(f"{key!r}: still there but its content changed")
        if arch is None:
            arch = archived(sb, scratch, out, cache, vouched)
        if sha(spec.content) not in arch.get(key, ()):
            out.lost.append(key)
    _check_deletions(sb, out)
    _check_archives(sb, out)
    if not e2e.lock_is_free(sb.state):
        out.bad("the lock is still held after every process ended")
    return now


def _entries(sb: Sandbox, run_id: str, policy: str) -> dict[str, tuple]:
    scan = _json(sb.state / "runs" / run_id / "scan.ok.json") or {}
    name = ((scan.get("policies") or {}).get(policy) or {}).get("entries", f"scan.{policy}.jsonl")
    out = {}
    try:
        for line in (sb.state / "runs" / run_id / name).read_bytes().splitlines():
            try:
                e = json.loads(line)
                out[e["path"]] = (e["dev"], e["ino"], e["mtime_ns"], e["ctime_ns"])
            except (ValueError, KeyError, TypeError):
                continue
    except OSError:
        pass
    return out


def _check_deletions(sb: Sandbox, out: Outcome) -> None:
    """No file (one identity: path, device, inode, mtime, ctime) deleted twice."""
    seen: dict[tuple, int] = {}
    entries: dict[tuple[str, str], dict] = {}
    try:
        events = e2e.log_events(sb)
    except (OSError, ValueError) as exc:
        out.bad(f"the log cannot be read as JSON lines: {exc}")
        return
    for e in events:
        if e.get("event") != "deleted":
            continue
        run, policy = e.get("run"), e.get("policy")
        if (run, policy) not in entries:
            entries[(run, policy)] = _entries(sb, run, policy)
        key = (policy, e["path"], entries[(run, policy)].get(e["path"]))
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 2:
            out.bad(f"{policy}/{e['path']!r} deleted twice (runs: {run})")


def _check_archives(sb: Sandbox, out: Outcome) -> None:
    """Every run backup recorded is on each of its destinations exactly once, with exactly
    its files, and no staging of it is left behind."""
    dests = destinations(sb)
    for run_id in sb.runs():
        backup = _json(sb.state / "runs" / run_id / "backup.ok.json")
        try:
            want = {"MANIFEST.json", "SHA256SUMS"} | {n for p in backup["policies"].values()
                                                       for n in (p["archive"], p["sums"])}
            listed = [d for d in backup["destinations"] if d in dests]
        except (TypeError, KeyError, AttributeError):
            continue  # no backup manifest, or one a trial damaged on purpose (the steps refuse it)
        for dname in listed:
            rdir = dests[dname] / run_id
            have = set(os.listdir(rdir)) if rdir.is_dir() else set()
            if backup.get("policies") and have != want:
                out.bad(f"{dname}/{run_id}: holds {sorted(have)}, expected exactly {sorted(want)}")
        for dname, ddir in dests.items():
            if ddir.is_dir():
                left = [n for n in os.listdir(ddir) if n.startswith(f".{run_id}.tmp-")]
                if left:
                    out.bad(f"{dname}: staging {left} of run {run_id} left behind after its backup succeeded")


def settle(sb: Sandbox, ds: Dataset, out: Outcome, passes: int = 2) -> None:
    """Count files wrongly kept forever: expired files still present after recovery get
    up to ``passes`` more clean maintenance runs."""
    for attempt in range(passes + 1):
        now = read_tree(sb.data, content=False)
        left = sorted(k for k in ds.expected_gone() if k in now.ids)
        if not left or attempt == passes:
            break
        again = real_run(sb)
        if again.code != 0:
            out.bad(f"a clean maintenance run after recovery exited {again.code}: {again.out[-400:]}")
            break
    out.kept_forever = left


def recover_and_judge(sb: Sandbox, ds: Dataset, scratch: Path, out: Outcome) -> None:
    """The end of a trial: one clean maintenance must recover, then the oracle, then settling."""
    rec = real_run(sb)
    out.recovered = rec.code == 0
    if rec.code:
        out.bad(f"recovery maintenance exited {rec.code}: {rec.out[-400:]}")
    judge(sb, ds, scratch, out)
    settle(sb, ds, out)


def data_ids(sb: Sandbox) -> dict:
    return read_tree(sb.data, content=False).ids


# -- trials ----------------------------------------------------------------------------------

def _crash_spec(rng: random.Random, ds: Dataset, sb: Sandbox) -> str:
    point = rng.choice(CRASH_POINTS)
    n = 1
    if point in ("backup.after_member", "clean.after_unlink"):
        n = rng.randint(1, max(1, len(ds.expected_gone())))
    elif point == "publish.before_rename":
        n = rng.randint(1, len(sb.config["backup"]["destinations"]))
    return point if n == 1 and rng.random() < 0.5 else f"{point}:{n}"


def _after_fault(sb: Sandbox, ds: Dataset, out: Outcome, what: str) -> None:
    """Cheap invariant right after a fault: the lock is free and every file missing from
    the data was recorded as archived and verified by its run (GNU tar checks come later)."""
    # Within a second, not at once: a helper the killed step forked last may not have been
    # scheduled yet, and holds the lock's descriptor until its first act closes it (seen
    # once in 259 trials on two busy cores). A lock held by anything that lives on still fails.
    if not e2e.lock_is_free(sb.state, within=1.0):
        out.bad(f"after {what}: the lock outlived the process")
    ids = data_ids(sb)
    missing = [k for k in ds.files if k not in ids]
    if not missing:
        return
    vouched: set[bytes] = set()
    roots = policy_roots(sb)
    for run_id in sb.runs():
        rdir = sb.state / "runs" / run_id
        if not (rdir / "verify.ok.json").exists():
            continue
        for policy, root in roots.items():
            try:
                lines = (rdir / f"backup.{policy}.jsonl").read_bytes().splitlines()
            except OSError:
                continue
            for line in lines:
                r = json.loads(line)
                if r["status"] == "archived":
                    vouched.add((root.encode() + b"/" + os.fsencode(r["path"]), r["sha256"]))
    for k in missing:
        if (k, sha(ds.files[k].content)) not in vouched:
            out.bad(f"after {what}: {k!r} is gone but no verified run recorded it as archived")


def trial_sigkill_point(rng, sb, scratch, out):
    configure(sb, rng)
    ds = dataset(sb, rng)
    run_id = None
    for _ in range(rng.randint(1, 5)):
        spec = _crash_spec(rng, ds, sb)
        env = {"QTS_OPS_CRASH_AT": spec}
        if rng.random() < 0.25:  # the real chain: maintenance and its step processes
            got = real_run(sb, env=env)
            run_id = sb.runs()[-1] if sb.runs() else None
            killed = got.code == 1 and "killed by signal 9" in got.out
        else:
            step, got, run_id = fork_chain(sb, run_id, env)
            killed = got.code == -signal.SIGKILL
        if got.code not in (0, 1, -signal.SIGKILL):
            out.bad(f"chain with {spec} exited {got.code}: {got.out[-400:]}")
        out.faults += killed
        if killed:
            out.notes.append(f"killed at {spec.partition(':')[0]}")
        _after_fault(sb, ds, out, f"SIGKILL at {spec}")
        if not killed and got.code == 0:
            break  # the run completed before reaching the point: nothing more to crash
    recover_and_judge(sb, ds, scratch, out)


def trial_sigkill_time(rng, sb, scratch, out):
    configure(sb, rng)
    ds = dataset(sb, rng, 10, 120)
    kills, longest = rng.choice([1, 1, 2]), 2.0  # scan to clean, on a chain of a second or two
    for attempt in range(8):
        if out.faults >= kills:
            break
        proc = e2e.popen(sb, "maintenance")
        time.sleep(rng.uniform(0.03, longest))
        if proc.poll() is not None:  # the chain was quicker than the delay: shorter, with new work
            proc.communicate()
            longest /= 2
            for i in range(5):
                ds.add("logs", b"late-%d-%d.log" % (attempt, i), _content(rng), 60, True)
            continue
        if proc.poll() is None:
            try:
                e2e.kill_chain(proc)
                out.faults += 1
            except AssertionError as exc:
                out.bad(str(exc))
            if not sb.runs():
                out.notes.append("killed during start-up (no run yet)")
            else:
                rdir = sb.state / "runs" / sb.runs()[-1]
                during = next((s for s in STEPS if not (rdir / f"{s}.ok.json").exists()), "the chain's end")
                out.notes.append(f"killed during {during}")
        proc.communicate()
        _after_fault(sb, ds, out, "SIGKILL of the process group")
    recover_and_judge(sb, ds, scratch, out)


def _mount_tmpfs(where: Path, size: str) -> str | None:
    where.mkdir(parents=True, exist_ok=True)
    got = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                         capture_output=True, text=True)
    return None if got.returncode == 0 else (got.stderr.strip() or f"mount exited {got.returncode}")


def _umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def trial_disk_full(rng, sb, scratch, out, target: str):
    out.mechanism = "real tmpfs (mount -t tmpfs)"
    mnt = sb.base / "small" if target == "dest" else sb.state
    # Sizes around what a run needs, so space runs out at different steps and files.
    size = rng.choice(["8k", "16k", "32k", "64k", "128k"] if target == "dest" else
                      ["16k", "20k", "24k", "28k", "32k", "40k", "48k", "64k"])
    why = _mount_tmpfs(mnt, size)
    if why:
        out.skipped = f"mounting a tmpfs is not permitted here: {why}"
        return
    try:
        if target == "dest":
            sb.config["backup"]["destinations"] = [{"name": "small", "type": "local", "path": "small"}]
            sb.write_config()
            configure(sb, rng, dests=rng.choice([1, 1, 2]))
        else:
            configure(sb, rng)
        ds = dataset(sb, rng, 20, 90)
        step, got, run_id = fork_chain(sb, None)
        full = "No space left on device" in got.out
        out.faults += full
        # Out of space: the step fails (1), or the full destination is dropped and the run
        # goes on with the other one, until clean refuses for want of verified copies (2).
        refused = got.code == 2 and step == "clean" and "required" in got.out
        if full:
            where = got.out[: got.out.index("No space left on device")]
            hit = re.search(r"/\.([^/'\s]+?)\.tmp-", got.out[len(where):].split("\n[")[0])
            in_step = re.findall(r"^\[(\w+)\]$", where, re.M)[-1]
            if refused:  # clean's refusal quotes why backup dropped the full destination
                out.notes.append("out of space in backup: destination dropped, clean refused for want of copies")
            else:
                out.notes.append(f"out of space in {in_step}" + (f" writing {hit.group(1)}" if hit else ""))
        if step is not None and not full:
            out.bad(f"{step} failed, but not for lack of space: {got.out[-400:]}")
        if full and got.code not in (0, 1) and not refused:
            out.bad(f"{step} ran out of space and exited {got.code}: {got.out[-300:]}")
        _after_fault(sb, ds, out, f"disk full in {target}")
        if target == "dest":
            visible = [n for n in os.listdir(mnt) if not n.startswith(".")]
            backup_ok = run_id and (sb.state / "runs" / run_id / "backup.ok.json").exists()
            if visible and not backup_ok:
                out.bad(f"a run is visible on the full destination although backup failed: {visible}")
        remount = subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], capture_output=True, text=True)
        if remount.returncode:
            out.bad(f"remount failed: {remount.stderr}")
            return
        recover_and_judge(sb, ds, scratch, out)
    finally:
        _umount(mnt)


def _fault_env(spec: str) -> dict:
    return {faultdest.ENV: spec, "PYTHONPATH": str(INJECT)}


def _run_files(ddir: Path, run_id: str) -> list[tuple[str, int]]:
    rdir = ddir / run_id
    return [(n, (rdir / n).stat().st_size) for n in sorted(os.listdir(rdir))]


def trial_io_read(rng, sb, scratch, out):
    out.mechanism = faultdest.MECHANISM
    configure(sb, rng)
    ds = dataset(sb, rng, 6, 40)
    run_id = "20260101T000000Z-%04x" % rng.randrange(1 << 16)
    for step in ("scan", "backup"):
        got = fork_run(sb, step, "--run", run_id)
        if got.code:
            out.bad(f"{step} without faults exited {got.code}: {got.out[-300:]}")
            raise TrialAbort
    backup = _json(sb.state / "runs" / run_id / "backup.ok.json")
    if not backup["policies"]:
        out.notes.append("nothing expired: no archive to read")
    before = data_ids(sb)
    dests = destinations(sb)
    for _ in range(out.count(rng, 20, 40)):
        if not backup["policies"]:
            break
        dname = rng.choice(backup["destinations"])
        name, size = rng.choice([f for f in _run_files(dests[dname], run_id) if f[1] > 0])
        spec = f"read-eio;dest={dname};match={name};after={rng.randrange(size)}"
        got = fork_run(sb, "verify", "--run", run_id, env=_fault_env(spec))
        out.faults += 1
        if got.code != 1 or "Input/output error" not in got.out:
            out.bad(f"verify with {spec} exited {got.code} (expected 1, EIO reported): {got.out[-300:]}")
        if (sb.state / "runs" / run_id / "verify.ok.json").exists():
            out.bad(f"verify.ok.json written although reading {name} failed")
            raise TrialAbort
        if data_ids(sb) != before:
            out.bad(f"data changed after a failed verify ({spec})")
    recover_and_judge(sb, ds, scratch, out)


def trial_io_fsync(rng, sb, scratch, out):
    out.mechanism = faultdest.MECHANISM
    configure(sb, rng)
    ds = dataset(sb, rng, 6, 40)
    run_id = "20260101T000000Z-%04x" % rng.randrange(1 << 16)
    got = fork_run(sb, "scan", "--run", run_id)
    scan = _json(sb.state / "runs" / run_id / "scan.ok.json")
    if got.code or not scan:
        out.bad(f"scan without faults exited {got.code}: {got.out[-300:]}")
        raise TrialAbort
    policies = [p for p, info in scan["policies"].items() if info["expired"]]
    fsyncs = 2 * len(policies) + 2 + 2  # archive + .sha256 per policy, SHA256SUMS, MANIFEST, staging dir, parent
    dests = destinations(sb)
    for _ in range(out.count(rng, 3, 8)):
        if not policies:
            out.notes.append("nothing expired: nothing to publish")
            break
        dname = rng.choice(list(dests))
        n = rng.randint(1, fsyncs)
        spec = f"fsync-eio;dest={dname};n={n}"
        got = fork_run(sb, "backup", "--run", run_id, env=_fault_env(spec))
        out.faults += 1
        ok = _json(sb.state / "runs" / run_id / "backup.ok.json")
        if (dests[dname] / run_id).exists():
            out.bad(f"fsync #{n} of publishing on {dname} failed, yet the run stays published there "
                    f"(a rerun would adopt it as durable)")
            raise TrialAbort
        if ok and dname in ok.get("destinations", []):
            out.bad(f"backup.ok.json lists {dname} although its fsync #{n} failed")
        if got.code not in (0, 1) or (got.code == 1) != (len(dests) == 1):
            out.bad(f"backup with {spec} exited {got.code} with {len(dests)} destination(s): {got.out[-300:]}")
        if ok or got.code == 0:
            break  # published on the other destination: nothing left to fail on this run
    recover_and_judge(sb, ds, scratch, out)


def trial_io_short(rng, sb, scratch, out):
    out.mechanism = faultdest.MECHANISM
    configure(sb, rng, dests=1)
    ds = dataset(sb, rng, 6, 40)
    dname = "local"
    base = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 3600))
    for i in range(out.count(rng, 2, 6)):
        run_id = f"{base}-{i:04x}"
        got = fork_run(sb, "scan", "--run", run_id)
        scan = _json(sb.state / "runs" / run_id / "scan.ok.json")
        if got.code or not scan:
            out.bad(f"scan without faults exited {got.code}: {got.out[-300:]}")
            raise TrialAbort
        chunk = rng.choice([1, 7, 512, 4096, 65537])
        spec = f"short-write;dest={dname};chunk={chunk}" if rng.random() < 0.6 else \
            f"write-eio;dest={dname};chunk={chunk};after={rng.randint(0, 3000)}"
        got = fork_run(sb, "backup", "--run", run_id, env=_fault_env(spec))
        fail = "injected on write" in got.out  # EIO came before every file was complete
        out.faults += 1
        published = (destinations(sb)[dname] / run_id).exists()
        if not fail:
            if got.code:
                out.bad(f"backup with short writes only ({spec}) exited {got.code}: {got.out[-300:]}")
                continue
            ver = fork_run(sb, "verify", "--run", run_id)
            if ver.code:
                out.bad(f"short writes ({spec}) left an archive verify rejects: {ver.out[-300:]}")
        else:
            if got.code != 1 or published:
                out.bad(f"backup with {spec} exited {got.code}, published={published} (expected 1, not published)")
        _after_fault(sb, ds, out, spec)
    recover_and_judge(sb, ds, scratch, out)


# Corruption ------------------------------------------------------------------------------

def corrupt(rng: random.Random, path: Path, donor: Path | None) -> tuple[str, bytes] | None:
    """Damage ``path``; (what was done, its old bytes), or None when nothing would change."""
    old = path.read_bytes()
    ops = ["flip", "flip", "truncate", "append"] + (["swap"] * 2 if donor and donor.exists() else [])
    op = rng.choice(ops)
    if op in ("flip", "truncate") and not old:
        op = "append"
    if op == "flip":
        at = rng.randrange(len(old))
        new = old[:at] + bytes([old[at] ^ (1 << rng.randrange(8))]) + old[at + 1:]
        what = f"bit flip at byte {at}"
    elif op == "truncate":
        at = rng.randrange(len(old))
        new, what = old[:at], f"truncated to {at} bytes"
    elif op == "append":
        new, what = old + bytes([rng.randrange(256)]), "one byte appended"
    else:
        new, what = donor.read_bytes(), f"swapped with {donor.parent.name}/{donor.name}"
    if new == old:
        return None
    path.write_bytes(new)
    return what, old


def _state_targets(sb: Sandbox, run_id: str, with_verify: bool) -> list[Path]:
    rdir = sb.state / "runs" / run_id
    names = [n for n in os.listdir(rdir) if n.endswith(".ok.json") or n.endswith(".jsonl")]
    return [rdir / n for n in sorted(names)
            if (with_verify or not n.startswith("verify")) and not n.startswith("clean")]


def dest_files(sb: Sandbox, run_id: str) -> list[Path]:
    out = []
    for ddir in destinations(sb).values():
        if (ddir / run_id).is_dir():
            out += [ddir / run_id / n for n in sorted(os.listdir(ddir / run_id))]
    return out


def trial_corrupt(rng, sb, scratch, out, where: str):
    configure(sb, rng)
    ds = dataset(sb, rng, 4, 30, expired_p=0.85)
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-%04x" % rng.randrange(1 << 16)
    donor = "19990101T000000Z-d0d0"  # an older run, so run_id stays the newest
    for step, rid in (("scan", run_id), ("backup", run_id), ("scan", donor), ("backup", donor)):
        got = fork_run(sb, step, "--run", rid)
        if got.code:
            out.bad(f"{step} --run {rid} without faults exited {got.code}: {got.out[-300:]}")
            raise TrialAbort
    before = data_ids(sb)

    def donor_of(path: Path) -> Path:
        return Path(str(path).replace(run_id, donor))

    def one(targets: list[Path], check_step: str) -> tuple[Path, str, bytes] | None:
        path = rng.choice(targets)
        done = corrupt(rng, path, donor_of(path))
        if done is None:
            return None
        what, old = done
        got = fork_run(sb, check_step, "--run", run_id)
        out.faults += 1
        label = f"{path.relative_to(sb.base)} ({what})"
        if got.code not in (1, 2):
            out.bad(f"{check_step} exited {got.code} after {label}: {got.out[-300:]}")
        if (sb.state / "runs" / run_id / f"{check_step}.ok.json").exists():
            out.bad(f"{check_step}.ok.json written after {label}")
            raise TrialAbort
        if data_ids(sb) != before:
            out.bad(f"data changed after {label}")
            raise TrialAbort
        return path, what, old

    # Before verify: damage state or destination; verify must refuse (2) or fail (1).
    targets = _state_targets(sb, run_id, False) if where == "state" else dest_files(sb, run_id)
    last = None
    want = out.faults + out.count(rng, 80, 160)
    for _ in range(3 * want):  # a swap with identical bytes is no fault: draw again
        if out.faults >= want:
            break
        done = one(targets, "verify")
        if done is not None:
            done[0].write_bytes(done[2])
    if where == "dest" and rng.random() < 0.5:
        last = one(targets, "verify")  # left in place: this run can never verify
    if last is None:
        got = fork_run(sb, "verify", "--run", run_id)
        if got.code:
            out.bad(f"verify after every corruption was undone exited {got.code}: {got.out[-300:]}")
            raise TrialAbort
        if where == "state":
            # Before clean: damage any manifest or entry file; clean must refuse.
            targets = _state_targets(sb, run_id, True)
            want = out.faults + out.count(rng, 30, 60)
            for _ in range(3 * want):
                if out.faults >= want:
                    break
                done = one(targets, "clean")
                if done is not None:
                    done[0].write_bytes(done[2])
            if rng.random() < 0.5:
                last = one(targets, "clean")
    rec = real_run(sb)
    if last is not None:
        if rec.code not in (1, 2):
            out.bad(f"maintenance exited {rec.code} on a run whose {last[0].name} is damaged ({last[1]})")
        if data_ids(sb) != before:
            out.bad(f"maintenance deleted files of a run whose {last[0].name} is damaged ({last[1]})")
        out.new_run = True  # what the operator does after the alert
        rec = real_run(sb, "--new-run")
    out.recovered = rec.code == 0
    if rec.code:
        out.bad(f"recovery maintenance exited {rec.code}: {rec.out[-400:]}")
    judge(sb, ds, scratch, out)
    settle(sb, ds, out)


# Copies lost between verify and clean ------------------------------------------------------

_aside = itertools.count()


def _set_aside(path: Path, stash: Path, out: Outcome, link_back: bool = False) -> Callable[[], None]:
    """Move ``path`` (a file or a whole directory) into ``stash``, leaving a symlink to it in
    its place if ``link_back``; the returned undo puts it back. A rename both ways, so what
    comes back is the very inode verify read, with its bytes and times: the oracle then
    judges the copies exactly as verify left them."""
    kept = stash / f"{next(_aside):04d}-{path.name}"
    os.rename(path, kept)
    if link_back:
        os.symlink(kept, path)

    def undo() -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            # Only a directory taken away whole can find one in its place: something
            # (clean, or whatever it called) made it again, on a destination that was gone.
            left = os.listdir(path)
            out.bad(f"{path} was moved away, and a directory holding {left[:5]} took its place")
            remove_tree(path)
        elif os.path.lexists(path):
            os.unlink(path)  # what the damage left in its place
        os.rename(kept, path)

    return undo


def _damage_file(rng: random.Random, path: Path, stash: Path, out: Outcome) -> tuple[str, Callable[[], None]]:
    """One published file of a run damaged as a lost or half-lost copy looks: (what, undo).

    Archives are checked by clean by their size (a look, not a re-read): cut short,
    extended, or a symlink to a file of the very same size, which only a look that does not
    follow links tells apart; .sha256 files likewise. MANIFEST.json and SHA256SUMS are
    checked by their bytes."""
    name = path.name
    label = "MANIFEST.json" if name == "MANIFEST.json" else "SHA256SUMS" if name == "SHA256SUMS" else \
        ".sha256" if name.endswith(".sha256") else "archive"
    by_size = ["removed", "cut short", "extended", "symlink"]
    ops = {"archive": by_size, ".sha256": by_size}.get(label, ["removed", "altered"])
    op = rng.choice(ops)
    old = path.read_bytes()
    undo = _set_aside(path, stash, out)
    if op == "cut short" and old:
        n = rng.choice([1, rng.randint(1, len(old))])
        path.write_bytes(old[:-n])
        return f"{label} cut short by {'one byte' if n == 1 else 'some bytes'}", undo
    if op in ("cut short", "extended"):
        n = rng.choice([1, rng.randint(2, 4096)])
        path.write_bytes(old + rng.randbytes(n))
        return f"{label} extended by {'one byte' if n == 1 else 'some bytes'}", undo
    if op == "symlink":
        decoy = stash / f"{next(_aside):04d}-same-size-{name}"
        decoy.write_bytes(rng.randbytes(len(old)))
        os.symlink(decoy, path)
        return f"{label} replaced by a symlink to a same-size file", undo
    if op == "altered":
        path.write_bytes(old)
        if corrupt(rng, path, None) is not None:  # no donor: never a no-op, but be sure
            return f"{label} altered (bit flip, truncation or a byte appended)", undo
        path.unlink()
    return f"{label} removed", undo


def lose_copy(rng: random.Random, ddir: Path, run_id: str, backup: dict, stash: Path,
              out: Outcome) -> list[tuple[str, Callable[[], None]]]:
    """Damage one destination's copy of ``run_id``: the whole run or destination directory
    moved away (an unmounted disk, a pruned run), or one or two of its files damaged.
    [(what, undo)], to be undone last first."""
    r = rng.random()
    if r < 0.12:
        return [("run directory moved away", _set_aside(ddir / run_id, stash, out))]
    if r < 0.16:  # the same files, but held elsewhere: not a copy this destination holds
        return [("run directory swapped for a symlink to it", _set_aside(ddir / run_id, stash, out, link_back=True))]
    if r < 0.22:
        return [("destination directory moved away", _set_aside(ddir, stash, out))]
    names = ["MANIFEST.json", "SHA256SUMS"] + [n for p in backup["policies"].values()
                                               for n in (p["archive"], p["sums"])]
    # Archives are what is lost in earnest (and have the most ways to go): drawn more often.
    weights = [3 if n.endswith(ARCHIVE_EXTS) else 1 for n in names]
    picked = set()
    for _ in range(rng.choice([1, 1, 2])):
        picked.add(rng.choices(names, weights)[0])
    return [_damage_file(rng, ddir / run_id / n, stash, out) for n in sorted(picked)]


def _verified_run(sb: Sandbox, run_id: str, out: Outcome) -> tuple[dict, list[str]]:
    """scan, backup and verify of ``run_id`` without faults: (backup.ok.json, verified destinations)."""
    for step in ("scan", "backup", "verify"):
        got = fork_run(sb, step, "--run", run_id)
        if got.code:
            out.bad(f"{step} --run {run_id} without faults exited {got.code}: {got.out[-300:]}")
            raise TrialAbort
    rdir = sb.state / "runs" / run_id
    return _json(rdir / "backup.ok.json"), _json(rdir / "verify.ok.json")["verified"]


def _copy_missing_events(sb: Sandbox, run_id: str) -> list[str]:
    return [e.get("destination") for e in e2e.log_events(sb)
            if e.get("event") == "copy_missing" and e.get("run") == run_id]


def _judge_clean_on_lost(sb: Sandbox, out: Outcome, run_id: str, got: Ran, lost_on: list[str], held: list[str],
                         need: int, before: dict, logged_before: list[str], what: str) -> None:
    """clean after ``lost_on`` lost their copies: below the quorum it fails (1) with the data
    untouched; with enough left it deletes (0) and names exactly the lost ones, in its log,
    in clean.ok.json, and by leaving them out of the catalogue."""
    logged = _copy_missing_events(sb, run_id)
    if logged[: len(logged_before)] != logged_before:
        out.bad(f"{what}: earlier copy_missing lines of run {run_id} changed")
    if sorted(logged[len(logged_before):]) != sorted(lost_on):
        out.bad(f"{what}: clean logged copy_missing for {logged[len(logged_before):]}, expected {sorted(lost_on)}")
    ok = _json(sb.state / "runs" / run_id / "clean.ok.json")
    if len(held) < need:
        if got.code != 1:
            out.bad(f"{what}: {len(held)} of quorum {need} copies left, clean exited {got.code} (expected 1): "
                    f"{got.out[-300:]}")
        if data_ids(sb) != before:
            out.bad(f"{what}: {len(held)} of quorum {need} copies left, yet the data changed")
        if ok is not None:
            out.bad(f"{what}: clean.ok.json written below the quorum")
            raise TrialAbort
        return
    if got.code != 0 or not isinstance(ok, dict):
        out.bad(f"{what}: {len(held)} copies left for quorum {need}, clean exited {got.code}: {got.out[-300:]}")
        raise TrialAbort
    if sorted(ok.get("copies_missing") or {}) != sorted(lost_on):
        out.bad(f"{what}: clean.ok.json copies_missing is {sorted(ok.get('copies_missing') or {})}, "
                f"expected {sorted(lost_on)}")
    try:
        lines = (sb.state / "catalogue" / f"{run_id}.jsonl").read_bytes().splitlines()
    except OSError:
        lines = []
    named = {tuple(json.loads(line)["destinations"]) for line in lines}
    if named - {tuple(held)}:
        out.bad(f"{what}: the catalogue names {sorted(named)} as holding the copies, only {held} do")


def trial_copy_lost(rng, sb, scratch, out):
    # Two destinations more often than elsewhere: only they can lose a copy and keep the quorum.
    configure(sb, rng, dests=rng.choice([1, 2, 2]))
    ds = dataset(sb, rng, 4, 20, expired_p=0.85)
    need = sb.config["backup"]["require_verified_copies"]
    dests = destinations(sb)
    stash = sb.base.parent / "stash"  # beside the sandbox, on its file system: renames, out of every root
    stash.mkdir()
    base = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 3600))
    roots = [(Path(p["root"]).name, p["include"][0].rpartition(".")[2]) for p in sb.config["policies"]]
    run_id, runs = None, 0
    for round_ in range(out.count(rng, 6, 12)):
        if run_id is None:  # the last run was cleaned: a new one, with new expired files to archive
            run_id, runs = f"{base}-{runs:04x}", runs + 1
            for i in range(rng.randint(1, 4)):
                root, ext = rng.choice(roots)
                ds.add(root, b"lost/r%02d-%d." % (runs, i) + ext.encode(), _content(rng), 60, True)
            backup, verified = _verified_run(sb, run_id, out)
        lost_on = sorted(rng.sample(verified, k=rng.choice([1, 1, len(verified)])))
        held = [d for d in verified if d not in lost_on]
        done = []
        for dname in lost_on:
            done += [(f"{dname}: {what}", undo)
                     for what, undo in lose_copy(rng, dests[dname], run_id, backup, stash, out)]
        what = f"round {round_}, run {run_id}: " + "; ".join(w for w, _ in done)
        before, logged_before = data_ids(sb), _copy_missing_events(sb, run_id)
        got = fork_run(sb, "clean", "--run", run_id)
        out.faults += 1
        for w, _ in done:
            out.notes.append(w.partition(": ")[2])
        out.notes.append(f"{len(lost_on)} of {len(verified)} verified copies lost, quorum {need}: "
                         f"clean exited {got.code}")
        _judge_clean_on_lost(sb, out, run_id, got, lost_on, held, need, before, logged_before, what)
        for _, undo in reversed(done):
            undo()
        _after_fault(sb, ds, out, what)
        if got.code == 0:
            run_id = None
    recover_and_judge(sb, ds, scratch, out)


# The configuration changed under a run -------------------------------------------------------

CONFIG_CHANGES = ("quorum-lowered", "policy-removed", "destination-removed", "second-config")


def _changed_config(sb: Sandbox, change: str) -> tuple[Path, set[str]]:
    """Write the changed configuration: (the config file the operator now runs, the
    policies whose files the original run's rules alone may delete)."""
    cfg = json.loads(json.dumps(sb.config))
    dests, policies = cfg["backup"]["destinations"], cfg["policies"]
    if change == "quorum-lowered":
        cfg["backup"]["require_verified_copies"] = 1
    elif change == "policy-removed":
        policies.pop()
    elif change == "destination-removed":
        dests.pop()
        cfg["backup"]["require_verified_copies"] = 1
    else:  # another config file beside the first, on the same state, with the first policy only
        cfg["backup"] = {"compression": "zstd", "require_verified_copies": 1, "destinations": [dests[0]]}
        cfg["policies"] = policies[:1]
        path = sb.base / "other.yaml"
        path.write_text(json.dumps(cfg))
        return path, {p["name"] for p in sb.config["policies"][1:]}
    sb.config_path.write_text(json.dumps(cfg))
    return sb.config_path, {p["name"] for p in sb.config["policies"]} - {p["name"] for p in policies}


def trial_config_change(rng, sb, scratch, out):
    """A run scanned (and maybe copied) under one configuration, then the operator changes
    it: the run must never be finished under the new rules. Its clean, named by hand, is
    refused with nothing deleted; maintenance under the new rules acts on a new run only,
    and never deletes a file of a policy the new rules dropped."""
    configure(sb, rng, dests=2, journals=True)
    sb.config["backup"]["require_verified_copies"] = 2
    sb.write_config()
    ds = dataset(sb, rng, 6, 24, expired_p=0.85)
    original = sb.config_path.read_bytes()
    offsite = sb.base / sb.config["backup"]["destinations"][1]["path"]
    broken = rng.random() < 0.5  # the second destination fails: the run has one copy of the two it needs
    if broken:
        offsite.parent.mkdir(parents=True, exist_ok=True)
        offsite.write_bytes(b"")
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 3600)) + "-0c0c"
    last = rng.choice(["scan", "backup", "verify"])
    for step in STEPS[: STEPS.index(last) + 1]:
        got = fork_run(sb, step, "--run", run_id)
        if got.code not in (0, 1):
            out.bad(f"{step} of run {run_id} exited {got.code}: {got.out[-300:]}")
            raise TrialAbort
    change = rng.choice(CONFIG_CHANGES)
    config_path, dropped = _changed_config(sb, change)
    out.faults += 1
    out.notes.append(f"{change} after {last}{' (second destination broken)' if broken else ''}")
    roots = policy_roots(sb)
    before = data_ids(sb)
    first = sb.config_path
    sb.config_path = config_path
    try:
        clean = fork_run(sb, "clean", "--run", run_id)
        if clean.code != 2 or data_ids(sb) != before:
            out.bad(f"{change} after {last}: clean of the old run exited {clean.code} (expected 2) or changed data: "
                    f"{clean.out[-300:]}")
        got = real_run(sb)
    finally:
        sb.config_path = first
    if got.code not in (0, 1):
        out.bad(f"{change} after {last}: maintenance under the new rules exited {got.code}: {got.out[-300:]}")
    if (sb.state / "runs" / run_id / "clean.ok.json").exists():
        out.bad(f"{change} after {last}: run {run_id}, scanned under the old rules, was finished under the new")
    deleted = [e for e in e2e.log_events(sb) if e.get("event") == "deleted"]
    for e in deleted:
        if e.get("run") == run_id or e.get("policy") in dropped:
            out.bad(f"{change} after {last}: {e.get('policy')}/{e.get('path')!r} deleted by run {e.get('run')}, "
                    "which the rules in force did not allow")
    gone = {k for k in before if k not in data_ids(sb)}
    for key in gone:
        if key.split(b"/", 1)[0].decode() in {roots[p] for p in dropped}:
            out.bad(f"{change} after {last}: {key!r} of a dropped policy is gone")
    sb.config_path.write_bytes(original)  # the operator puts the first configuration back
    if broken:
        offsite.unlink()
    _after_fault(sb, ds, out, f"{change} after {last}")
    recover_and_judge(sb, ds, scratch, out)


# Races with the core ---------------------------------------------------------------------

def _writer(root: bytes, outside: bytes, hot: list[bytes], contents: dict, seed: int, stop: str, report: str) -> None:
    """The trading core, as a separate process: keeps changing hot files until told to stop,
    then writes what it left where (and every error it saw) to ``report``."""
    rng = random.Random(seed)
    final = dict(contents)  # rel -> newest content inside the root
    moved: dict[bytes, bytes] = {}  # outside name -> content
    vanished: dict[bytes, bytes] = {}  # rel -> content when it was found gone
    links: list[bytes] = []  # symlinks the core left in the root
    errors: list[str] = []
    hot = list(hot)
    i = 0

    def path(rel: bytes) -> bytes:
        return os.path.join(root, rel)

    while hot and not os.path.exists(stop):
        i += 1
        rel = rng.choice(hot)
        op = rng.choice(["append", "append", "rewrite", "replace", "rotate", "file-link", "dir-link"])
        p = path(rel)
        try:
            if op == "append":
                fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
                line = b"late fill %d\n" % i
                os.write(fd, line)
                os.close(fd)
                final[rel] += line
            elif op == "rewrite":  # same size and mtime: only ctime tells
                st = os.stat(p)
                fd = os.open(p, os.O_RDWR | os.O_NOFOLLOW)
                if st.st_size:
                    first = os.pread(fd, 1, 0)
                    os.pwrite(fd, bytes([first[0] ^ 0xFF]), 0)
                    final[rel] = bytes([first[0] ^ 0xFF]) + final[rel][1:]
                os.close(fd)
                os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
            elif op == "replace":  # another inode, same name, same size and mtime
                st = os.stat(p)
                new = final[rel][::-1]
                tmp = p + b".new"
                with open(tmp, "wb") as f:
                    f.write(new)
                os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
                os.replace(tmp, p)
                final[rel] = new
            elif op == "rotate":  # renamed inside the root, still matching the policy
                new_rel = rel[:-4] + b"-rot%d.log" % i
                os.rename(p, path(new_rel))
                final[new_rel] = final.pop(rel)
                hot.remove(rel)
            elif op == "file-link":  # the file leaves the root; a symlink to it takes its place
                name = b"file-%d" % i
                os.rename(p, os.path.join(outside, name))
                os.symlink(os.path.join(outside, name), p)
                moved[name] = final.pop(rel)
                links.append(rel)
                hot.remove(rel)
            elif op == "dir-link" and b"/" in rel:  # the parent leaves; a symlink to it stays
                d = rel.rpartition(b"/")[0]
                name = b"dir-%d" % i
                there = os.path.join(outside, name)
                os.rename(path(d), there)
                os.symlink(there, path(d))
                links[:] = [x for x in links if not x.startswith(d + b"/")] + [d]
                for r in [r for r in final if r.startswith(d + b"/")]:
                    # What was still there when the directory left is outside now; what
                    # clean had deleted before must be in an archive.
                    if os.path.lexists(os.path.join(there, r[len(d) + 1:])):
                        moved[name + b"/" + r[len(d) + 1:]] = final.pop(r)
                    else:
                        vanished[r] = final.pop(r)
                    if r in hot:
                        hot.remove(r)
        except FileNotFoundError:
            # Deleted by clean (it was expired and unchanged), or its directory was: the
            # content it had must be in a verified archive; the oracle checks that.
            if rel in final and not os.path.lexists(p):
                vanished[rel] = final.pop(rel)
            if rel in hot:
                hot.remove(rel)
        except OSError as exc:
            errors.append(f"{op} {rel!r}: {exc}")
        time.sleep(rng.uniform(0, 0.004))

    def enc(d: dict) -> dict:
        return {k.hex(): v.hex() for k, v in d.items()}

    with open(report, "w") as f:
        json.dump({"final": enc(final), "moved": enc(moved), "vanished": enc(vanished),
                   "links": [x.hex() for x in links], "errors": errors, "ops": i}, f)


def _unhex(d: dict) -> dict:
    return {bytes.fromhex(k): bytes.fromhex(v) for k, v in d.items()}


def trial_core_race(rng, sb, scratch, out):
    configure(sb, rng, journals=False)
    ds = dataset(sb, rng, 60, 160, expired_p=0.9)
    root = os.fsencode(sb.data / "logs")
    outside = sb.base / "outside"
    outside.mkdir()
    (outside / "bystander.log").write_bytes(b"not the toolkit's\n" * 10)
    originals = {f.rel: f.content for f in ds.files.values()}
    expired = {f.rel for f in ds.files.values() if f.expired}
    hot = rng.sample(sorted(originals), k=max(1, len(originals) // 3))
    stop, report = str(scratch / "stop"), str(scratch / "report.json")
    scratch.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            _writer(root, os.fsencode(outside), hot, originals, rng.randrange(1 << 30), stop, report)
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    try:
        for _ in range(rng.choice([1, 2])):
            got = real_run(sb)
            if got.code not in (0, 1):
                out.bad(f"maintenance racing the core exited {got.code}: {got.out[-300:]}")
    finally:
        Path(stop).touch()
        _, st = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(st) != 0:
        out.bad("the writer process crashed")
        raise TrialAbort
    rep = json.loads(Path(report).read_text())
    out.faults += rep["ops"]
    for err in rep["errors"]:
        out.bad(f"the core saw an error: {err}")
    final, moved, vanished = (_unhex(rep[k]) for k in ("final", "moved", "vanished"))
    # What the core wrote last is the truth now: files it moved out are judged outside.
    touched = set(hot) | set(final) - set(originals)
    ds.files = {}
    for rel, content in {**final, **vanished}.items():
        ds.files[b"logs/" + rel] = FileSpec("logs", rel, content, rel in expired and rel not in touched, 0)
    ds.not_expected_gone = {b"logs/" + r for r in touched}
    rec = real_run(sb)
    out.recovered = rec.code == 0
    if rec.code:
        out.bad(f"recovery maintenance exited {rec.code}: {rec.out[-400:]}")
    judge(sb, ds, scratch, out, changed_ok={b"logs/" + r for r in touched})
    left = read_tree(outside)
    want = {b"bystander.log": b"not the toolkit's\n" * 10, **moved}
    if left.files != want:
        gone = sorted(set(want) - set(left.files))
        diff = sorted(k for k in set(want) & set(left.files) if want[k] != left.files[k])
        out.bad(f"outside the root: missing {gone[:5]}, changed {diff[:5]}")
    links = read_tree(sb.data / "logs", content=False).links
    for rel in (bytes.fromhex(x) for x in rep["links"]):
        if rel not in links:
            out.bad(f"the symlink {rel!r} the core put in the root was removed")
    settle(sb, ds, out)


# Hostile inputs ----------------------------------------------------------------------------

HOSTILE_NAMES = [b"-rf.log", b"--help.log", b"-- .log", b"line\nbreak.log", b"carriage\rreturn.log",
                 b"\xff\xfe-not-utf8.log", b"caf\xe9-latin1.log", b"back\\slash.log", b"  spaces  .log",
                 b"quote\"'.log", b"star*?[x].log", b"tab\tname.log", b"\xe2\x80\x8b-zero-width.log",
                 b"n" * 251 + b".log"]


def _bind_socket(dir_path: Path, name: str) -> None:
    fd = os.open(dir_path, _DIR)
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
        ds.add("logs", (d + b"/" if d else b"") + name, _content(rng), 90, True)
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
    reported = {e.get("path") for e in e2e.log_events(sb) if e["event"] == "skip"}
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
    out.notes.append(f"deepest file: {DEEP} directories, {2 * DEEP + 11}-byte relative path, "
                     f"{deepest}-byte absolute path (PATH_MAX is {os.pathconf('/', 'PC_PATH_MAX')})")
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
        got = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd="/",
                             preexec_fn=drop_to_nobody(sb.base if blocked else None, blocked))
    except subprocess.SubprocessError as exc:
        out.skipped = f"cannot run the chain as uid {NOBODY} here ({blocked} blocks it and the bind mount failed): {exc}"
        return
    out.faults += 1
    out.mechanism = "setuid nobody" + (f" (private bind mount over {blocked})" if blocked else "")
    out.recovered = got.returncode == 0
    if got.returncode:
        out.bad(f"maintenance as nobody exited {got.returncode}: {got.stderr[-400:]}")
    judge(sb, ds, scratch, out)
    if secret_path.read_bytes() != secret.content:
        out.bad("the file nobody cannot read was lost")
    said = [e for e in e2e.log_events(sb) if e.get("path") == "private/orders-0600.log"]
    if not any(e["event"] == "not_archived" and "Permission denied" in e.get("reason", "") for e in said):
        out.bad(f"the unreadable file was not reported as not archived (permission denied): {said}")
    said = [e for e in e2e.log_events(sb) if e.get("path") == "vault"]
    if not any(e["event"] == "skip" and "Permission denied" in e.get("reason", "") for e in said):
        out.bad(f"the directory nobody cannot list was not reported (its expired files are kept unsaid): {said}")
    if os.stat(sb.state).st_uid != NOBODY:
        out.bad("the state dir is not owned by the dropped uid")
    if any(k in data_ids(sb) for k in ds.expected_gone()):  # one more clean run, as nobody too
        subprocess.run(cmd, capture_output=True, env=env, timeout=120, cwd="/",
                       preexec_fn=drop_to_nobody(sb.base if blocked else None, blocked))
    out.kept_forever = sorted(k for k in ds.expected_gone() if k in data_ids(sb))


def trial_concurrency(rng, sb, scratch, out):
    configure(sb, rng, dests=1, journals=False)
    ds = Dataset(sb)
    for i in range(600):
        ds.add("logs", b"d%02d/f%05d.log" % (i % 40, i), b"line %d\n" % i * 8, 40, True)
    procs = [e2e.popen(sb, "maintenance") for _ in range(8)]
    results = [(p.communicate(timeout=120), p.returncode)[::-1] for p in procs]
    out.faults += 7
    codes = sorted(code for code, _ in results)
    if codes != [0] + [LOCK_BUSY] * 7:
        out.bad(f"eight chains at once exited {codes}, expected one 0 and seven 75")
    for code, (_, err) in results:
        if code == LOCK_BUSY and "another run holds the lock" not in err:
            out.bad(f"a rival exited 75 without saying why: {err[-200:]}")
    if len(sb.runs()) != 1:
        out.bad(f"rivals left runs behind: {sb.runs()}")
    out.recovered = codes.count(0) == 1
    judge(sb, ds, scratch, out)
    settle(sb, ds, out)


TRIALS = {
    "sigkill-point": trial_sigkill_point,
    "sigkill-time": trial_sigkill_time,
    "disk-full-dest": lambda *a: trial_disk_full(*a, target="dest"),
    "disk-full-state": lambda *a: trial_disk_full(*a, target="state"),
    "io-read-eio": trial_io_read,
    "io-fsync-eio": trial_io_fsync,
    "io-short-write": trial_io_short,
    "corrupt-state": lambda *a: trial_corrupt(*a, where="state"),
    "corrupt-dest": lambda *a: trial_corrupt(*a, where="dest"),
    "copy-lost": trial_copy_lost,
    "core-race": trial_core_race,
    "hostile-names": trial_hostile_names,
    "hostile-deep": trial_hostile_deep,
    "hostile-uid": trial_hostile_uid,
    "concurrency": trial_concurrency,
    "config-change": trial_config_change,
}
assert set(TRIALS) == set(KINDS)


# -- the campaign ----------------------------------------------------------------------------

def trial_seed(seed: int, kind: str, i: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{kind}:{i}".encode()).digest()[:8], "big")


def run_trial(kind: str, i: int, seed: int, work: Path, keep: bool = False, budget: float = 1.0) -> Outcome:
    out = Outcome(kind, i, trial_seed(seed, kind, i), budget=budget)
    rng = random.Random(out.seed)
    tdir = work / f"{kind}-{i:04d}"
    tdir.mkdir(parents=True)
    os.chmod(tdir, 0o711)
    t0 = time.monotonic()
    try:
        # The deep tree sits under a long path, as /srv/<site>/<host>/... would: its
        # deepest absolute path is then longer than PATH_MAX, its relative path is not.
        sb = Sandbox(tdir / ("p" * 200 if kind == "hostile-deep" else "sb"))
        TRIALS[kind](rng, sb, tdir / "scratch", out)
    except TrialAbort:
        pass
    except Exception:
        out.bad("the trial itself crashed:\n" + traceback.format_exc()[-1500:])
    finally:
        out.seconds = time.monotonic() - t0
        if not keep:
            remove_tree(tdir)
    return out


def remove_tree(path: Path) -> None:
    """rm -rf: shutil.rmtree recurses and gives up on a 2,000-deep tree."""
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], capture_output=True)


def _init_worker() -> None:
    # Warm the imports the forked step processes need, once per worker.
    importlib.import_module("ops.cli")
    importlib.import_module("ops.steps.pipeline")
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _task(args) -> Outcome:
    return run_trial(*args)


def plan(trials: int, kinds: list[str]) -> list[tuple[str, int]]:
    tasks = []
    for kind in kinds:
        per, _cost, _ = KINDS[kind]
        tasks += [(kind, i) for i in range(max(1, round(trials * per)))]
    tasks.sort(key=lambda t: -KINDS[t[0]][1])  # the longest first, for an even finish
    return tasks


def run_campaign(seed: int, trials: int, work: Path, kinds: list[str] | None = None, workers: int = 2,
                 keep: bool = False, only: int | None = None, progress=None, budget: float = 1.0) -> list[Outcome]:
    kinds = kinds or list(KINDS)
    tasks = [(k, i, seed, work, keep, budget) for k, i in plan(trials, kinds) if only is None or i == only]
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o711)  # uid nobody (hostile-uid) must be able to reach its sandbox
    results = []
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers, initializer=_init_worker, maxtasksperchild=20) as pool:
        for o in pool.imap_unordered(_task, tasks):
            results.append(o)
            if progress:
                progress(o, len(results), len(tasks))
    return sorted(results, key=lambda o: (list(KINDS).index(o.kind), o.trial))


def table(results: list[Outcome]) -> tuple[str, bool]:
    """The report, and whether the campaign passed."""
    rows = []
    total = {"trials": 0, "faults": 0, "recovered": 0, "new_run": 0, "lost": 0, "kept": 0, "viol": 0}
    for kind in KINDS:
        rs = [o for o in results if o.kind == kind]
        if not rs:
            continue
        ran = [o for o in rs if not o.skipped]
        row = {
            "kind": kind, "trials": len(ran), "faults": sum(o.faults for o in ran),
            "recovered": sum(o.recovered and not o.failed for o in ran), "new_run": sum(o.new_run for o in ran),
            "lost": sum(len(o.lost) for o in ran), "kept": sum(len(o.kept_forever) for o in ran),
            "viol": sum(len(o.violations) for o in ran),
        }
        for k in total:
            if k != "kind":
                total[k] += row[k]
        mech = sorted({o.mechanism for o in ran if o.mechanism})
        skipped = sorted({o.skipped for o in rs if o.skipped})
        row["how"] = "; ".join(mech + [f"SKIPPED {len(rs) - len(ran)}: {s}" for s in skipped])
        rows.append(row)
    head = f"{'fault kind':<16} {'trials':>6} {'faults':>7} {'recovered':>9} {'--new-run':>9} " \
           f"{'files lost':>10} {'kept forever':>12} {'violations':>10}  mechanism"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['kind']:<16} {r['trials']:>6} {r['faults']:>7} {r['recovered']:>9} {r['new_run']:>9} "
                     f"{r['lost']:>10} {r['kept']:>12} {r['viol']:>10}  {r['how']}")
    lines.append("-" * len(head))
    lines.append(f"{'total':<16} {total['trials']:>6} {total['faults']:>7} {total['recovered']:>9} "
                 f"{total['new_run']:>9} {total['lost']:>10} {total['kept']:>12} {total['viol']:>10}")
    passed = total["lost"] == 0 and total["kept"] == 0 and total["viol"] == 0
    return "\n".join(lines), passed


def failures(results: list[Outcome], seed: int) -> str:
    lines = []
    for o in results:
        if not o.failed:
            continue
        lines.append(f"\n{o.kind} trial {o.trial} (reproduce: scripts/chaos.py --seed {seed} --kind {o.kind} "
                     f"--trial {o.trial} --keep)")
        lines += [f"  lost: {_short(k)}" for k in o.lost[:10]]
        lines += [f"  kept forever: {_short(k)}" for k in o.kept_forever[:10]]
        lines += [f"  violation: {v}" for v in o.violations[:10]]
    return "\n".join(lines)


def _short(key: bytes) -> str:
    text = repr(key)
    return text if len(text) <= 160 else f"{text[:70]}...{text[-70:]} ({len(key)} bytes)"


def notes(results: list[Outcome]) -> str:
    """What the trials noted (where faults landed, what the tools said), with counts."""
    counts: dict[str, int] = {}
    for o in results:
        for n in o.notes:
            counts[f"{o.kind}: {n}"] = counts.get(f"{o.kind}: {n}", 0) + 1
    return "\n".join(f"  {k}" + (f"  (x{c})" if c > 1 else "") for k, c in sorted(counts.items()))


def default_work_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="qts-chaos-"))
