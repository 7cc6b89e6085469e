"""What the maintenance tests share: whole-tree snapshots, log reading, and tampering.

Tampering is done the way an attacker or a careless operator would: on the files on disk,
with ``ops.state.manifest.seal_document`` when a forgery must be internally consistent so that
only the check under test can catch it.
"""

import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path

from ops.state.manifest import STEPS, seal_document

RUN_A = "20260101T000000Z-aaaa"  # fixed ids: the "other run" of a swap, and the run under test
RUN_B = "20260101T000100Z-bbbb"


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree(base: Path, ignore: tuple[str, ...] = ("var/log", "var/state/lock")) -> dict[bytes, tuple]:
    """Every entry under ``base`` (bytes paths, so any name survives) with what identifies it.

    Files: type, mode, size, mtime_ns, inode, SHA-256. Symlinks: their target. Directories:
    mode and mtime_ns, so a file created and removed again inside one still shows.
    """
    base_b = os.fsencode(base)
    skip = {os.path.join(base_b, os.fsencode(p)) for p in ignore}
    out = {}
    for dirpath, dirs, files in os.walk(base_b):
        dirs[:] = [d for d in dirs if os.path.join(dirpath, d) not in skip]
        for name in dirs + files:
            full = os.path.join(dirpath, name)
            if full in skip:
                continue
            st = os.lstat(full)
            rel = os.path.relpath(full, base_b)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", st.st_mode, st.st_mtime_ns)
            elif not stat.S_ISREG(st.st_mode):  # a FIFO a test put there: reading it would block
                out[rel] = ("special", st.st_mode, st.st_ino)
            else:
                with open(full, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                out[rel] = ("file", st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino, digest)
    return out


def path_tree(base: Path, skip: tuple[str, ...] = ("var/log",)) -> dict[str, tuple]:
    """Every path under ``base`` (str keys, not following links) with what identifies it,
    minus ``skip``: files by mode, mtime, ctime, link count and SHA-256."""
    out = {}
    for dirpath, dirs, files in os.walk(base):
        for name in dirs + files:
            p = Path(dirpath) / name
            rel = str(p.relative_to(base))
            if any(rel == s or rel.startswith(s + "/") for s in skip):
                continue
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                out[rel] = ("file", st.st_mode, st.st_mtime_ns, st.st_ctime_ns, st.st_nlink, sha256(p))
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", st.st_mode, st.st_mtime_ns)
            else:
                out[rel] = ("other", st.st_mode)
    return out


def tree_diff(before: dict, after: dict) -> list[str]:
    """Readable differences between two ``tree`` snapshots (empty when identical)."""
    lines = []
    for rel in sorted(set(before) | set(after)):
        if before.get(rel) != after.get(rel):
            lines.append(f"{rel!r}: {before.get(rel)} -> {after.get(rel)}")
    return lines


def log_records(sandbox) -> list[dict]:
    """Every JSON line of every log file in the sandbox's log dir."""
    records = []
    if not sandbox.logs.exists():
        return records
    for path in sorted(sandbox.logs.iterdir()):
        for line in path.read_bytes().splitlines():
            records.append(json.loads(line))
    return records


def decisions(sandbox, run_id: str) -> list[dict]:
    """Clean's per-file log lines for one run."""
    return [
        r
        for r in log_records(sandbox)
        if r.get("step") == "clean" and r.get("run") == run_id and r["event"] in ("deleted", "kept", "gone")
    ]


def run_ok(sandbox, step: str, *args: str, env: dict | None = None):
    result = sandbox.run(step, *args, env=env)
    assert result.returncode == 0, f"{step} {args} exited {result.returncode}: {result.stderr}"
    return result


def chain_to(sandbox, last: str, run_id: str) -> None:
    """Run scan .. ``last`` (inclusive) on ``run_id``, each script alone, each must succeed."""
    for step in STEPS[: STEPS.index(last) + 1]:
        run_ok(sandbox, step, "--run", run_id)


def archive_members(archive: Path) -> list[bytes]:
    """Member names as GNU tar lists them (NUL-free raw bytes, one per line, unquoted)."""
    out = subprocess.run(["tar", "--quoting-style=literal", "-tf", str(archive)], capture_output=True, check=True)
    return out.stdout.splitlines()


def extract(archive: Path, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-xf", str(archive), "-C", str(into)], check=True, capture_output=True)


def sha256sum_check(sums: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["sha256sum", "--strict", "-c", str(sums)], cwd=cwd, capture_output=True)


# -- tampering ----------------------------------------------------------------------------


def change_one_byte(path: Path, marker: bytes) -> None:
    """Replace the first digit after ``marker`` by another digit: still valid JSON, one byte off."""
    data = bytearray(path.read_bytes())
    at = data.index(marker) + len(marker)
    while not chr(data[at]).isdigit():
        at += 1
    data[at] = ord(str((int(chr(data[at])) + 1) % 10))
    path.write_bytes(bytes(data))


def insert_space(path: Path) -> None:
    """One blank after the opening brace: the same JSON document, one more byte."""
    data = path.read_bytes()
    path.write_bytes(data[:1] + b" " + data[1:])


def truncate_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def reseal(path: Path, mutate) -> None:
    """Re-seal a manifest after ``mutate(body)``, exactly as the toolkit seals one."""
    doc = json.loads(path.read_bytes())
    doc.pop("seal")
    mutate(doc)
    path.write_bytes(seal_document(doc))


def rechain(run_dir: Path) -> None:
    """Recompute every entry-file hash and predecessor hash of the run, in step order, and
    re-seal: a forgery that only the path checks can still catch."""
    for i, step in enumerate(STEPS):
        manifest = run_dir / f"{step}.ok.json"
        if not manifest.exists():
            return

        def mutate(doc, i=i):
            for name in doc.get("files", {}):
                doc["files"][name] = sha256(run_dir / name)
            if i:
                doc["predecessor"]["sha256"] = sha256(run_dir / f"{STEPS[i - 1]}.ok.json")

        reseal(manifest, mutate)


def forge_entry(run_dir: Path, victim: Path, path_in_manifest: str | int) -> None:
    """Add ``victim`` (a real, old file outside the root) to the run's entries under a forged
    path, with its true stat and checksum in every entry file present, then re-chain."""
    st = os.lstat(victim)
    digest = sha256(victim)
    scan_entries = run_dir / "scan.logs.jsonl"
    entry = {
        "path": path_in_manifest,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "dev": st.st_dev,
        "ino": st.st_ino,
        "reason": "older than 30d",
    }
    scan_entries.write_bytes(scan_entries.read_bytes() + json.dumps(entry, separators=(",", ":")).encode() + b"\n")
    records = run_dir / "backup.logs.jsonl"
    if records.exists():
        record = {"path": path_in_manifest, "status": "archived", "sha256": digest, "size": st.st_size}
        records.write_bytes(records.read_bytes() + json.dumps(record, separators=(",", ":")).encode() + b"\n")
    rechain(run_dir)


def forge_line(run_dir: Path, raw: bytes) -> None:
    """Append one hand-made line to the scan's entry file, then re-chain."""
    scan_entries = run_dir / "scan.logs.jsonl"
    scan_entries.write_bytes(scan_entries.read_bytes() + raw + b"\n")
    rechain(run_dir)


def tamper_cases(target: str) -> list[tuple[str, callable]]:
    """(label, tamper(run_dir, other_run_dir, victim)) for the ways the chain before
    ``target`` can be broken. Every one must make ``target`` refuse (exit 2)."""
    t = STEPS.index(target)
    pred = f"{STEPS[t - 1]}.ok.json"
    cases = [
        (f"{pred} missing", lambda d, o, v: (d / pred).unlink()),
        (f"{pred} one byte changed", lambda d, o, v: change_one_byte(d / pred, b'"finished_at": "')),
        (f"{pred} one space added", lambda d, o, v: insert_space(d / pred)),
        (f"{pred} truncated", lambda d, o, v: truncate_half(d / pred)),
        (f"{pred} swapped in from another run", lambda d, o, v: (d / pred).write_bytes((o / pred).read_bytes())),
        ("scan.logs.jsonl one byte changed", lambda d, o, v: change_one_byte(d / "scan.logs.jsonl", b'"size":')),
        ("forged '..' path with hashes and seals recomputed", lambda d, o, v: forge_entry(d, v, "../victim.log")),
        ("forged absolute path with hashes and seals recomputed", lambda d, o, v: forge_entry(d, v, str(v))),
        ("forged entry whose path is a number, hashes and seals recomputed", lambda d, o, v: forge_entry(d, v, 5)),
        (
            "forged second 'path' key naming '..', hashes and seals recomputed",
            lambda d, o, v: forge_line(d, b'{"path":"a.log","path":"../victim.log","size":1}'),
        ),
        (
            "forged line with data after its JSON value, hashes and seals recomputed",
            lambda d, o, v: forge_line(d, b'{"path":"a.log","size":1} {"path":"../victim.log"}'),
        ),
        (
            "forged line nested too deep to parse, hashes and seals recomputed",
            lambda d, o, v: forge_line(d, b"[" * 100_000),
        ),
        # Not files the toolkit writes: a FIFO would hang the step's read, /dev/zero never end it.
        (f"{pred} replaced by a FIFO", lambda d, o, v: replace_with_fifo(d / pred)),
        ("scan.logs.jsonl replaced by a FIFO", lambda d, o, v: replace_with_fifo(d / "scan.logs.jsonl")),
        (
            "scan.logs.jsonl replaced by a symlink to /dev/zero",
            lambda d, o, v: replace_with_link(d / "scan.logs.jsonl", "/dev/zero"),
        ),
    ]
    if t >= 2:  # the whole chain back to scan is re-checked, not only the direct predecessor
        cases.append(
            ("scan.ok.json one byte changed", lambda d, o, v: change_one_byte(d / "scan.ok.json", b'"finished_at": "'))
        )
    if t >= 3:
        cases.append(
            (
                f"{pred} replaced by scan.ok.json of the same run",
                lambda d, o, v: (d / pred).write_bytes((d / "scan.ok.json").read_bytes()),
            )
        )
        cases.append(
            ("backup.logs.jsonl one byte changed", lambda d, o, v: change_one_byte(d / "backup.logs.jsonl", b'"size":'))
        )
    return cases


def replace_with_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def replace_with_link(path: Path, target: str) -> None:
    path.unlink()
    path.symlink_to(target)


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def restore_files(directory: Path, saved: dict[str, bytes]) -> None:
    """Put ``directory`` back to ``saved`` (only files that differ are rewritten)."""
    for p in directory.iterdir():
        if p.name not in saved or p.is_symlink() or not p.is_file():
            p.unlink()
    for name, data in saved.items():
        p = directory / name
        if not p.exists() or p.read_bytes() != data:
            p.write_bytes(data)


def check_refusals_then_idempotence(sandbox, subtests, target: str) -> None:
    """Prepare two runs up to ``target``'s predecessor. For each tamper case: break the chain
    of RUN_B, run ``target`` on it, expect exit 2 and no change anywhere, undo. Then the
    intact chain is accepted (so each refusal was the tampering), and a rerun after that
    success exits 0 and changes nothing, not even an mtime."""
    victim = sandbox.data / "victim.log"
    victim.write_bytes(b"outside every root; must survive\n")
    os.utime(victim, (1, 1_600_000_000))
    sandbox.file("a.log", "alpha\n")
    sandbox.file("sub/b.log", "bravo\n")
    sandbox.file("c.log", "charlie\n")
    pred = STEPS[STEPS.index(target) - 1]
    for run_id in (RUN_A, RUN_B):
        chain_to(sandbox, pred, run_id)
    run_dir, other = sandbox.run_dir(RUN_B), sandbox.run_dir(RUN_A)
    saved = files_of(run_dir)
    for label, tamper in tamper_cases(target):
        with subtests.test(msg=label):
            try:
                tamper(run_dir, other, victim)
                before = tree(sandbox.base)
                result = sandbox.run(target, "--run", RUN_B)
                assert result.returncode == 2, f"{target} exited {result.returncode}: {result.stderr}"
                assert f"qts-ops {target}:" in result.stderr
                assert tree_diff(before, tree(sandbox.base)) == []
                assert victim.read_bytes() == b"outside every root; must survive\n"
            finally:
                restore_files(run_dir, saved)
    with subtests.test(msg="intact chain accepted, then a rerun changes nothing"):
        run_ok(sandbox, target, "--run", RUN_B)
        before = tree(sandbox.base)
        result = sandbox.run(target, "--run", RUN_B)
        assert result.returncode == 0, result.stderr
        assert tree_diff(before, tree(sandbox.base)) == []
        assert victim.read_bytes() == b"outside every root; must survive\n"
