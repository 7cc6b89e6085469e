"""The catalogue: every file the toolkit ever deleted, and where its verified copies live.

One JSON-lines file per run, ``<state_dir>/catalogue/<run_id>.jsonl``, written atomically
when clean ends (a run's block appears whole or not at all, and a rerun rewrites the
same block). Each line: the original absolute path, policy, run, destinations, archive,
SHA-256, size, mtime and deletion time. ``find`` asks the index beside them
(ops/state/catindex.py), which points at the lines: a path is found in milliseconds
after years of runs.
"""

import contextlib
import fnmatch
import itertools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ops.errors import StepFailed
from ops.state import catindex
from ops.sys.atomic import atomic_file, ensure_private_dir
from ops.sys.jsonl import HashingLineWriter, decode_line, iter_lines
from ops.sys.paths import open_plain_file

DIR = "catalogue"


def catalogue_dir(state_dir: Path) -> Path:
    return Path(state_dir) / DIR


class RunBlock:
    """The run's block, as a sink: ``add`` a line per deletion as it happens; on leaving the
    block it is published whole. Also when the work that fed it fails part-way (clean
    stopped at a later policy): a file deleted must be findable even when its run did not
    finish, and the failure is raised all the same. Not when a write to the block itself
    failed: a block with a torn line is never published. A rerun writes the whole block again.
    """

    def __init__(self, state_dir: Path, run_id: str):
        self.path = Path(state_dir) / DIR / f"{run_id}.jsonl"
        self.count = 0
        self._broken = False

    def __enter__(self) -> "RunBlock":
        ensure_private_dir(self.path.parent, own=True)
        self._stack = contextlib.ExitStack()
        self._out = HashingLineWriter(self._stack.enter_context(atomic_file(self.path)))
        return self

    def add(self, line: dict) -> None:
        try:
            self._out.write(line)
        except BaseException:
            self._broken = True
            raise
        self.count += 1

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._broken:
            return bool(self._stack.__exit__(exc_type, exc, tb))  # the file is dropped, the error goes on
        self._stack.__exit__(None, None, None)  # published: what was deleted so far, or everything
        return False


def write_run(state_dir: Path, run_id: str, lines: Iterable[dict]) -> int:
    """The run's block from ``lines`` (a ``RunBlock`` fed from an iterator)."""
    with RunBlock(state_dir, run_id) as block:
        for line in lines:
            block.add(line)
    return block.count


def run_entries(state_dir: Path, run_id: str) -> Iterator[dict]:
    """The deletions of one run (none if the catalogue has no block for it)."""
    path = Path(state_dir) / DIR / f"{run_id}.jsonl"
    try:
        yield from iter_lines(path)
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        raise StepFailed(
            f"catalogue file {path} cannot be read: {exc}",
            hint="the archives themselves still list every file: see Restore in the README",
        ) from None


GLOB = "*?["


def find(state_dir: Path, pattern: str, progress=None, warn=None) -> Iterator[dict]:
    """Deletions whose original path equals ``pattern`` or matches it as a glob (``*`` spans '/'),
    oldest run first, through the index (ops/state/catindex.py), brought up to date first
    (``progress``: see catindex.sync); ``warn(message)`` hears of each damaged block, whose
    lines before the damage still answer.

    The catalogue holds absolute paths, so a relative pattern, glob or not, is taken from
    the current directory, as a shell would take it. An absolute glob is left as written.
    """
    if not os.path.isabs(pattern) or not any(c in pattern for c in GLOB):
        pattern = os.path.abspath(pattern)  # abspath normalises too: ./a//b and a/../b as the path they name
    directory = Path(state_dir) / DIR
    for damage in catindex.sync(directory, progress):
        if warn is not None:
            warn(f"{damage}; the files of its later lines are not found (the archives still list them)")
    cut = min((i for i, c in enumerate(pattern) if c in GLOB), default=None)
    if cut is None:
        hits = catindex.lookup(directory, exact=os.fsencode(pattern))
    else:  # the fixed part before the first wildcard is a range of the index; the rest is matched here
        hits = (
            h
            for h in catindex.lookup(directory, prefix=os.fsencode(pattern[:cut]))
            if fnmatch.fnmatchcase(os.fsdecode(h[0]), pattern)
        )
    # Only the matches are held, to be read oldest run first (then in each block's order).
    yield from _lines(directory, sorted(hits, key=lambda h: (h[1], h[2])))


def _lines(directory: Path, hits) -> Iterator[dict]:
    """The catalogue lines ``hits`` point at, each run's block opened once."""
    for run, group in itertools.groupby(hits, key=lambda h: h[1]):
        path = directory / f"{run}.jsonl"
        try:
            with open_plain_file(path) as f:
                for _path, _run, offset in group:
                    f.seek(offset)
                    yield decode_line(f.readline())
        except (OSError, ValueError) as exc:
            raise StepFailed(
                f"catalogue file {path} cannot be read: {exc}",
                hint="the archives themselves still list every file: see Restore in the README",
            ) from None


def index_run(state_dir: Path, run_id: str) -> None:
    """Index the run's block just published (clean): find never meets it unindexed."""
    directory = Path(state_dir) / DIR
    with catindex.opened(directory) as db:
        catindex.index_block(db, directory, run_id)
