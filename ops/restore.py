"""restore: extract a run's archive from a destination, as untrusted input.

Nothing on the destination is believed: MANIFEST.json, SHA256SUMS, the ``.sha256`` files and
the archives are checked against each other as they stream, and every member must be a
regular file with a safe relative name, whatever the checksums say. Files are written
beneath the target through directory descriptors (no symlink followed), to a temporary
name, checked, fsynced, and then linked into place, which fails rather than replace an
existing file. A conflict found before extraction stops the restore with nothing written.
"""

import errno
import json
import os
from itertools import zip_longest
from pathlib import Path

from ops import catalogue
from ops.archive import EXTENSIONS, ArchiveError, ArchiveReader
from ops.atomic import temp_name
from ops.checksums import parse_lines
from ops.config import NAME_RE, Config
from ops.console import Console
from ops.destinations import Destination, DestinationError, open_destination
from ops.errors import StepFailed, UsageError
from ops.hashio import HashingReader, sha256_bytes
from ops.logs import StepLog
from ops.paths import NOFOLLOW_DIR, open_dir_nofollow, unsafe_reason


class Untrusted(Exception):
    pass


def _pick_destination(config: Config, run_id: str, names: list[str]) -> Destination:
    for name in names:
        dest = open_destination(config.destination(name))
        if dest.has_run(run_id):
            return dest
    raise StepFailed(f"run {run_id} is on no destination ({', '.join(names)})",
                     hint="make status lists the runs each destination holds")


def _load_index(dest: Destination, run_id: str) -> tuple[dict, dict[str, str]]:
    sums_raw = dest.read_bytes(run_id, "SHA256SUMS")
    listed = {}
    for sha, name in parse_lines(sums_raw.splitlines(keepends=True)):
        listed[name.decode("utf-8", "surrogateescape")] = sha
    manifest_raw = dest.read_bytes(run_id, "MANIFEST.json")
    if listed.get("MANIFEST.json") != sha256_bytes(manifest_raw):
        raise Untrusted("MANIFEST.json does not match SHA256SUMS")
    manifest = json.loads(manifest_raw)
    if manifest.get("run_id") != run_id or manifest.get("compression") not in EXTENSIONS:
        raise Untrusted("MANIFEST.json does not describe this run")
    for name, p in manifest.get("policies", {}).items():
        compression = p.setdefault("compression", manifest["compression"])
        if not NAME_RE.match(name) or compression not in EXTENSIONS or p.get("archive") != name + EXTENSIONS[compression] \
                or p.get("sums") != f"{name}.sha256":
            raise Untrusted(f"MANIFEST.json names an unexpected file for policy {name!r}")
        for key in ("archive", "sums"):
            if p[key] not in listed:
                raise Untrusted(f"SHA256SUMS does not list {p[key]}")
    return manifest, listed


def _checked_sums(dest: Destination, run_id: str, sums_name: str, expected_sha: str):
    """Every (sha, name) of a .sha256 file, after proving the file matches SHA256SUMS."""
    with dest.open_read(run_id, sums_name) as raw:
        reader = HashingReader(raw)
        for sha, name in parse_lines(reader):
            reason = unsafe_reason(name)
            if reason:
                raise Untrusted(f"{sums_name}: refusing member {name!r}: {reason}")
        if reader.sha256 != expected_sha:
            raise Untrusted(f"{sums_name} does not match SHA256SUMS")
    with dest.open_read(run_id, sums_name) as raw:
        yield from parse_lines(raw)


def _parent_fd(target_fd: int, name: bytes, create: bool) -> tuple[int, bytes]:
    """Descriptor of ``name``'s parent beneath the target (created 0700 when asked)."""
    parts = name.split(b"/")
    fd = os.dup(target_fd)
    try:
        for part in parts[:-1]:
            try:
                nxt = os.open(part, NOFOLLOW_DIR, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o700, dir_fd=fd)
                nxt = os.open(part, NOFOLLOW_DIR, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd, parts[-1]


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


def _extract_member(reader: ArchiveReader, member, target_fd: int, expected_sha: str) -> None:
    fd, leaf = _parent_fd(target_fd, member.name, create=True)
    tmp = temp_name(os.fsdecode(leaf)).encode("utf-8", "surrogateescape")
    try:
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd)
        try:
            with os.fdopen(out, "wb", closefd=False) as f:
                for chunk in reader.chunks(member):
                    f.write(chunk)
            if member.sha256 != expected_sha:
                raise Untrusted(f"{os.fsdecode(member.name)!r} does not match its SHA-256")
            os.fchmod(out, member.mode & 0o777)
            os.fsync(out)
            os.utime(out, (member.mtime, member.mtime))
        finally:
            os.close(out)
        # link() refuses an existing name: the only way in, so nothing is ever overwritten.
        os.link(tmp, leaf, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
        os.fsync(fd)
    finally:
        try:
            os.unlink(tmp, dir_fd=fd)
        except FileNotFoundError:
            pass
        os.close(fd)


def _open_target(target: Path, create: bool = False) -> int | None:
    """A descriptor of the restore target (made first if ``create``), or None if it is
    missing. Never a symlink in its place: scan refuses such a root, so restore does not
    write through one either."""
    if create:
        target.mkdir(parents=True, exist_ok=True)
    try:
        return open_dir_nofollow(target)
    except FileNotFoundError:
        return None
    except NotADirectoryError as exc:
        raise Untrusted(f"the restore target {target} {exc.strerror}") from None


def _conflicts(dest, run_id, info, listed, target: Path) -> list[Path]:
    """The files of one policy's archive that already exist beneath ``target``."""
    target_fd = _open_target(target)  # None: nothing can exist there yet; the .sha256 file is still checked
    try:
        return [target / os.fsdecode(name) for _, name in _checked_sums(dest, run_id, info["sums"], listed[info["sums"]])
                if target_fd is not None and _exists(target_fd, name)]
    finally:
        if target_fd is not None:
            os.close(target_fd)


def _restore_policy(dest, run_id, manifest, listed, policy, target: Path, log, ui, only: bytes | None = None) -> int:
    """Extract one policy's archive beneath ``target`` (or just the member named ``only``)."""
    info = manifest["policies"][policy]
    target_fd = _open_target(target, create=True)
    try:
        count = 0
        with dest.open_read(run_id, info["archive"]) as raw, ArchiveReader(raw, info["compression"]) as reader:
            sums = _checked_sums(dest, run_id, info["sums"], listed[info["sums"]])
            for member, line in zip_longest(reader.members(), sums):
                if member is None or line is None:
                    raise Untrusted(f"{info['archive']} and {info['sums']} list different members")
                reason = unsafe_reason(member.name) or (None if member.is_regular else f"member type {member.typeflag!r}")
                if reason or member.name != line[1]:
                    raise Untrusted(f"{info['archive']}: refusing member {member.name!r}: {reason or 'not in ' + info['sums']}")
                if only is not None and member.name != only:
                    continue
                _extract_member(reader, member, target_fd, line[0])
                count += 1
                log.event("restored", f"{policy}: {os.fsdecode(member.name)}", policy=policy, path=os.fsdecode(member.name))
            if reader.finish()[0] != listed[info["archive"]]:
                raise Untrusted(f"{info['archive']} does not match SHA256SUMS")
        return count
    finally:
        os.close(target_fd)


def restore(config: Config, run_id: str | None, ui: Console, policy: str | None = None,
            to: str | None = None, dest_name: str | None = None) -> int:
    if not run_id:
        raise UsageError("which run? pass RUN=<id> (make status lists them)")
    log = StepLog(config.log_dir, "restore", run_id)
    ui.log_path = log.path
    try:
        dest = _pick_destination(config, run_id, [dest_name] if dest_name else [d.name for d in config.destinations])
        manifest, listed = _load_index(dest, run_id)
        policies = [policy] if policy else sorted(manifest["policies"])
        targets = {}
        for name in policies:
            if name not in manifest["policies"]:
                raise StepFailed(f"run {run_id} on {dest.describe()} has no archive for policy {name!r}")
            # Without TO=, a file goes back to its own policy root from the config (never a
            # path taken from the untrusted manifest); with TO=, under TO/<policy>/.
            if not to and name not in {p.name for p in config.policies}:
                raise StepFailed(f"policy {name!r} of run {run_id} is not in {config.path}, so it has no root to go back to",
                                 hint="restore it elsewhere with TO=<dir>")
            targets[name] = Path(to) / name if to else config.policy(name).root
        # Every policy's conflicts before any extraction: one conflict anywhere writes nothing.
        conflicts = [p for name, target in targets.items()
                     for p in _conflicts(dest, run_id, manifest["policies"][name], listed, target)]
        if conflicts:
            shown = "\n".join(f"  {p}" for p in conflicts[:20])
            raise StepFailed(f"{len(conflicts)} file(s) already exist at the restore target; nothing was restored:\n{shown}",
                             hint="restore to another place with TO=<dir>, or move those files aside")
        for name, target in targets.items():
            n = _restore_policy(dest, run_id, manifest, listed, name, target, log, ui)
            log.event("policy_restored", f"{name}: {n} files to {target}", policy=name, files=n, target=str(target))
            ui.info(f"restore: {name}: {n} files restored to {target}, each checked against its SHA-256")
        return 0
    except (Untrusted, ArchiveError, ValueError) as exc:
        raise StepFailed(f"refusing to restore run {run_id}: {exc}") from None
    except (DestinationError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.EEXIST:
            raise StepFailed(f"a file appeared at the restore target while restoring: {exc}; it was not overwritten") from None
        raise StepFailed(f"restore of run {run_id} failed: {exc}") from None
    finally:
        log.close()


def restore_file(config: Config, path: str, ui: Console, to: str | None = None, dest_name: str | None = None) -> int:
    """One deleted file back from its newest verified copy, to its place or under TO/<policy>/."""
    wanted = os.path.normpath(os.path.abspath(path))
    entry = None
    for found in catalogue.find(config.state_dir, wanted):
        if found["path"] == wanted:
            entry = found  # runs come oldest first: the last one is the newest copy
    if entry is None:
        raise StepFailed(f"no deleted file {wanted} is in the catalogue", hint="list what is there: make find FILE='<glob>'")
    run_id, rel = entry["run"], entry["rel"]
    root = Path(entry["path"][: len(entry["path"]) - len(rel)])
    target = Path(to) / entry["policy"] if to else root
    log = StepLog(config.log_dir, "restore", run_id)
    ui.log_path = log.path
    try:
        names = [dest_name] if dest_name else [n for n in entry["destinations"] if n in {d.name for d in config.destinations}]
        dest = _pick_destination(config, run_id, names)
        manifest, listed = _load_index(dest, run_id)
        info = manifest["policies"].get(entry["policy"])
        if info is None:
            raise Untrusted(f"run {run_id} on {dest.describe()} has no archive for policy {entry['policy']!r}")
        if _exists_under(target, os.fsencode(rel)):
            raise StepFailed(f"{target / rel} already exists; nothing was restored",
                             hint="restore it elsewhere with TO=<dir>, or move the file aside")
        if _restore_policy(dest, run_id, manifest, listed, entry["policy"], target, log, ui, only=os.fsencode(rel)) != 1:
            raise Untrusted(f"{info['archive']} does not hold {rel!r}")
        log.event("file_restored", f"{wanted} restored from run {run_id} on {dest.name} to {target / rel}",
                  path=wanted, target=str(target / rel), destination=dest.name)
        ui.info(f"restore: {target / rel} restored from run {run_id} on {dest.name}, SHA-256 checked")
        return 0
    except (Untrusted, ArchiveError, ValueError) as exc:
        raise StepFailed(f"refusing to restore {wanted}: {exc}") from None
    except (DestinationError, OSError) as exc:
        raise StepFailed(f"restore of {wanted} failed: {exc}") from None
    finally:
        log.close()


def _exists_under(target: Path, name: bytes) -> bool:
    target_fd = _open_target(target)
    if target_fd is None:
        return False
    try:
        return _exists(target_fd, name)
    finally:
        os.close(target_fd)
