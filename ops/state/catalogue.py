"""The catalogue: every file the toolkit ever deleted, and where its verified copies live.

One JSON-lines file per run, ``<state_dir>/catalogue/<run_id>.jsonl``, written atomically
when clean finishes (a run's block appears whole or not at all, and a rerun rewrites the
same block). Each line: the original absolute path, policy, run, destinations, archive,
SHA-256, size, mtime and deletion time. ``find`` streams them, so months of runs never
need to fit in memory.
"""

import fnmatch
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ops.errors import StepFailed
from ops.state.manifest import RUN_ID_RE
from ops.sys.atomic import atomic_file, ensure_private_dir
from ops.sys.jsonl import HashingLineWriter, iter_lines

DIR = "catalogue"


def write_run(state_dir: Path, run_id: str, lines: Iterable[dict]) -> int:
    """Write the run's block from ``lines``. If producing them fails part-way (clean
    stopped at a later policy), the deletions already made are still written, then the
    failure is raised: a file deleted must be findable even when its run did not finish.
    The rerun writes the whole block again."""
    directory = ensure_private_dir(Path(state_dir) / DIR, own=True)
    failure, lines = None, iter(lines)
    with atomic_file(directory / f"{run_id}.jsonl") as f:
        out = HashingLineWriter(f)
        while failure is None:
            try:
                line = next(lines)
            except StopIteration:
                break
            except Exception as exc:  # the producer's failure only; a failed write of ours aborts the file
                failure = exc
                break
            out.write(line)
    if failure is not None:
        raise failure
    return out.count


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
