"""Low CPU and I/O priority: the trading core comes first.

Set once per process at start, once the pace is known, and inherited by the chain's
children. I/O priority uses the ioprio_set syscall (best-effort class, lowest level 7),
not the idle class, which a busy core could starve for hours; most schedulers (mq-deadline,
none) ignore it anyway. At the gentle pace the CPU policy is SCHED_IDLE: a core thread
that wakes (its fdatasync done) takes the CPU from the toolkit at once, where nice 10
still let it wait for a slice (core p99 during gentle maintenance 2.1 ms instead of 2.6 ms,
idle 0.8 ms, docs/performance.md). The cost: on a host whose CPUs are all busy, a gentle
run waits for idle time, which is the core-first rule; ``full`` keeps nice 10.
QTS_OPS_PRIORITY=normal turns all of it off (benchmarks).
"""

import ctypes
import os
import platform

NICE = 10
_IOPRIO_SET = {"x86_64": 251, "aarch64": 30}
_IOPRIO_WHO_PROCESS = 1
_IOPRIO_CLASS_BE = 2
_IOPRIO_CLASS_SHIFT = 13


def lower_priority(gentle: bool) -> None:
    if os.environ.get("QTS_OPS_PRIORITY") == "normal":
        return
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if current < NICE:
        os.nice(NICE - current)
    if gentle and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            pass  # a container that forbids it: nice 10 still applies
    number = _IOPRIO_SET.get(platform.machine())
    if number is None:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall(number, _IOPRIO_WHO_PROCESS, 0, (_IOPRIO_CLASS_BE << _IOPRIO_CLASS_SHIFT) | 7)
    except OSError:
        pass  # no libc symbol table to call through: CPU priority alone still applies
