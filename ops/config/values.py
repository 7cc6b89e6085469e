"""The values a key of retention.yaml may hold beyond YAML's own: durations, sizes, path dates.

Each reader raises ValueError with what was expected; the loader adds the file and the key.
The patterns are written so that the JSON Schema (ops/config/reference.py) can use them too.
"""

import math
import re
from dataclasses import dataclass

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*\Z")  # \Z: "$" would let a trailing newline in
DURATION_RE = re.compile(r"^([0-9]+)([smhdw])\Z")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
SIZE_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?) ?(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\Z")
SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}
PERCENT_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)%\Z")
# A rate below this would hold a step in one 1 MiB transfer for seconds on end, where it
# cannot notice that the maintenance window closed.
MIN_RATE = 1 << 20
RATE_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?) ?(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?/s\Z")


@dataclass(frozen=True)
class Duration:
    text: str
    seconds: int

    @property
    def ns(self) -> int:
        return self.seconds * 1_000_000_000


@dataclass(frozen=True)
class Size:
    """A byte count (``200GiB``) or a share of the root's filesystem (``15%``)."""

    text: str
    bytes: int = 0
    percent: float | None = None

    def of(self, filesystem_bytes: int) -> int:
        return self.bytes if self.percent is None else int(filesystem_bytes * self.percent / 100)


def parse_duration(text: str) -> Duration:
    m = DURATION_RE.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"expected a duration like 30d (units s m h d w), got {text!r}")
    return Duration(text, int(m.group(1)) * UNIT_SECONDS[m.group(2)])


def parse_size(text, allow_percent: bool) -> Size:
    if type(text) is int and text >= 0:  # a bare YAML number is bytes
        return Size(str(text), bytes=text)
    if isinstance(text, str):
        m = PERCENT_RE.match(text)
        if m and allow_percent and float(m.group(1)) < 100:
            return Size(text, percent=float(m.group(1)))
        m = SIZE_RE.match(text)
        if m and math.isfinite(float(m.group(1)) * SIZE_UNITS[m.group(2)]):
            return Size(text, bytes=int(float(m.group(1)) * SIZE_UNITS[m.group(2)]))
    what = "a size like 200GiB" + (" or a share below 100% like 15%" if allow_percent else "")
    raise ValueError(f"expected {what}, got {text!r}")


RETAIN_RE = re.compile(r"^([0-9]+)([dwy])\Z")


def parse_retain(text) -> Duration:
    """How long an object stays locked: days, weeks or years (``7y``); a year is 365 days."""
    m = RETAIN_RE.match(text) if isinstance(text, str) else None
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"expected a retention above 0 like 7y (units d w y), got {text!r}")
    return Duration(text, int(m.group(1)) * {"d": 1, "w": 7, "y": 365}[m.group(2)] * 86400)


def parse_rate(text) -> int:
    """Bytes per second, above 0: ``100MiB/s``."""
    m = RATE_RE.match(text) if isinstance(text, str) else None
    rate = float(m.group(1)) * SIZE_UNITS[m.group(2)] if m else 0.0
    if not math.isfinite(rate) or rate < MIN_RATE:
        raise ValueError(f"expected a rate of at least 1MiB/s like 100MiB/s, got {text!r}")
    return int(rate)


def compile_path_date(pattern: str) -> re.Pattern:
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    missing = {"y", "m", "d"} - set(rx.groupindex)
    if missing:
        raise ValueError(f"needs the named groups y, m and d (missing: {', '.join(sorted(missing))})")
    return rx
