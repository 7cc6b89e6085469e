"""The judge of a trial, with standard tools only (GNU tar, sha256sum): no file lost (each
is still there unchanged, or byte-identical in an archive verify vouched for), nothing
deleted twice, exactly the expected archives on every destination, no staging left
behind, the lock free; then settling, which counts the expired files wrongly kept. Also the
cheap check made right after each fault (``after_fault``)."""

import json
import os
import subprocess
from pathlib import Path

from ops.state.manifest import RUN_ID_RE
from tools.chaos.dataset import Dataset
from tools.chaos.files import Tree, read_tree, remove_tree, sha
from tools.chaos.outcome import Outcome
from tools.chaos.runner import real_run
from tools.sandbox import Sandbox, lock_is_free, log_events, published_runs

ARCHIVE_EXTS = (".tar.zst", ".tar.gz", ".tar")


def read_json(path: Path):
    """The JSON document at ``path``, or None where it is missing or damaged (on purpose, by a trial)."""
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
        verify = read_json(sb.state / "runs" / run_id / "verify.ok.json") or {}
        names = verify.get("verified") if isinstance(verify, dict) else None
        got |= {(d, run_id) for d in names or [] if isinstance(d, str)}
    return got


def archived(
    sb: Sandbox, scratch: Path, out: Outcome, cache: dict | None = None, vouched: set | None = None
) -> dict[bytes, set[str]]:
    """key -> SHA-256s of that file in every archive verify vouched for, as GNU tar
    extracts it and sha256sum -c accepts it. ``cache`` keeps what one run directory
    yielded, keyed by its files' identities, so an unchanged run is not extracted again.
    ``vouched``: (destination, run) pairs known verified before a trial damaged their
    verify.ok.json (damage after the fact does not undo a verification)."""
    got: dict[bytes, set[str]] = {}
    vouched = vouched_runs(sb) | (vouched or set())
    roots = policy_roots(sb)
    for dname, ddir in destinations(sb).items():
        for run_id in published_runs(ddir):
            if not RUN_ID_RE.match(run_id):
                continue
            if (dname, run_id) not in vouched:
                continue
            rdir = ddir / run_id
            ident = (
                dname,
                run_id,
                tuple(
                    (e.name, e.stat().st_size, e.stat().st_mtime_ns, e.stat().st_ino)
                    for e in sorted(os.scandir(rdir), key=lambda e: e.name)
                ),
            )
            if cache is not None and ident in cache:
                for key, shas in cache[ident].items():
                    got.setdefault(key, set()).update(shas)
                continue
            mine: dict[bytes, set[str]] = {}
            sums = subprocess.run(
                ["sha256sum", "--quiet", "--strict", "-c", "SHA256SUMS"], cwd=rdir, capture_output=True, text=True
            )
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
                    out.notes.append(
                        "a run archived no member of a policy: its empty .sha256 makes the "
                        "contract's `sha256sum -c` check exit 1"
                    )
                    if read_tree(into).files:
                        out.bad(f"{dname}/{run_id}/{archive.name}: members, but an empty {sums_file.name}")
                    remove_tree(into)
                    continue
                c = subprocess.run(
                    ["sha256sum", "--quiet", "--strict", "-c", str(sums_file)], cwd=into, capture_output=True, text=True
                )
                if c.returncode:
                    out.bad(
                        f"{dname}/{run_id}/{policy}.sha256: sha256sum -c fails on GNU tar's extraction: "
                        f"{(c.stdout + c.stderr)[:300]}"
                    )
                    continue
                for rel, data in read_tree(into).files.items():
                    mine.setdefault(roots.get(policy, policy).encode() + b"/" + rel, set()).add(sha(data))
                remove_tree(into)
            for key, shas in mine.items():
                got.setdefault(key, set()).update(shas)
            if cache is not None:
                cache[ident] = mine
    return got


def judge(
    sb: Sandbox,
    ds: Dataset,
    scratch: Path,
    out: Outcome,
    changed_ok: set[bytes] = frozenset(),
    cache: dict | None = None,
    vouched: set | None = None,
) -> Tree:
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
    if not lock_is_free(sb.state):
        out.bad("the lock is still held after every process ended")
    return now


def _entries(sb: Sandbox, run_id: str, policy: str) -> dict[str, tuple]:
    scan = read_json(sb.state / "runs" / run_id / "scan.ok.json") or {}
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
        events = log_events(sb)
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
        backup = read_json(sb.state / "runs" / run_id / "backup.ok.json")
        try:
            want = {"MANIFEST.json", "SHA256SUMS"} | {
                n for p in backup["policies"].values() for n in (p["archive"], p["sums"])
            }
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


def settle(sb: Sandbox, ds: Dataset, out: Outcome, passes: int = 2, run=None) -> None:
    """Count files wrongly kept forever: expired files still present after recovery get
    up to ``passes`` more clean maintenance runs (``run()``: scripts/maintenance.py as cron
    runs it, unless a campaign runs it its own way)."""
    for attempt in range(passes + 1):
        now = read_tree(sb.data, content=False)
        left = sorted(k for k in ds.expected_gone() if k in now.ids)
        if not left or attempt == passes:
            break
        again = run() if run is not None else real_run(sb)
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


def after_fault(sb: Sandbox, ds: Dataset, out: Outcome, what: str) -> None:
    """Cheap invariant right after a fault: the lock is free and every file missing from
    the data was recorded as archived and verified by its run (GNU tar checks come later)."""
    # Within a second, not at once: a helper the killed step forked last may not have been
    # scheduled yet, and holds the lock's descriptor until its first act closes it (seen
    # once in 259 trials on two busy cores). A lock held by anything that lives on still fails.
    if not lock_is_free(sb.state, within=1.0):
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
