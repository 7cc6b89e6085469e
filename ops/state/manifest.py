"""Run state on disk and the one precondition: "the predecessor's intact success manifest".

``<state_dir>/runs/<run_id>/<step>.ok.json`` is written atomically as the last act of a
successful step. It carries a seal (SHA-256 of its own canonical bytes), the SHA-256 of
its predecessor's file bytes, and the SHA-256 of every entry file it depends on. Every
step re-checks the whole chain back to scan, so a manifest or entry file changed by one
byte, truncated, or swapped in from another run is refused (exit 2).
"""

import calendar
import hashlib
import itertools
import json
import os
import re
import secrets
import time
from pathlib import Path

from ops.errors import Refused, UsageError, refusal_of
from ops.sys.atomic import atomic_write, ensure_private_dir, fsync_dir
from ops.sys.jsonl import decode_line, dumps_document, iter_lines
from ops.sys.paths import NotPlainFile, check_manifest_path, open_plain_file, read_plain_file, unsafe_reason
from ops.sys.sizes import CHUNK, MiB
from ops.sys.workers import ForkedWorkers, WorkerError

STEPS = ("scan", "backup", "verify", "clean")
SCHEMA = 1
RUN_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{4}$")
# Entry files this large together (about 7,000 lines) are checked in forked processes.
_SIDE_BY_SIDE_BYTES = MiB


# The files of a run besides its manifests, named here once.
JOURNAL = "clean.journal.jsonl"  # clean's decisions, a line per file, in entry order


def entries_name(policy: str) -> str:
    """scan's entry file of ``policy``: a line per expired file (path, size, mtime, ctime, dev, ino)."""
    return f"scan.{policy}.jsonl"


def records_name(policy: str) -> str:
    """backup's record file of ``policy``: a line per entry, in the same order (status, SHA-256)."""
    return f"backup.{policy}.jsonl"


def _cores() -> int:
    """The CPUs this process may run on (its affinity mask, not the host's count)."""
    return len(os.sched_getaffinity(0))


def new_run_id(state_dir: Path, now: float | None = None) -> str:
    """A run id that sorts after every run in ``state_dir``.

    "The newest run" is the last one sorted, so a run started in the same second as the
    one before it (a quick maintenance does that) must not draw a smaller random suffix.
    It keeps that second and takes a larger suffix; the same holds if the clock was set
    back. Only after ffff does the stamp move on a second.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    runs = list_runs(state_dir)
    if not runs or runs[-1][:16] < stamp:
        return f"{stamp}-{secrets.token_hex(2)}"
    last_stamp, last_suffix = runs[-1][:16], int(runs[-1][17:], 16)
    if last_suffix == 0xFFFF:
        return new_run_id(state_dir, calendar.timegm(time.strptime(last_stamp, "%Y%m%dT%H%M%SZ")) + 1)
    return f"{last_stamp}-{last_suffix + 1 + secrets.randbelow(0xFFFF - last_suffix):04x}"


def check_run_id(run_id: str) -> str:
    if not RUN_ID_RE.match(run_id or ""):
        raise UsageError(f"{run_id!r} is not a run id (expected like 20261126T031700Z-4f2a)")
    return run_id


def list_runs(state_dir: Path) -> list[str]:
    runs = Path(state_dir) / "runs"
    if os.path.islink(runs):
        return []  # not this state's runs (nothing is packed or removed there); scan refuses it and says so
    try:
        names = os.listdir(runs)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if RUN_ID_RE.match(n))


def sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with open_plain_file(path) as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def _not_ours(what: str) -> Refused:
    why = "is not a regular file (a symlink, FIFO, device or directory), so not one this toolkit wrote"
    return Refused(f"{what} {why}")


def _open_state(path: Path, what: str):
    """A manifest or entry file opened for reading (``open_plain_file``), or Refused if it is
    not a regular file; FileNotFoundError is the caller's to word."""
    try:
        return open_plain_file(path)
    except NotPlainFile:
        raise _not_ours(what) from None


def _seal(body: dict) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def seal_document(body: dict) -> bytes:
    return dumps_document(dict(body, seal=_seal(body)))


def open_sealed(data: bytes, where: str) -> dict:
    """Parse a sealed document; any byte that differs from what was written is refused."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise Refused(f"{where} is not valid JSON ({exc}); it was truncated or edited") from None
    if not isinstance(doc, dict) or "seal" not in doc:
        raise Refused(f"{where} has no seal; it was not written by this toolkit")
    body = {k: v for k, v in doc.items() if k != "seal"}
    if doc["seal"] != _seal(body) or seal_document(body) != data:
        raise Refused(f"{where} does not match its seal; it was changed after it was written")
    return body


class Run:
    """One run's directory of manifests and entry files."""

    def __init__(self, state_dir: Path, run_id: str):
        self.id = check_run_id(run_id)
        self.dir = Path(state_dir) / "runs" / run_id

    def path(self, name: str) -> Path:
        return self.dir / name

    def ok_path(self, step: str) -> Path:
        return self.dir / f"{step}.ok.json"

    def failed_path(self, step: str) -> Path:
        return self.dir / f"{step}.failed.json"

    def paused_path(self, step: str) -> Path:
        return self.dir / f"{step}.paused.json"

    def exists(self) -> bool:
        return self.dir.is_dir()

    def linked_dir(self) -> Path | None:
        """``runs/`` or this run's directory if either is a symlink (put there by hand):
        nothing of the run is then read or written through it."""
        return next((d for d in (self.dir.parent, self.dir) if os.path.islink(d)), None)

    def sealed(self, step: str, where: str | None = None) -> dict:
        """``step``'s success manifest with its seal checked (Refused if it does not match;
        ``where`` names it in the message): the one reader of a manifest's bytes. The file
        system's answer (FileNotFoundError, NotPlainFile, ...) is the caller's to word."""
        path = self.ok_path(step)
        with open_plain_file(path) as f:
            data = f.read()
        return open_sealed(data, where or path.name)

    def peek(self, step: str) -> dict | None:
        """``step``'s success manifest if it is there and intact by its seal, else None: for
        choosing (which run to continue, whether the clock went back). A step that then
        acts checks the whole chain (``require``)."""
        try:
            return self.sealed(step)
        except (OSError, Refused):
            return None

    def failure(self, step: str, path: Path | None = None) -> dict:
        """What ``<step>.failed.json`` (or ``path``: paused.json) says, or {} when it cannot be read."""
        try:
            doc = json.loads(read_plain_file(path or self.failed_path(step)))
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def create(self) -> None:
        ensure_private_dir(self.dir.parent.parent)
        ensure_private_dir(self.dir.parent, own=True)
        ensure_private_dir(self.dir, own=True)
        # Also when the directory was there already: a scan killed between its mkdir and the
        # sync of runs/ left a name that a power cut could still take, with the whole run.
        fsync_dir(self.dir.parent)

    # -- writing -------------------------------------------------------------------------

    def write_ok(self, step: str, body: dict, files: dict[str, str] | None = None) -> dict:
        """Seal and publish ``<step>.ok.json``: the last act of a successful step."""
        doc = {
            "schema": SCHEMA,
            "step": step,
            "run_id": self.id,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": dict(files or {}),
        }
        index = STEPS.index(step)
        if index:
            prev = self.ok_path(STEPS[index - 1])
            doc["predecessor"] = {"file": prev.name, "sha256": sha256_file(prev)}
        doc.update(body)
        atomic_write(self.ok_path(step), seal_document(doc))
        self._forget(self.failed_path(step), self.paused_path(step))
        return doc

    def write_failed(self, step: str, message: str, code: int) -> None:
        self._write_stopped(self.failed_path(step), step, "failed_at", exit_code=code, error=message)
        self._forget(self.paused_path(step))

    def write_paused(self, step: str, message: str) -> None:
        """``<step>.paused.json``: the maintenance window closed while the step ran; the
        next run inside the window resumes the run. Read by status only, like a failure."""
        self._write_stopped(self.paused_path(step), step, "paused_at", reason=message)
        self._forget(self.failed_path(step))

    def _write_stopped(self, path: Path, step: str, when: str, **what) -> None:
        self.create()
        doc = {"schema": SCHEMA, "step": step, "run_id": self.id}
        doc[when] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        atomic_write(path, dumps_document({**doc, **what}))

    @staticmethod
    def _forget(*paths: Path) -> None:
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    # -- checking ------------------------------------------------------------------------

    def _load(self, step: str) -> dict:
        path = self.ok_path(step)
        where = f"run {self.id}: {path.name}"
        try:
            doc = self.sealed(step, where)
        except FileNotFoundError:
            raise Refused(
                f"run {self.id}: {path.name} is missing",
                hint=f"run the {step} step first: make {step} RUN={self.id}",
            ) from None
        except NotPlainFile:
            raise _not_ours(where) from None
        if doc.get("schema") != SCHEMA or doc.get("step") != step or doc.get("run_id") != self.id:
            raise Refused(
                f"{where} belongs to step {doc.get('step')!r} of run {doc.get('run_id')!r}; it was swapped in"
            )
        index = STEPS.index(step)
        if index:
            prev = self.ok_path(STEPS[index - 1])
            recorded = (doc.get("predecessor") or {}).get("sha256")
            if not prev.exists() or recorded != sha256_file(prev):
                raise Refused(f"{where} does not match {prev.name} (changed, truncated or replaced since)")
        return doc

    def check_entry_files(self, chain: dict[str, dict], side_by_side: bool = True) -> None:
        """Hash every entry file the manifests of ``chain`` name, and check every path in it.

        Several large ones are checked side by side in forked processes: the check is
        Python decoding every line, so one core does one file. clean's two files of
        200,000 lines take 1.35 s one after the other, 0.78 s side by side. A check that
        already runs beside a step's work passes ``side_by_side=False``: its own helpers
        would only compete with that work. If forking fails, the files are checked in turn.
        """
        checks = [
            (name, sha, f"run {self.id}: {self.ok_path(step).name}")
            for step, doc in chain.items()
            for name, sha in doc.get("files", {}).items()
        ]
        count = min(len(checks), _cores()) if side_by_side else 1
        workers = None
        if count >= 2 and sum(self._size(name) for name, _, _ in checks) >= _SIDE_BY_SIDE_BYTES:
            try:
                workers = ForkedWorkers(count, lambda check: refusal_of(self._check_entry_file, *check))
            except OSError:
                workers = None  # no process to spare (EAGAIN, ENOMEM): check in turn
        if workers is None:
            for check in checks:
                self._check_entry_file(*check)
            return
        with workers:
            try:
                self._collect(workers, checks)
            except BaseException:
                workers.kill()  # a refusal or Ctrl-C: the other answers no longer matter
                raise

    def _collect(self, workers: ForkedWorkers, checks: list) -> None:
        # At most one check outstanding per worker; answers come back in chain order,
        # so the refusal reported is the one a check in turn would have met first.
        pending = iter(checks)

        def submit(check) -> None:
            try:
                workers.submit(check)
            except WorkerError:
                pass  # a worker already gone: its answer (EOF) is the refusal, in turn

        for check in itertools.islice(pending, workers.count):
            submit(check)
        for check in checks:
            try:
                refusal = workers.result()
            except WorkerError as exc:
                refusal = (f"run {self.id}: entry file {check[0]} could not be checked: {exc}", None)
            if refusal:
                raise Refused(*refusal)
            for following in itertools.islice(pending, 1):
                submit(following)

    def _size(self, name: str) -> int:
        try:
            return os.stat(self.path(name)).st_size if "/" not in name else 0
        except (OSError, ValueError):
            return 0  # the check itself says what is wrong with it

    def _check_entry_file(self, name: str, expected: str, where: str) -> None:
        """Hash the entry file and check every path in it, before anything acts on it."""
        check_manifest_path(name, where)
        if "/" in name:
            raise Refused(f"{where}: entry file {name!r} is outside the run directory")
        path = self.path(name)
        sha = hashlib.sha256()
        try:
            with _open_state(path, f"{where}: entry file {name}") as f:
                for n, line in enumerate(f, 1):
                    sha.update(line)
                    try:
                        relpath = decode_line(line)["path"]
                    except (ValueError, KeyError, TypeError):
                        relpath = None
                    if not isinstance(relpath, str):
                        raise Refused(f"run {self.id}: {name} line {n} is not a valid entry")
                    if unsafe_reason(relpath):  # the message is built only for a line refused
                        check_manifest_path(relpath, f"{name} line {n}")
        except FileNotFoundError:
            raise Refused(f"run {self.id}: entry file {name} named by {where} is missing") from None
        if sha.hexdigest() != expected:
            raise Refused(f"run {self.id}: {name} does not match the SHA-256 recorded in {where}; it was changed")

    def require(self, step: str, entry_files: bool = True) -> dict[str, dict]:
        """The intact success manifests of every step before ``step``, or Refused (exit 2).

        ``entry_files=False`` leaves out the entry files, the one costly part (every line
        of each is decoded and its path checked): the caller must then have
        ``check_entry_files`` pass before it acts on, or publishes, anything. Every
        manifest is checked before any entry file, so of two tamperings the manifest's is
        the one reported.
        """
        linked = self.linked_dir()
        if linked:  # its manifests would be read, and the step's written, elsewhere
            raise Refused(
                f"{linked} is a symbolic link; a run's state is trusted only in a directory of its own",
                hint="put the directory it points at in its place, or remove it",
            )
        if not self.exists():
            raise Refused(f"run {self.id} does not exist in {self.dir.parent}", hint="start one with: make scan")
        chain = {s: self._load(s) for s in STEPS[: STEPS.index(step)]}
        if entry_files:
            self.check_entry_files(chain)
        return chain

    def completed(self, step: str) -> dict | None:
        """This step's own manifest if it already succeeded (chain intact), else None."""
        if not self.ok_path(step).exists():
            return None
        chain = self.require(step, entry_files=False)
        doc = self._load(step)
        self.check_entry_files({**chain, step: doc})
        return doc


def paired(run: "Run", policy: str, entries: str):
    """(entry, record) of ``policy``: scan's entries (the file ``entries``, as its manifest
    names it) with backup's records, one to one and in order. Refused at the first path
    where they disagree, and when one file is longer than the other: no file is ever
    passed over, nor acted on by another's record."""
    records = iter_lines(run.path(records_name(policy)))
    for entry, record in itertools.zip_longest(iter_lines(run.path(entries)), records):
        if entry is None or record is None or entry["path"] != record["path"]:
            raise Refused(
                f"run {run.id}: scan entries and backup records of {policy} disagree "
                f"({(entry or {}).get('path')!r} vs {(record or {}).get('path')!r})"
            )
        yield entry, record
