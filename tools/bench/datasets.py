"""The benchmark's pristine datasets: their sizes (``Scale``: FULL, or SMALL, 20x less),
the builders of LARGE (incompressible files), MANY (small trading-like CSV and log files)
and SCALE (empty files in many directories), each built once under bench/pristine/ and
reused while it matches its stamp (``ensure_dataset``), and the tree helpers the rows use
on them (count, copy, remove).

Nothing here imports ``ops``: the benchmark measures the toolkit from the outside."""

import json
import os
import random
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20
DAY_NS = 86400 * 10**9
# Bump when a generator changes what it writes: every stamped dataset is then rebuilt.
DATA_VERSION = 1


@dataclass(frozen=True)
class Scale:
    name: str               # full | small
    large_files: int        # LARGE: incompressible files of large_file_size
    large_file_size: int
    many_files: int         # MANY: 1-4 KiB compressible CSV/log files ...
    many_dirs: int          # ... spread evenly over this many directories
    scale_files: int        # SCALE: empty files, scale_files // scale_dirs per directory ...
    scale_dirs: int
    scale_point_dirs: int   # ... of which the first scale_point_dirs (under a/) are the small point
    catalogue_entries: int = 2_000_000  # CATALOGUE: catalogued deletions, in blocks of catalogue_block per run
    catalogue_block: int = 200_000


FULL = Scale("full", large_files=205, large_file_size=10 * MiB, many_files=200_000, many_dirs=2_000,
             scale_files=1_000_000, scale_dirs=1_000, scale_point_dirs=100,
             catalogue_entries=50_000_000, catalogue_block=200_000)
SMALL = Scale("small", large_files=10, large_file_size=10 * MiB, many_files=10_000, many_dirs=100,
              scale_files=50_000, scale_dirs=50, scale_point_dirs=5,
              catalogue_entries=2_000_000, catalogue_block=200_000)


def count_label(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


def _set_old(path, when_ns: int, dir_fd=None) -> None:
    os.utime(path, ns=(when_ns, when_ns), dir_fd=dir_fd, follow_symlinks=False)


def _build_large(root: Path, files: int, size: int, old_ns: int) -> None:
    dirs = set()
    for i in range(files):
        d = root / f"m{i // 30:02d}"
        if d not in dirs:
            d.mkdir(parents=True)
            dirs.add(d)
        path = d / f"ticks-{i:04d}.bin"
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        _set_old(path, old_ns - (i % 86400) * 10**9)
    for d in dirs:
        _set_old(d, old_ns)


_SYMBOLS = ("ESZ5", "NQZ5", "CLF6", "GCG6", "ZNH6", "6EZ5", "RTYZ5", "YMZ5")
_SIDES = ("BUY", "SELL")
_STATES = ("NEW", "ACKED", "PARTIAL", "FILLED", "CANCELLED")
_LOG_MSGS = ("order acked", "fill received", "heartbeat ok", "quote update", "risk check passed",
             "position updated", "reconnect scheduled", "book snapshot stored")


def _text(rng: random.Random, size: int, csv: bool, day: int) -> bytes:
    """size bytes of trading-like CSV or log lines: compressible the way real ones are."""
    out, total = [], 0
    if csv:
        out.append("ts,symbol,side,price,qty,order_id,status\n")
        total = len(out[0])
    t = rng.randrange(86400_000_000)
    while total < size:
        t += rng.randrange(1, 2_000_000)
        sec, us = divmod(t % 86400_000_000, 1_000_000)
        stamp = (f"2025-{1 + day % 12:02d}-{1 + day % 28:02d}"
                 f"T{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}.{us:06d}")
        r = rng.getrandbits(32)
        if csv:
            line = (f"{stamp},{_SYMBOLS[r & 7]},{_SIDES[r >> 3 & 1]},{4000 + (r >> 4 & 4095) / 4:.2f},"
                    f"{1 + (r >> 16 & 15)},ord-{r >> 8 & 0xFFFFF:06x},{_STATES[r % 5]}\n")
        else:
            line = (f"{stamp}Z INFO  gateway  {_LOG_MSGS[r & 7]} sym={_SYMBOLS[r >> 3 & 7]} "
                    f"ord=ord-{r >> 8 & 0xFFFFF:06x} latency_us={r >> 20 & 4095}\n")
        out.append(line)
        total += len(line)
    return "".join(out).encode()[:size]


def _build_many_dirs(root: str, first: int, last: int, per_dir: int, old_ns: int) -> int:
    total = 0
    for d in range(first, last):
        rng = random.Random(d)
        path = os.path.join(root, f"d{d:04d}")
        os.mkdir(path)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for j in range(per_dir):
                csv = j % 2 == 0
                name = f"orders-{j:03d}.csv" if csv else f"runtime-{j:03d}.log"
                data = _text(rng, rng.randint(1024, 4096), csv, d)
                f = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=fd)
                os.write(f, data)
                os.utime(f, ns=(old_ns - j * 10**9,) * 2)
                os.close(f)
                total += len(data)
        finally:
            os.close(fd)
        _set_old(path, old_ns)
    return total


def _build_empty_dirs(root: str, names: list[str], per_dir: int, old_ns: int) -> None:
    for name in names:
        path = os.path.join(root, name)
        os.makedirs(path)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for j in range(per_dir):
                f = os.open(f"e{j:04d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=fd)
                os.utime(f, ns=(old_ns, old_ns))
                os.close(f)
        finally:
            os.close(fd)
        _set_old(path, old_ns)


def _split(n: int, parts: int) -> list[tuple[int, int]]:
    step = -(-n // parts)
    return [(i, min(i + step, n)) for i in range(0, n, step)]


def _build_many(root: Path, files: int, dirs: int, old_ns: int) -> None:
    root.mkdir(parents=True)
    per_dir = files // dirs
    with ProcessPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
        list(pool.map(_build_many_dirs, *zip(*[(str(root), a, b, per_dir, old_ns) for a, b in _split(dirs, 16)])))


def _build_scale(root: Path, files: int, dirs: int, point_dirs: int, old_ns: int) -> None:
    names = [f"a/d{d:04d}" if d < point_dirs else f"b/d{d:04d}" for d in range(dirs)]
    root.mkdir(parents=True)
    chunks = [names[a:b] for a, b in _split(len(names), 16)]
    with ProcessPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
        list(pool.map(_build_empty_dirs, [str(root)] * len(chunks), chunks, [files // dirs] * len(chunks),
                      [old_ns] * len(chunks)))
    for sub in ("a", "b"):
        if (root / sub).exists():
            _set_old(root / sub, old_ns)


def dataset_spec(name: str, scale: Scale) -> dict:
    if name == "large":
        return {"files": scale.large_files, "file_size": scale.large_file_size}
    if name == "many":
        return {"files": scale.many_files, "dirs": scale.many_dirs, "sizes": "1-4KiB"}
    if name == "scale":
        return {"files": scale.scale_files, "dirs": scale.scale_dirs, "point_dirs": scale.scale_point_dirs}
    raise ValueError(name)


def ensure_dataset(base: Path, name: str, scale: Scale, say) -> dict:
    """base/<name>, built once and reused while its stamp matches it; returns the stamp.

    The tree is counted again before each reuse (about 0.5 s for 200,000 files, untimed):
    a pristine tree that lost files or bytes since it was stamped (a run pointed at it by
    mistake) would otherwise time rows on less data than the table says."""
    root, stamp_path = base / name, base / f"{name}.stamp.json"
    want = {"version": DATA_VERSION, "dataset": name, **dataset_spec(name, scale)}
    try:
        have = json.loads(stamp_path.read_text())
        if root.is_dir() and all(have.get(k) == v for k, v in want.items()):
            if tree_totals(root) == (have.get("file_count"), have.get("bytes")):
                return have
            say(f"dataset {name} under {root} no longer matches its stamp; rebuilding it")
    except (OSError, ValueError):
        pass
    say(f"building dataset {name} ({scale.name}) under {root} ...")
    started = time.monotonic()
    stamp_path.unlink(missing_ok=True)
    rmtree(root)
    rmtree(root.with_name(name + ".tmp"))
    tmp = root.with_name(name + ".tmp")
    old_ns = time.time_ns() - 400 * DAY_NS  # expired under any older_than up to a year
    if name == "large":
        _build_large(tmp, scale.large_files, scale.large_file_size, old_ns)
    elif name == "many":
        _build_many(tmp, scale.many_files, scale.many_dirs, old_ns)
    else:
        _build_scale(tmp, scale.scale_files, scale.scale_dirs, scale.scale_point_dirs, old_ns)
    files, size = tree_totals(tmp)
    tmp.rename(root)
    stamp = {**want, "file_count": files, "bytes": size, "mtime_ns": old_ns,
             "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "build_seconds": round(time.monotonic() - started, 1)}
    stamp_path.write_text(json.dumps(stamp, indent=1) + "\n")
    os.sync()
    say(f"built {name}: {files} files, {size / MiB:.0f} MiB in {stamp['build_seconds']} s")
    return stamp


def tree_totals(root: Path) -> tuple[int, int]:
    """(regular files, bytes) under root, symlinks not followed."""
    files = size = 0
    stack = [str(root)]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except FileNotFoundError:
            continue
        with it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif e.is_file(follow_symlinks=False):
                    files += 1
                    size += e.stat(follow_symlinks=False).st_size
    return files, size


def copy_tree(src: Path, dst: Path, jobs: int = os.cpu_count() or 1) -> None:
    """cp -a src dst, with the top-level entries split over ``jobs`` parallel cp processes:
    creating files is kernel CPU time here, so two cores copy 200,000 small files in half the time."""
    names = sorted(os.listdir(src))
    if jobs < 2 or len(names) < 2 * jobs:
        subprocess.run(["cp", "-a", "--", str(src), str(dst)], check=True)
        return
    st = os.stat(src)
    os.mkdir(dst, st.st_mode & 0o7777)
    procs = [subprocess.Popen(["cp", "-a", "-t", str(dst), "--", *(str(src / n) for n in names[i::jobs])])
             for i in range(jobs)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise subprocess.CalledProcessError(max(codes), "cp -a")
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def rmtree(path: Path) -> None:
    """rm -rf, in C: shutil.rmtree is several times slower on 200,000 files."""
    if os.path.lexists(path):
        subprocess.run(["rm", "-rf", "--", str(path)], check=True)


def catalogue_path(run: int, i: int) -> str:
    """The original path of line ``i`` of synthetic run ``run``: 1,000 directories per run."""
    return f"/data/qts/ticks/{run:04d}/{i * 7 % 1000:03d}/t{i}.csv"


def build_catalogue(directory: Path, entries: int, per_run: int) -> int:
    """Synthetic catalogue blocks as clean writes them, ``per_run`` lines per run; the runs."""
    directory.mkdir(parents=True, exist_ok=True)
    runs = max(1, entries // per_run)
    for run in range(runs):
        run_id = f"2025{run // 28 % 12 + 1:02d}{run % 28 + 1:02d}T0{run % 10}0000Z-{run:04x}"
        with open(directory / f"{run_id}.jsonl", "w") as f:
            f.writelines(
                f'{{"path": "{catalogue_path(run, i)}", "policy": "ticks", "rel": "{catalogue_path(run, i)[21:]}", '
                f'"run": "{run_id}", "destinations": ["local"], "archive": "ticks.tar.zst", '
                f'"sha256": "{i:064x}", "size": {i % 4096}, "mtime_ns": {1_700_000_000_000_000_000 + i}, '
                f'"deleted_at": "2025-01-01T00:00:00Z"}}\n'
                for i in range(per_run)
            )
    return runs


def index_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("index.sqlite3*"))
