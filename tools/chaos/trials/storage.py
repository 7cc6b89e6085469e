"""Trials where storage fails: a destination or the state dir on a real tmpfs too small for
it, and EIO on read, EIO on fsync and short writes from the fault-injecting destination
(tools/chaos/inject/faultdest.py)."""

import os
import re
import subprocess
import time
from pathlib import Path

from tools.chaos.dataset import configure, dataset
from tools.chaos.inject import faultdest
from tools.chaos.oracle import after_fault, data_ids, destinations, read_json, recover_and_judge
from tools.chaos.outcome import TrialAbort
from tools.chaos.runner import fork_chain, fork_run


def _mount_tmpfs(where: Path, size: str) -> str | None:
    where.mkdir(parents=True, exist_ok=True)
    got = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)], capture_output=True, text=True
    )
    return None if got.returncode == 0 else (got.stderr.strip() or f"mount exited {got.returncode}")


def _umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def trial_disk_full(rng, sb, scratch, out, target: str):
    out.mechanism = "real tmpfs (mount -t tmpfs)"
    mnt = sb.base / "small" if target == "dest" else sb.state
    # Sizes around what a run needs, so space runs out at different steps and files.
    size = rng.choice(
        ["8k", "16k", "32k", "64k", "128k"]
        if target == "dest"
        else ["16k", "20k", "24k", "28k", "32k", "40k", "48k", "64k"]
    )
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
            hit = re.search(r"/\.([^/'\s]+?)\.tmp-", got.out[len(where) :].split("\n[")[0])
            in_step = re.findall(r"^\[(\w+)\]$", where, re.M)[-1]
            if refused:  # clean's refusal quotes why backup dropped the full destination
                out.notes.append("out of space in backup: destination dropped, clean refused for want of copies")
            else:
                out.notes.append(f"out of space in {in_step}" + (f" writing {hit.group(1)}" if hit else ""))
        if step is not None and not full:
            out.bad(f"{step} failed, but not for lack of space: {got.out[-400:]}")
        if full and got.code not in (0, 1) and not refused:
            out.bad(f"{step} ran out of space and exited {got.code}: {got.out[-300:]}")
        after_fault(sb, ds, out, f"disk full in {target}")
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
    return {faultdest.ENV: spec, "PYTHONPATH": str(faultdest.INJECT)}


def _run_files(ddir: Path, run_id: str) -> list[tuple[str, int]]:
    rdir = ddir / run_id
    return [(n, (rdir / n).stat().st_size) for n in sorted(os.listdir(rdir))]


def trial_io_read(rng, sb, scratch, out):
    out.mechanism = faultdest.MECHANISM
    configure(sb, rng)
    ds = dataset(sb, rng, 6, 40)
    run_id = f"20260101T000000Z-{rng.randrange(1 << 16):04x}"
    for step in ("scan", "backup"):
        got = fork_run(sb, step, "--run", run_id)
        if got.code:
            out.bad(f"{step} without faults exited {got.code}: {got.out[-300:]}")
            raise TrialAbort
    backup = read_json(sb.state / "runs" / run_id / "backup.ok.json")
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
    run_id = f"20260101T000000Z-{rng.randrange(1 << 16):04x}"
    got = fork_run(sb, "scan", "--run", run_id)
    scan = read_json(sb.state / "runs" / run_id / "scan.ok.json")
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
        ok = read_json(sb.state / "runs" / run_id / "backup.ok.json")
        if (dests[dname] / run_id).exists():
            out.bad(
                f"fsync #{n} of publishing on {dname} failed, yet the run stays published there "
                f"(a rerun would adopt it as durable)"
            )
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
        scan = read_json(sb.state / "runs" / run_id / "scan.ok.json")
        if got.code or not scan:
            out.bad(f"scan without faults exited {got.code}: {got.out[-300:]}")
            raise TrialAbort
        chunk = rng.choice([1, 7, 512, 4096, 65537])
        spec = (
            f"short-write;dest={dname};chunk={chunk}"
            if rng.random() < 0.6
            else f"write-eio;dest={dname};chunk={chunk};after={rng.randint(0, 3000)}"
        )
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
        after_fault(sb, ds, out, spec)
    recover_and_judge(sb, ds, scratch, out)
