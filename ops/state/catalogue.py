"""The catalogue: every file the toolkit ever deleted, and where its verified copies live.

One JSON-lines file per run, ``<state_dir>/catalogue/<run_id>.jsonl``, written atomically
when clean ends (a run's block appears whole or not at all, and a rerun rewrites the
same block). Each line: the original absolute path, policy, run, destinations, archive,
SHA-256, size, mtime and deletion time. ``find`` streams them, so months of runs never
need to fit in memory.
"""

import contextlib
import fnmatch
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ops.errors import StepFailed
from ops.state.manifest import RUN_ID_RE
from ops.sys.atomic import atomic_file, ensure_private_dir
from ops.sys.jsonl import HashingLineWriter, iter_lines

DIR = "catalogue"


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


def entries(state_dir: Path) -> Iterator[dict]:
    """Every catalogued deletion, oldest run first."""
    directory = Path(state_dir) / DIR
    try:
        names = sorted(n for n in os.listdir(directory) if RUN_ID_RE.match(n.removesuffix(".jsonl")))
    except FileNotFoundError:
        return
    for name in names:
        try:
            yield from iter_lines(directory / name)
        except (OSError, ValueError) as exc:  # not a file clean wrote (a FIFO, a symlink), or damaged
            raise StepFailed(
                f"catalogue file {directory / name} cannot be read: {exc}",
                hint="the archives themselves still list every file: see Restore in the README",
            ) from None


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


def find(state_dir: Path, pattern: str) -> Iterator[dict]:
    """Deletions whose original path equals ``pattern`` or matches it as a glob (``*`` spans '/').

    The catalogue holds absolute paths, so a relative pattern, glob or not, is taken from
    the current directory, as a shell would take it. An absolute glob is left as written.
    """
    if not os.path.isabs(pattern) or not any(c in pattern for c in "*?["):
        pattern = os.path.abspath(pattern)  # abspath normalises too: ./a//b and a/../b as the path they name
    for entry in entries(state_dir):
        if entry["path"] == pattern or fnmatch.fnmatchcase(entry["path"], pattern):
            yield entry
