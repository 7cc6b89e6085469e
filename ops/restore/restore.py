"""restore: extract a run's archive from a destination, as untrusted input.

Nothing on a destination is believed on its own word: anyone who can write there can
rewrite an archive, its ``.sha256`` file and SHA256SUMS to match. Every file is checked
against the strongest record this host holds of the run: its local state (backup.ok.json
and the run's backup records, sealed and chained back to scan), else the catalogue (every
file clean deleted, with its SHA-256), else the run's own MANIFEST.json, whose digests must
agree with SHA256SUMS and with the files they name. Any disagreement refuses that copy.

Without DEST=, every destination that holds the run is tried in turn: one that cannot be
reached, or whose copy is damaged or disagrees, is passed over (and said why), and the next
goes on from where it stopped; what an earlier one restored was checked file by file and
stays. Every member must be a regular file with a safe relative name, whatever the
checksums say. Files are written beneath the target through directory descriptors (no
symlink followed), to a temporary name, checked, fsynced, and then linked into place, which
fails rather than replace an existing file. A conflict found before extraction stops the
restore with nothing written. A run of another host, or of another policy root, goes into
this host's policy roots only when asked (--from-other-host); under TO= it always may.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import re
import stat
import time
import traceback
from collections import Counter
from itertools import zip_longest
from pathlib import Path

from ops.archive import EXTENSIONS, ArchiveError, ArchiveReader
from ops.archive.checksums import parse_lines
from ops.config import NAME_RE, Config
from ops.console import Console
from ops.destinations import Destination, DestinationError, open_destination
from ops.destinations.hosts import run_host, this_host
from ops.errors import LockBusy, OpsError, Refused, StepFailed, UsageError
from ops.logs.steplog import StepLog
from ops.restore.batch import Batch, TargetError, Untrusted, dir_fd, temp_stem
from ops.restore.find import indexing
from ops.state import catalogue
from ops.state.manifest import Run, records_name
from ops.state.restored import Marks
from ops.sys.atomic import make_dirs
from ops.sys.hashio import HashingReader, sha256_bytes
from ops.sys.jsonl import iter_lines
from ops.sys.pace import PACE
from ops.sys.paths import open_dir_nofollow, unsafe_reason

_LEFTOVER = re.compile(rb"\A\.(.+)\.tmp-restore-[0-9a-f]{8}\Z", re.DOTALL)
_OTHER_HOST_HINT = (
    "restore it elsewhere with TO=<dir> (--to) and look at it; to put it into this host's roots "
    "after all, FROM_OTHER_HOST=1 (--from-other-host)"
)


class Records:
    """What this host holds of a run, strongest first: its local state, else the catalogue.

    ``files``: {policy: {member name: SHA-256}}; with the local state every member is there,
    with the catalogue only the files clean deleted (the others are checked against the
    run's MANIFEST.json alone).
    """

    def __init__(self, config: Config, run_id: str):
        self.run_id = run_id
        self.backup: dict | None = None  # backup.ok.json's body
        self.files: dict[str, dict[bytes, str]] = {}
        self.source: str | None = None
        run = Run(config.state_dir, run_id)
        if run.linked_dir() or os.path.lexists(run.ok_path("backup")):
            try:
                chain = run.require("verify")  # scan and backup, their seals and entry files
            except Refused as exc:
                raise Refused(
                    f"{exc.message}; restore checks every file against this state, so it restores nothing",
                    hint=f"to restore on the destination's word alone, move {run.dir} aside first",
                ) from None
            self.backup = chain["backup"]
            for policy in self.backup["policies"]:
                self.files[policy] = {
                    os.fsencode(r["path"]): r["sha256"]
                    for r in iter_lines(run.path(records_name(policy)))
                    if r["status"] != "skipped"
                }
            self.source = f"the local state of run {run_id}"
            return
        for entry in catalogue.run_entries(config.state_dir, run_id):
            self.files.setdefault(entry["policy"], {})[os.fsencode(entry["rel"])] = entry["sha256"]
        if self.files:
            self.source = "the catalogue"


def load_index(dest: Destination, run_id: str, records: Records) -> tuple[dict, dict[str, str]]:
    """The run's MANIFEST.json and SHA256SUMS listing on ``dest``, once they agree with each
    other and with ``records``; Untrusted where they do not."""
    sums_raw = dest.read_bytes(run_id, "SHA256SUMS")
    manifest_raw = dest.read_bytes(run_id, "MANIFEST.json")
    if records.backup is not None:
        if sha256_bytes(manifest_raw) != records.backup.get("manifest_sha256"):
            raise Untrusted(f"MANIFEST.json is not the one {records.source} records")
        recorded = records.backup.get("sha256sums_sha256")
        if recorded and sha256_bytes(sums_raw) != recorded:
            raise Untrusted(f"SHA256SUMS is not the one {records.source} records")
    listed = {}
    for sha, name in parse_lines(sums_raw.splitlines(keepends=True)):
        listed[name.decode("utf-8", "surrogateescape")] = sha
    if listed.get("MANIFEST.json") != sha256_bytes(manifest_raw):
        raise Untrusted("MANIFEST.json does not match SHA256SUMS")
    manifest = json.loads(manifest_raw)
    if (
        not isinstance(manifest, dict)
        or manifest.get("run_id") != run_id
        or manifest.get("compression") not in EXTENSIONS
        or not isinstance(manifest.get("policies"), dict)
    ):
        raise Untrusted("MANIFEST.json does not describe this run")
    for name, p in manifest["policies"].items():
        if not isinstance(p, dict):
            raise Untrusted(f"MANIFEST.json describes policy {name!r} as {type(p).__name__}")
        compression = p.setdefault("compression", manifest["compression"])
        if (
            not NAME_RE.match(name)
            or compression not in EXTENSIONS
            or p.get("archive") != name + EXTENSIONS[compression]
            or p.get("sums") != f"{name}.sha256"
        ):
            raise Untrusted(f"MANIFEST.json names an unexpected file for policy {name!r}")
        for key in ("archive", "sums"):
            if p[key] not in listed:
                raise Untrusted(f"SHA256SUMS does not list {p[key]}")
            # MANIFEST.json's own digests: a file rewritten with SHA256SUMS to match still differs here.
            if p.get(f"{key}_sha256") != listed[p[key]]:
                raise Untrusted(f"MANIFEST.json records another SHA-256 for {p[key]} than SHA256SUMS")
    if records.backup is not None and set(manifest["policies"]) != set(records.backup["policies"]):
        raise Untrusted(f"MANIFEST.json lists other policies than {records.source}")
    return manifest, listed


def checked_sums(dest: Destination, run_id: str, sums_name: str, expected_sha: str):
    """Every (sha, name) of a .sha256 file, after proving the file matches SHA256SUMS."""
    with dest.open_read(run_id, sums_name) as raw:
        reader = HashingReader(raw)
        for _sha, name in parse_lines(reader):
            reason = unsafe_reason(name)
            if reason:
                raise Untrusted(f"{sums_name}: refusing member {name!r}: {reason}")
        if reader.sha256 != expected_sha:
            raise Untrusted(f"{sums_name} does not match SHA256SUMS")
    with dest.open_read(run_id, sums_name) as raw:
        yield from parse_lines(raw)


def _parent_fd(target_fd: int, name: bytes, create: bool) -> tuple[int, bytes]:
    """Descriptor of ``name``'s parent beneath the target (created 0700 when asked)."""
    parent, _, leaf = name.rpartition(b"/")
    return dir_fd(target_fd, parent, create), leaf


def _exists(target_fd: int, name: bytes) -> bool:
    try:
        fd, leaf = _parent_fd(target_fd, name, create=False)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # a component is a file or symlink: writing there would be refused anyway
    try:
        os.stat(leaf, dir_fd=fd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)


def _holds(target_fd: int, name: bytes, sha: str) -> bool:
    """Whether the regular file at ``name`` beneath the target already has the content
    whose SHA-256 is ``sha`` (a restore killed part-way restored it); never through a link."""
    try:
        fd, leaf = _parent_fd(target_fd, name, create=False)
    except OSError:
        return False
    try:
        file_fd = os.open(leaf, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
    except OSError:
        return False
    finally:
        os.close(fd)
    with open(file_fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return False
        return hashlib.file_digest(f, "sha256").hexdigest() == sha


def _open_target(target: Path, create: bool = False) -> int | None:
    """A descriptor of the restore target (made first if ``create``), or None if it is
    missing. Never a symlink in its place: scan refuses such a root, so restore does not
    write through one either."""
    try:
        if create:
            make_dirs(target)  # each new directory's entry in its parent, durable
        return open_dir_nofollow(target)
    except FileNotFoundError:
        return None
    except NotADirectoryError as exc:
        raise TargetError(f"the restore target {target} {exc.strerror}") from None
    except OSError as exc:
        raise TargetError(f"the restore target {target}: {exc}") from None


def _remove_leftovers(target_fd: int, target: Path, dirs: dict[bytes, set[bytes]]) -> list[Path]:
    """Remove the temporary files an interrupted restore left beside the files this one
    writes (``.<name>.tmp-restore-<hex>``, for a <name> of this run, a regular file); the
    paths removed."""
    removed = []
    for parent, leaves in dirs.items():
        stems = {temp_stem(leaf) for leaf in leaves}
        try:
            fd = dir_fd(target_fd, parent)
        except OSError:
            continue  # not there yet (nothing to remove), or not a directory we would write in
        try:
            for name in map(os.fsencode, os.listdir(fd)):  # str names, on a descriptor
                m = _LEFTOVER.match(name)
                if not m or m.group(1) not in stems:
                    continue
                where = target / os.fsdecode(os.path.join(parent, name))
                try:
                    if not stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                        continue
                    os.unlink(name, dir_fd=fd)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise TargetError(f"cannot remove {where}, left by an interrupted restore: {exc}") from None
                removed.append(where)
        finally:
            os.close(fd)
    return removed


class _Job:
    """One restore: the run, what to restore where, and what is done so far, across the
    destinations tried."""

    def __init__(
        self,
        config: Config,
        run_id: str,
        ui: Console,
        log: StepLog,
        records: Records,
        policy: str | None = None,
        only: tuple[str, bytes, Path, Path] | None = None,
        to: str | None = None,
        from_other_host: bool = False,
    ):
        self.config, self.run_id, self.ui, self.log, self.records = config, run_id, ui, log, records
        self.policy, self.to, self.from_other_host = policy, to, from_other_host
        self.only = only  # FILE=: (policy, member names, the root they were deleted from, target)
        self.policies: list[str] = []
        self.targets: dict[str, Path] = {}
        self.done: dict[str, set[bytes]] = {}
        self.complete: set[str] = set()
        self.counts: dict[str, Counter] = {}  # policy -> {destination: files}
        self.checked: dict[str, Counter] = {}  # policy -> {record: files}
        self.marks: Marks | None = None
        self.trust_said = False

    @property
    def into_roots(self) -> bool:
        return not self.to

    def plan(self, dest: Destination, manifest: dict) -> None:
        """Which policies go where, from the first copy that checks out."""
        if self.policies:
            for name in self.policies:
                if name not in manifest["policies"]:
                    raise Untrusted(f"its MANIFEST.json has no archive for policy {name!r}")
            return
        if self.only:
            names = [self.only[0]]
        elif self.policy:
            names = [self.policy]
        else:
            names = sorted(manifest["policies"])
        for name in names:
            if name not in manifest["policies"]:
                raise Untrusted(f"run {self.run_id} on {dest.describe()} has no archive for policy {name!r}")
        for name in names:
            if self.only:
                target = self.only[3]
            elif self.to:
                target = Path(self.to) / name  # never a path taken from the untrusted manifest
            elif name in {p.name for p in self.config.policies}:
                target = self.config.policy(name).root
            else:
                raise StepFailed(
                    f"policy {name!r} of run {self.run_id} is not in {self.config.path}, so it has no "
                    "root to go back to",
                    hint="restore it elsewhere with TO=<dir>",
                )
            self.targets[name] = target
            self.done[name], self.counts[name], self.checked[name] = set(), Counter(), Counter()
        self.policies = names

    def check_host(self, manifest: dict) -> None:
        """Another host's run (or one of another root) goes into this host's roots only when asked."""
        if not self.into_roots or self.from_other_host:
            return
        host, me = run_host(manifest), this_host()
        if host != me:
            raise StepFailed(
                f"run {self.run_id} is a run of host {host!r}, not of this host ({me!r}); "
                "nothing was restored into this host's roots",
                hint=_OTHER_HOST_HINT,
            )
        for name in self.policies:
            theirs, ours = manifest["policies"][name].get("root"), self.targets[name]
            if not isinstance(theirs, str) or not _same_dir(theirs, ours):
                raise StepFailed(
                    f"policy {name} of run {self.run_id} was backed up from {theirs}, not from "
                    f"{ours}; nothing was restored into this host's roots",
                    hint=_OTHER_HOST_HINT,
                )

    def say_trust(self, dest: Destination) -> None:
        # FILE= restores only a catalogued file: its record is the catalogue's line.
        if self.trust_said or self.records.backup is not None or self.only:
            return
        self.trust_said = True
        also = "; the files the catalogue lists are checked against it" if self.records.files else ""
        msg = (
            f"this host has no local state of run {self.run_id}: trusting the MANIFEST.json on {dest.describe()}, "
            f"whose digests agree with its SHA256SUMS and every file{also}"
        )
        self.log.event("trusting_manifest", msg, level="warning", destination=dest.name)
        self.ui.problem(f"restore: {msg}")

    def survey(self, dest: Destination, manifest: dict, listed: dict) -> None:
        """Before this copy writes anything: the files already at the target (a conflict
        stops everything), and the temporary files an interrupted restore left (removed)."""
        conflicts, removed, present = [], [], 0
        for name in self.policies:
            if name in self.complete:
                continue
            info, target = manifest["policies"][name], self.targets[name]
            known = self.records.files.get(name) or {}
            target_fd = _open_target(target)
            if target_fd is None:  # nothing can be there yet (extract checks the .sha256 file before any write)
                continue
            dirs: dict[bytes, set[bytes]] = {}
            try:
                for sha, member in checked_sums(dest, self.run_id, info["sums"], listed[info["sums"]]):
                    if (self.only and member not in self.only[1]) or member in self.done[name]:
                        continue
                    parent, _, leaf = member.rpartition(b"/")
                    dirs.setdefault(parent, set()).add(leaf)
                    if not _exists(target_fd, member):
                        continue
                    # Already there with the recorded content: a restore killed part-way got it
                    # back. Left as it is (never overwritten), and the rerun goes on with the rest.
                    if known.get(member, sha) == sha and _holds(target_fd, member, sha):
                        self.done[name].add(member)
                        present += 1
                    else:
                        conflicts.append(target / os.fsdecode(member))
                removed += _remove_leftovers(target_fd, target, dirs)
            finally:
                os.close(target_fd)
        if removed:
            shown = ", ".join(str(p) for p in removed[:5]) + (", ..." if len(removed) > 5 else "")
            msg = f"removed {len(removed)} temporary file(s) an interrupted restore of run {self.run_id} left: {shown}"
            self.log.event("leftovers_removed", msg, level="warning", paths=[str(p) for p in removed[:100]])
            self.ui.problem(f"restore: {msg}")
        if present:
            msg = f"{present} file(s) of run {self.run_id} are already at the target with their recorded content; kept"
            self.log.event("already_restored", msg)
            self.ui.info(f"restore: {msg}")
        if len(conflicts) == 1 and self.only:
            raise StepFailed(
                f"{conflicts[0]} already exists; nothing was restored",
                hint="restore it elsewhere with TO=<dir>, or move the file aside",
            )
        if conflicts:
            shown = "\n".join(f"  {p}" for p in conflicts[:20])
            raise StepFailed(
                f"{len(conflicts)} file(s) already exist at the restore target; nothing was restored:\n{shown}",
                hint="restore to another place with TO=<dir>, or move those files aside",
            )

    def extract(self, dest: Destination, manifest: dict, listed: dict, name: str) -> None:
        """One policy's archive from ``dest`` (what an earlier copy restored is skipped)."""
        info, target = manifest["policies"][name], self.targets[name]
        known = self.records.files.get(name)
        complete = self.records.backup is not None  # the local state has every member; the catalogue only some
        target_fd = _open_target(target, create=True)
        batch = Batch(target_fd, before_names=self._sync_marks)
        try:
            with dest.open_read(self.run_id, info["archive"]) as raw, ArchiveReader(raw, info["compression"]) as reader:
                sums = checked_sums(dest, self.run_id, info["sums"], listed[info["sums"]])
                for member, line in zip_longest(reader.members(), sums):
                    if member is None or line is None:
                        raise Untrusted(f"{info['archive']} and {info['sums']} list different members")
                    reason = unsafe_reason(member.name) or (
                        None if member.is_regular else f"member type {member.typeflag!r}"
                    )
                    if reason or member.name != line[1]:
                        raise Untrusted(
                            f"{info['archive']}: refusing member {member.name!r}: {reason or 'not in ' + info['sums']}"
                        )
                    recorded = known.get(member.name) if known is not None else None
                    if recorded is None and complete:
                        raise Untrusted(f"{info['archive']}: member {member.name!r} is not in {self.records.source}")
                    if recorded is not None and recorded != line[0]:
                        raise Untrusted(
                            f"{info['sums']}: {member.name!r} has another SHA-256 than {self.records.source} records"
                        )
                    if (self.only and member.name not in self.only[1]) or member.name in self.done[name]:
                        continue
                    source = self.records.source if recorded is not None else f"MANIFEST.json on {dest.name}"
                    on_written = self._marker(name, member.name) if self.into_roots else None
                    batch.write(reader, member, line[0], source, on_written, tag=(member.name, source))
                    if batch.full:
                        self._named(name, dest, batch.commit())
                if reader.finish()[0] != info["archive_sha256"]:
                    raise Untrusted(f"{info['archive']} does not match SHA256SUMS")
                self._named(name, dest, batch.commit())
        except (Untrusted, ArchiveError, DestinationError, ValueError, OSError):
            self._named(name, dest, batch.commit())  # the copy broke; what it gave was checked file by file
            raise
        finally:
            batch.close()
            if target_fd is not None:
                os.close(target_fd)
        self.complete.add(name)

    def _named(self, policy: str, dest: Destination, named: list[tuple[bytes, str]]) -> None:
        """Count and log the files a batch gave their names (one write for the batch's lines)."""
        lines = []
        for member, source in named:
            self.done[policy].add(member)
            self.counts[policy][dest.name] += 1
            self.checked[policy][source] += 1
            path = os.fsdecode(member)
            lines.append(
                self.log.line(
                    "restored",
                    f"{policy}: {path} from {dest.name}",
                    policy=policy,
                    path=path,
                    destination=dest.name,
                    checked_against=source,
                )
            )
        if lines:
            self.log.write(b"".join(lines))

    def _marker(self, policy: str, member: bytes):
        """What records a file restored into its root, before it gets its name (ops/state/restored.py)."""

        def mark(st: os.stat_result) -> None:
            try:
                if self.marks is None:
                    self.marks = Marks(self.config.state_dir)
                self.marks.add(policy, member, st)
            except OSError as exc:
                raise TargetError(f"cannot record the restored file in the state: {exc}") from None

        return mark

    def _sync_marks(self) -> None:
        try:
            if self.marks is not None:
                self.marks.sync()
        except OSError as exc:
            raise TargetError(f"cannot record the restored files in the state: {exc}") from None

    def restored(self) -> int:
        return sum(len(d) for d in self.done.values())

    def close(self) -> None:
        if self.marks is not None:
            marks, self.marks = self.marks, None
            marks.close()

    def grace_note(self) -> str:
        if not self.into_roots or not self.restored():
            return ""
        until = time.strftime("%Y-%m-%d", time.gmtime(time.time() + self.config.restore_grace.seconds))
        return f"; scan keeps them until {until} (restore_grace {self.config.restore_grace.text}), whatever their age"


def _same_dir(theirs: str, ours: Path) -> bool:
    return Path(theirs) == Path(ours) or os.path.realpath(theirs) == os.path.realpath(ours)


def _said(exc: BaseException) -> str:
    return f"refusing its copy: {exc}" if isinstance(exc, Untrusted) else str(exc)


def _run(job: _Job, names: list[str]) -> Destination:
    """Restore from the first of ``names`` whose copy checks out, going on from where a
    failed one stopped; the destination that finished it."""
    passed: dict[str, str] = {}
    for name in names:
        try:
            dest = open_destination(job.config.destination(name))
            if not dest.has_run(job.run_id):
                passed[name] = f"does not hold run {job.run_id}"
                job.log.event("not_held", f"{name}: {passed[name]}", destination=name)
                continue
            manifest, listed = load_index(dest, job.run_id, job.records)
            job.plan(dest, manifest)
            job.check_host(manifest)
            job.say_trust(dest)
            job.survey(dest, manifest, listed)
            for policy in job.policies:
                if policy not in job.complete:
                    job.extract(dest, manifest, listed, policy)
        except (Untrusted, ArchiveError, DestinationError, ValueError, OSError) as exc:
            # OSError here is the copy's (reading a local destination); the target's are TargetError.
            passed[name] = _said(exc)
            msg = f"passed over destination {name}: {passed[name]}"
            job.log.event(
                "destination_passed_over", msg, level="warning", destination=name, files_restored_so_far=job.restored()
            )
            job.ui.problem(f"restore: {msg}")
            continue
        job.log.event(
            "destination_used",
            f"run {job.run_id} restored from {name}"
            + "".join(f"; passed over {n}: {why}" for n, why in passed.items()),
            destination=name,
            pace=PACE.name,
            throttled_s=round(PACE.throttled_s, 3),  # the process's own rests: a restore is one process
        )
        return dest
    so_far = f"; {job.restored()} file(s) were restored, each checked, before that" if job.restored() else ""
    raise StepFailed(
        f"run {job.run_id} could not be restored from any destination ("
        + "; ".join(f"{n}: {why}" for n, why in passed.items())
        + f"){so_far}",
        hint="make status lists the runs each destination holds",
    )


def _checked_line(job: _Job, name: str) -> str:
    checked = job.checked[name]
    if len(checked) == 1:
        return f"each checked against {next(iter(checked))}"
    return "checked against " + ", ".join(f"{source} ({n})" for source, n in checked.most_common())


@contextlib.contextmanager
def _alone(state_dir: Path):
    """One restore at a time per state directory: two would write the same places, and each
    would take the other's temporary files for an interrupted restore's. The lock is the
    state directory's own (flock on the directory: nothing is written there, and it is not
    maintenance's lock file, so a restore may run during maintenance); a host with no state
    directory yet has nothing to share it with."""
    try:
        fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockBusy(
                f"another restore is running (it holds a lock on {state_dir}); nothing was restored",
                hint="wait for it to end, then run this one",
            ) from None
        yield
    finally:
        os.close(fd)


def _guarded(log: StepLog, work, state_dir: Path):
    """``work()``, alone; a failure gets its log line (the message names this log), and an
    unforeseen error becomes a failure with a traceback in the log, not a crash."""
    try:
        with _alone(state_dir):
            return work()
    except OpsError as exc:
        log.event("restore_failed", exc.message, level="error", exit_code=exc.code)
        raise
    except TargetError as exc:
        log.event("restore_failed", str(exc), level="error", exit_code=StepFailed.code)
        raise StepFailed(f"restore failed at the target: {exc}") from None
    except Exception as exc:
        log.event("traceback", traceback.format_exc(), level="error")
        raise StepFailed(f"restore failed: {type(exc).__name__}: {exc}") from exc


def restore(
    config: Config,
    run_id: str | None,
    ui: Console,
    policy: str | None = None,
    to: str | None = None,
    dest_name: str | None = None,
    from_other_host: bool = False,
) -> int:
    if not run_id:
        raise UsageError("which run? pass RUN=<id> (make status lists them)")
    log = StepLog(config.log_dir, "restore", run_id)
    ui.log_path = log.path

    def work() -> int:
        job = _Job(
            config, run_id, ui, log, Records(config, run_id), policy=policy, to=to, from_other_host=from_other_host
        )
        try:
            dest = _run(job, [dest_name] if dest_name else [d.name for d in config.destinations])
        finally:
            job.close()
        for name in job.policies:
            n, target = len(job.done[name]), job.targets[name]
            used = ", ".join(f"{d} ({k})" for d, k in job.counts[name].items()) or dest.name
            log.event(
                "policy_restored",
                f"{name}: {n} files to {target} from {used}",
                policy=name,
                files=n,
                target=str(target),
                destinations=dict(job.counts[name]),
                checked=dict(job.checked[name]),
            )
            ui.info(
                f"restore: {name}: {n} files restored to {target} from {used}, "
                f"{_checked_line(job, name) if n else 'nothing to check'}{job.grace_note()}"
            )
        return 0

    try:
        return _guarded(log, work, config.state_dir)
    finally:
        log.close()


def restore_file(
    config: Config,
    path: str,
    ui: Console,
    to: str | None = None,
    dest_name: str | None = None,
    from_other_host: bool = False,
) -> int:
    """One deleted file back from its newest verified copy, to its place or under TO/<policy>/."""
    wanted = os.path.normpath(os.path.abspath(path))
    entry = None
    for found in catalogue.find(config.state_dir, wanted, progress=indexing(ui), warn=ui.problem):
        if found["path"] == wanted:
            entry = found  # runs come oldest first: the last one is the newest copy
    if entry is None:
        raise StepFailed(
            f"no deleted file {wanted} is in the catalogue", hint="list what is there: make find FILE='<glob>'"
        )
    run_id, rel, policy = entry["run"], entry["rel"], entry["policy"]
    root, target = _place(entry, to)
    _check_root(config, entry, root, to, from_other_host)
    log = StepLog(config.log_dir, "restore", run_id)
    ui.log_path = log.path

    def work() -> int:
        records = Records(config, run_id)
        member = os.fsencode(rel)
        recorded = records.files.get(policy, {}).get(member)
        if records.backup is not None and recorded is None:
            raise StepFailed(
                f"{records.source} does not list {wanted}, which the catalogue does; nothing was restored",
                hint=f"inspect {config.state_dir}",
            )
        if recorded is not None and recorded != entry["sha256"]:
            raise StepFailed(
                f"the catalogue and {records.source} disagree on the SHA-256 of {wanted}; nothing was restored",
                hint=f"inspect {config.state_dir}",
            )
        job = _Job(
            config,
            run_id,
            ui,
            log,
            records,
            only=(policy, frozenset([member]), root, target),
            to=to,
            from_other_host=from_other_host,
        )
        configured = {d.name for d in config.destinations}
        names = [dest_name] if dest_name else [d.name for d in config.destinations if d.name in entry["destinations"]]
        if not names:
            raise StepFailed(
                f"none of the destinations that held {wanted} ({', '.join(entry['destinations'])}) "
                f"is in {config.path} any more; nothing was restored",
                hint=f"configure one again, or pass DEST=<name> of one of {', '.join(sorted(configured))}",
            )
        try:
            dest = _run(job, names)
        finally:
            job.close()
        if not job.done[policy]:
            raise StepFailed(f"run {run_id} on {dest.describe()} does not hold {rel!r} in its {policy} archive")
        source = next(iter(job.checked[policy]), None)
        if source is None:  # a restore killed after naming it got it back: kept, never written again
            ui.info(f"restore: {target / rel} is already back with its recorded content; kept")
            return 0
        log.event(
            "file_restored",
            f"{wanted} restored from run {run_id} on {dest.name} to {target / rel}",
            path=wanted,
            target=str(target / rel),
            destination=dest.name,
            checked_against=source,
        )
        ui.info(
            f"restore: {target / rel} restored from run {run_id} on {dest.name}, SHA-256 checked against "
            f"{source}{job.grace_note()}"
        )
        return 0

    try:
        return _guarded(log, work, config.state_dir)
    finally:
        log.close()


def restore_files(
    config: Config,
    pattern: str,
    ui: Console,
    to: str | None = None,
    dest_name: str | None = None,
    from_other_host: bool = False,
) -> int:
    """Every deleted file whose original path matches the glob ``pattern``, each from its
    newest verified copy: grouped by run and policy, so each archive is read once. A file
    already at its target with other content is a conflict; any conflict stops the restore
    before anything is written, as in a run restore."""
    newest: dict[str, dict] = {}
    for entry in catalogue.find(config.state_dir, pattern, progress=indexing(ui), warn=ui.problem):
        newest[entry["path"]] = entry  # runs come oldest first: the last one is the newest copy
    if not newest:
        raise StepFailed(
            f"no deleted file matching {pattern!r} is in the catalogue",
            hint="list what is there: make find FILE='<glob>'",
        )
    groups: dict[tuple[str, str], list[dict]] = {}
    for entry in newest.values():
        groups.setdefault((entry["run"], entry["policy"]), []).append(entry)
    places = {path: _place(entry, to) for path, entry in newest.items()}
    for path, entry in newest.items():
        _check_root(config, entry, places[path][0], to, from_other_host)
    goes_to: dict[Path, list[str]] = {}
    for path, entry in newest.items():
        goes_to.setdefault(places[path][1] / entry["rel"], []).append(path)
    shared = {t: ps for t, ps in goes_to.items() if len(ps) > 1}
    if shared:
        shown = "\n".join(f"  {t}: {', '.join(ps)}" for t, ps in list(shared.items())[:20])
        raise StepFailed(
            f"{len(shared)} place(s) at the restore target would receive more than one match; nothing was "
            f"restored:\n{shown}",
            hint="narrow the pattern, or restore each root on its own with TO=<dir>",
        )
    conflicts = [places[p][1] / e["rel"] for p, e in newest.items() if _in_the_way(places[p][1] / e["rel"], e)]
    if conflicts:
        shown = "\n".join(f"  {p}" for p in conflicts[:20])
        raise StepFailed(
            f"{len(conflicts)} file(s) already exist at the restore target; nothing was restored:\n{shown}",
            hint="restore to another place with TO=<dir>, or move those files aside",
        )
    log = StepLog(config.log_dir, "restore")
    ui.log_path = log.path

    def work() -> int:
        restored, size, kept = Counter(), 0, 0
        for (run_id, policy), entries in sorted(groups.items()):
            root, target = places[entries[0]["path"]]
            members = {os.fsencode(e["rel"]): e for e in entries}
            job = _Job(
                config,
                run_id,
                ui,
                log,
                Records(config, run_id),
                only=(policy, frozenset(members), root, target),
                to=to,
                from_other_host=from_other_host,
            )
            held = entries[0]["destinations"]
            names = [dest_name] if dest_name else [d.name for d in config.destinations if d.name in held]
            if not names:
                raise StepFailed(
                    f"none of the destinations that hold run {run_id} ({', '.join(held)}) is in {config.path} any "
                    f"more; {sum(restored.values())} file(s) were restored before it",
                    hint="configure one again, or pass DEST=<name>",
                )
            try:
                _run(job, names)
            finally:
                job.close()
            written = sum(job.checked[policy].values())  # the rest were back already, with their content
            if written:
                restored[run_id] += written
            kept += len(job.done[policy]) - written
            sizes = [members[m]["size"] for m in job.done[policy] if m in members]
            size = None if size is None or None in sizes else size + sum(sizes)
        runs = ", ".join(f"{r} ({n})" for r, n in sorted(restored.items())) or "none"
        total = sum(restored.values())
        said = f"{size} bytes" if size is not None else "sizes unknown: a rebuilt catalogue"
        also = f"; {kept} already back with their content, kept" if kept else ""
        log.event(
            "files_restored",
            f"{total} files matching {pattern} restored from runs {runs}{also}",
            files=total,
            bytes=size,
            kept=kept,
            runs=dict(restored),
        )
        ui.info(f"restore: {total} files ({said}) matching {pattern} restored from runs {runs}{also}")
        return 0

    try:
        return _guarded(log, work, config.state_dir)
    finally:
        log.close()


def _check_root(config: Config, entry: dict, root: Path, to: str | None, from_other_host: bool) -> None:
    """A file goes back into a root only if it is its policy's root in this config, as a run
    restore checks the run's roots: a catalogue rebuilt from a destination takes its roots
    from the destination's word, and an entry of a root since moved has no place here."""
    if to or from_other_host:
        return
    ours = {p.name: p.root for p in config.policies}.get(entry["policy"])
    if ours is None or not _same_dir(str(root), ours):
        raise StepFailed(
            f"{entry['path']} was deleted from {root}, which is not the root of policy {entry['policy']} in "
            f"{config.path} ({ours or 'no such policy'}); nothing was restored into this host's roots",
            hint=_OTHER_HOST_HINT,
        )


def _place(entry: dict, to: str | None) -> tuple[Path, Path]:
    """(the root a catalogued file was deleted from, the directory it is restored under)."""
    root = Path(entry["path"][: len(entry["path"]) - len(entry["rel"])])
    return root, Path(to) / entry["policy"] if to else root


def _in_the_way(path: Path, entry: dict) -> bool:
    """Whether something at ``path`` keeps the file from being restored there: anything but
    the very file, already back (a restore killed part-way put it there)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    if not stat.S_ISREG(st.st_mode) or st.st_size != (entry["size"] if entry["size"] is not None else st.st_size):
        return True
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest() != entry["sha256"]
