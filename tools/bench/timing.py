"""How the benchmark measures: a child process timed to completion (wall time, peak RSS and
CPU of its whole tree, ``timed`` and ``shell``), the CPU the rest of the machine used
meanwhile (the noise a trial reports), and the facts about the machine the results record."""

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Phase:
    """One timed child process (and everything it started), reaped with wait4."""
    name: str
    wall_s: float
    peak_rss_kib: int
    cpu_s: float
    exit_code: int
    counted: bool = True      # part of the row's total (False: shown for information only)
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def timed(name: str, cmd: list[str], log: Path, env: dict | None = None, cwd: Path | None = None,
          counted: bool = True) -> Phase:
    """Run cmd to completion: wall time, peak RSS (the maximum over the child and every
    descendant it reaped) and CPU seconds of the whole tree.

    The child is started through GNU time, whose own few MiB are the floor of the figure:
    a child forked straight from this Python process would inherit this process's peak RSS
    (Linux keeps the pre-exec high-water mark), so every row would read at least ours.
    Without /usr/bin/time, wait4's figures are used and may be that floor.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    usage_file = log.with_name(log.name + ".time")
    argv = [str(c) for c in cmd]
    if GNU_TIME:
        argv = [GNU_TIME, "-q", "-f", "%M %U %S", "-o", str(usage_file), "--", *argv]
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(map(str, cmd))}\n".encode())
        out.flush()
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - started
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        rss, cpu = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
        if GNU_TIME:
            try:
                kib, user, system = usage_file.read_text().split()[-3:]
                rss, cpu = int(kib), float(user) + float(system)  # a child killed by signal N exits 128+N here
            except (OSError, ValueError):
                pass
            usage_file.unlink(missing_ok=True)
        out.write(f"# exit {code}, {wall:.3f} s, peak RSS {rss} KiB\n".encode())
    return Phase(name, wall, rss, cpu, code, counted)


def shell(name: str, script: str, log: Path, cwd: Path, env: dict | None = None, counted: bool = True) -> Phase:
    """``timed`` on a bash script under -e and pipefail, so a failing command anywhere fails the phase."""
    return timed(name, ["bash", "-e", "-o", "pipefail", "-c", script], log, env=env, cwd=cwd, counted=counted)


def cpu_busy_s() -> float:
    """Seconds of CPU the whole machine has been busy (all cores, steal included), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds of this process and every child it has reaped."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def noise(busy_before: float, own_before: float) -> float:
    """CPU seconds that processes other than the bench and its children used since then."""
    return max(0.0, (cpu_busy_s() - busy_before) - (own_cpu_s() - own_before))


def machine_facts() -> dict:
    """What the results record about the machine: CPUs, memory, kernel, Python, the tools' versions."""
    facts = {"nproc": os.cpu_count(), "python": sys.version.split()[0], "executable": sys.executable,
             "kernel": os.uname().release, "loadavg_start": os.getloadavg()}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                facts["cpu"] = line.split(":", 1)[1].strip()
                break
        facts["mem_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (OSError, ValueError):
        pass
    for tool in ("tar", "zstd", "sha256sum", "restic"):
        path = shutil.which(tool)
        if path:
            try:
                first = subprocess.run([path, "version" if tool == "restic" else "--version"], capture_output=True,
                                       text=True, timeout=10).stdout.splitlines()
                facts[tool] = first[0] if first else path
            except (OSError, subprocess.SubprocessError):
                facts[tool] = path
    return facts
