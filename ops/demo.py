"""demo: a sandbox of synthetic, aged QTS-like data, and the whole job run on it."""

import hashlib
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

DAY = 86400
CONFIG = """\
# The demo's own policy: ticks kept 90 days, journals 60, logs 30 (always the newest 3).
version: 1
state_dir: var/state
log_dir: var/log
backup:
  compression: zstd
  destinations:
    - {name: local, type: local, path: var/backups}
policies:
  - {name: ticks, root: qts/ticks, include: ["**/*.csv"], older_than: 90d, settle: 10m}
  - {name: journals, root: qts/journals, include: ["**/*.jsonl"], older_than: 60d}
  - {name: logs, root: qts/logs, include: ["**/*.log"], exclude: ["**/current.log"], older_than: 30d, keep_last: 3}
"""


def _write(path: Path, data: bytes, age_days: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    when = time.time() - age_days * DAY
    os.utime(path, (when, when))


def build(base: Path) -> dict[str, str]:
    """Synthetic trading data over the last 180 days; returns {path: sha256} of every file."""
    rng = random.Random(6_5)
    today = time.time()
    for age in range(0, 180, 3):
        day = time.strftime("%Y/%m/%d", time.gmtime(today - age * DAY))
        rows = "".join(f"{i},{100 + rng.random():.4f},{rng.randint(1, 500)}\n" for i in range(400))
        _write(base / "qts/ticks" / f"{day}.csv", ("seq,price,qty\n" + rows).encode(), age)
    for age in range(0, 120, 7):
        stamp = time.strftime("%Y-%m-%d", time.gmtime(today - age * DAY))
        lines = "".join(f'{{"order":{n},"side":"{rng.choice("BS")}","qty":{rng.randint(1, 9)}}}\n' for n in range(200))
        _write(base / "qts/journals" / f"orders-{stamp}.jsonl", lines.encode(), age)
    for age in range(0, 60, 5):
        _write(base / "qts/logs" / f"core-{age:03d}.log", f"core log, {age} days old\n".encode() * 50, age)
    _write(base / "qts/logs/current.log", b"the core is writing this one\n", 0)
    return {
        str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((base / "qts").rglob("*"))
        if p.is_file()
    }


def _step(title: str, *cmd: str, cwd: Path) -> int:
    print(f"\n== {title}\n$ {' '.join(cmd)}", flush=True)
    return subprocess.run([sys.executable, *cmd], cwd=cwd).returncode


def demo(repo: Path) -> int:
    base = repo / "demo"
    shutil.rmtree(base, ignore_errors=True)
    before = build(base)
    (base / "retention.yaml").write_text(CONFIG)
    scripts = repo / "scripts"
    cfg = ["--config", str(base / "retention.yaml")]
    print(f"demo sandbox: {base} ({len(before)} files of synthetic ticks, order journals and logs)")
    _step("what would happen (plan)", str(scripts / "plan.py"), *cfg, cwd=base)
    code = _step(
        "the whole job: scan, backup, verify, clean", str(scripts / "maintenance.py"), *cfg, "--verbose", cwd=base
    )
    if code:
        print(f"maintenance failed with exit {code}")
        return code
    gone = sorted(set(before) - {str(p.relative_to(base)) for p in (base / "qts").rglob("*") if p.is_file()})
    print(f"\n{len(gone)} expired files deleted after a verified backup; {len(before) - len(gone)} kept")
    run_id = sorted(os.listdir(base / "var/state/runs"))[-1]
    code = _step(
        "restore the ticks of that run into demo/restored",
        str(scripts / "restore.py"),
        *cfg,
        "--run",
        run_id,
        "--policy",
        "ticks",
        "--to",
        str(base / "restored"),
        "--verbose",
        cwd=base,
    )
    if code:
        return code
    sample = next(g for g in gone if g.startswith("qts/ticks/"))
    restored = base / "restored/ticks" / sample.removeprefix("qts/ticks/")
    same = hashlib.sha256(restored.read_bytes()).hexdigest() == before[sample]
    print(f"restored {restored.relative_to(base)}: {'byte-identical to the deleted original' if same else 'DIFFERS'}")
    _step("status", str(scripts / "status.py"), *cfg, cwd=base)
    return 0 if same else 1
