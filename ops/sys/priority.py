"""Low CPU and I/O priority: the trading core comes first.

Set once per process at start and inherited by the chain's children. I/O priority uses
the ioprio_set syscall (best-effort class, lowest level 7), not the idle class, which a
busy core could starve for hours. QTS_OPS_PRIORITY=normal turns both off (benchmarks).
"""

import ctypes
import os
import platform

NICE = 10
_IOPRIO_SET = {"x86_64": 251, "aarch64": 30}
_IOPRIO_WHO_PROCESS = 1
_IOPRIO_CLASS_BE = 2
_IOPRIO_CLASS_SHIFT = 13


def lower_priority() -> None:
    if os.environ.get("QTS_OPS_PRIORITY") == "normal":
        return
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if current < NICE:
        os.nice(NICE - current)
    number = _IOPRIO_SET.get(platform.machine())
    if number is None:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall(number, _IOPRIO_WHO_PROCESS, 0, (_IOPRIO_CLASS_BE << _IOPRIO_CLASS_SHIFT) | 7)
    except OSError:
        pass  # no libc symbol table to call through: CPU priority alone still applies
