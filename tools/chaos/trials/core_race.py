"""The trial where the trading core races the chain: a separate writer process appends,
rewrites, replaces, renames and swaps in symlinks pointing outside the root while
maintenance runs, then reports what it left where for the oracle."""

import json
import os
import random
import sys
import time
import traceback
from pathlib import Path

from tools.chaos.dataset import FileSpec, configure, dataset
from tools.chaos.files import read_tree
from tools.chaos.oracle import judge, settle
from tools.chaos.outcome import TrialAbort
from tools.chaos.runner import real_run


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
                    if os.path.lexists(os.path.join(there, r[len(d) + 1 :])):
                        moved[name + b"/" + r[len(d) + 1 :]] = final.pop(r)
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
        json.dump(
            {
                "final": enc(final),
                "moved": enc(moved),
                "vanished": enc(vanished),
                "links": [x.hex() for x in links],
                "errors": errors,
                "ops": i,
            },
            f,
        )


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
