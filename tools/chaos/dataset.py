"""What a trial writes: the sandbox's configuration drawn at random (compression,
destinations, quorum, policies) and a random dataset of expired and young files, recorded
in a ``Dataset`` the oracle judges against."""

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

from tools.chaos.files import put_file
from tools.sandbox import DAY, Sandbox, add_policy


@dataclass
class FileSpec:
    root: str  # policy root dir name under data/
    rel: bytes
    content: bytes
    expired: bool  # should be gone once everything settles
    mtime: float

    @property
    def key(self) -> bytes:
        return self.root.encode() + b"/" + self.rel


class Dataset:
    """Every file a trial wrote, keyed "<root>/<rel>", as the oracle must find it."""

    def __init__(self, sb: Sandbox):
        self.sb = sb
        self.files: dict[bytes, FileSpec] = {}  # key -> the newest version the core wrote
        self.not_expected_gone: set[bytes] = set()  # kept for a reason (unreadable, touched, special)

    def add(self, root: str, rel: bytes, content: bytes, age_days: float, expired: bool) -> FileSpec:
        mtime = time.time() - age_days * DAY
        put_file(os.fsencode(self.sb.data / root), rel, content, mtime)
        spec = FileSpec(root, rel, content, expired, mtime)
        self.files[spec.key] = spec
        return spec

    def expected_gone(self) -> set[bytes]:
        return {k for k, f in self.files.items() if f.expired} - self.not_expected_gone


def random_content(rng: random.Random) -> bytes:
    """Mostly small, now and then up to 300 KB; random bytes or compressible trading words."""
    r = rng.random()
    size = (
        0
        if r < 0.04
        else rng.randint(1, 2000)
        if r < 0.75
        else rng.randint(2000, 60000)
        if r < 0.97
        else rng.randint(60000, 300000)
    )
    if rng.random() < 0.5:
        return rng.randbytes(size)
    words = [b"tick", b"bar", b"fill", b"order", b"100.25", b"ESZ6", b"\n"]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + b" "
    return bytes(out[:size])


def configure(sb: Sandbox, rng: random.Random, dests: int | None = None, journals: bool | None = None) -> None:
    """Random compression, one or two destinations (quorum 1 or 2), one or two policies."""
    cfg = sb.config
    cfg["backup"]["compression"] = rng.choice(["zstd", "zstd", "gzip", "none"])
    dests = dests or rng.choice([1, 1, 2])
    if dests == 2:
        cfg["backup"]["destinations"].append({"name": "offsite", "type": "local", "path": "var/offsite"})
        cfg["backup"]["require_verified_copies"] = rng.choice([1, 2])
    sb.write_config()
    if journals if journals is not None else rng.random() < 0.4:
        add_policy(sb, "journals", "journals", ["**/*.jsonl"])


def dataset(sb: Sandbox, rng: random.Random, n_min: int = 4, n_max: int = 30, expired_p: float = 0.7) -> Dataset:
    ds = Dataset(sb)
    roots = [(Path(p["root"]).name, p["include"][0].rpartition(".")[2]) for p in sb.config["policies"]]
    dirs = [b"", b"", b"2026", b"2026/11", b"a", b"a/b/c", b"ticks/ESZ6", b"x y"]
    for i in range(rng.randint(n_min, n_max)):
        root, ext = rng.choice(roots)
        d = rng.choice(dirs)
        rel = (d + b"/" if d else b"") + b"f%04d." % i + ext.encode()
        expired = rng.random() < expired_p
        age = rng.uniform(32, 400) if expired else rng.uniform(0, 25)
        ds.add(root, rel, random_content(rng), age, expired)
    return ds
