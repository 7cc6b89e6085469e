"""Applying the policies to their roots on disk: the walk fed through the pure decision.

Each file is decided by one policy only. Policies may overlap (a ``pressure`` policy
over ``/data/qts`` that holds the ``ticks`` root), so:

- a file beneath another policy's root, nested inside this one's, belongs to the policy
  with the deepest root: the outer policy's walk does not enter the inner root;
- of policies with the same root, the first in retention.yaml whose include/exclude
  match a file decides it; the later ones pass it by.

Free-space targets (``min_free``) count what the other policies of the same run free on
the same filesystem, so those policies are evaluated last (``evaluation_order``).
"""

import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ops.config import Policy
from ops.errors import StepFailed
from ops.maintenance.retention.deletable import keep_undeletable
from ops.maintenance.retention.policy import Decision, Disk, decide, keep_open, keep_restored, matcher
from ops.maintenance.retention.walk import walk_files


class RootMissing(Exception):
    pass


def root_identity(policy: Policy) -> tuple[int, int]:
    """(device, inode) of the policy root; RootMissing when it is absent and allowed to be."""
    try:
        st = os.stat(policy.root)
    except FileNotFoundError:
        if policy.missing_ok:
            raise RootMissing(f"policy {policy.name}: root {policy.root} does not exist (missing_ok)") from None
        raise StepFailed(
            f"policy {policy.name}: root {policy.root} does not exist",
            hint="fix the root in the config, or set missing_ok: true for a root that may be absent",
        ) from None
    if os.path.islink(policy.root):
        raise StepFailed(
            f"policy {policy.name}: root {policy.root} is a symbolic link (never followed)",
            hint="set the policy's root to the directory the link points to",
        )
    if not os.path.isdir(policy.root):
        raise StepFailed(f"policy {policy.name}: root {policy.root} is not a directory")
    return st.st_dev, st.st_ino


def _relative(inner: Path, outer: Path) -> str | None:
    """``inner`` relative to ``outer`` ('' when the same), as written or through symlinks;
    None when it is not at or beneath it."""
    for a, b in ((inner, outer), (Path(os.path.realpath(inner)), Path(os.path.realpath(outer)))):
        if a == b:
            return ""
        if b in a.parents:
            return a.relative_to(b).as_posix()
    return None


def nested_roots(policy: Policy, policies: Iterable[Policy]) -> frozenset[str]:
    """The roots of other policies strictly beneath this one's, relative to it."""
    return frozenset(
        rel for other in policies if other.name != policy.name and (rel := _relative(other.root, policy.root))
    )


def _claimed_before(policy: Policy, policies: Iterable[Policy]) -> list[Callable[[str], bool]]:
    """Matchers of the policies listed before this one with the same root."""
    earlier = []
    for other in policies:
        if other.name == policy.name:
            break
        if _relative(other.root, policy.root) == "":
            earlier.append(matcher(other))
    return earlier


def own_places(config) -> dict[tuple[int, int], str]:
    """(device, inode) of the toolkit's own places that exist: the state, log and local
    destination directories, the metrics file and the config file. The config check
    compares paths; this catches the same places reached through a bind mount."""
    places = {"state_dir": config.state_dir, "log_dir": config.log_dir, "config file": config.path}
    places.update({f"destination {d.name}": d.path for d in config.destinations if d.path is not None})
    if config.metrics_file is not None:
        places["metrics_file"] = config.metrics_file
    found = {}
    for what, path in places.items():
        try:
            st = os.stat(path)
        except OSError:
            continue  # not there yet: nothing to meet in a walk either
        found[(st.st_dev, st.st_ino)] = f"{what} ({path})"
    return found


def evaluation_order(policies: Iterable[Policy]) -> list[Policy]:
    """The policies in file order, those with ``min_free`` last (they count what the others free)."""
    policies = list(policies)
    return [p for p in policies if p.min_free is None] + [p for p in policies if p.min_free is not None]


class Freed:
    """Bytes the policies evaluated so far in this run expire, per filesystem (device)."""

    def __init__(self):
        self.by_device: Counter = Counter()

    def tally(self, decisions: Iterable[Decision]) -> Iterator[Decision]:
        for d in decisions:
            if d.expire:
                self.by_device[d.file.dev] += d.file.size
            yield d


def disk_of(policy: Policy, freed: Freed | None = None) -> Disk:
    """Size and free space (for an unprivileged writer) of the filesystem holding the root."""
    st = os.statvfs(policy.root)
    pending = freed.by_device[os.stat(policy.root).st_dev] if freed is not None else 0
    return Disk(total=st.f_blocks * st.f_frsize, free=st.f_bavail * st.f_frsize, pending=pending)


def evaluate(
    policy: Policy,
    now_ns: int,
    on_skip: Callable[[str, str], None],
    policies: Iterable[Policy] = (),
    freed: Freed | None = None,
    restored: dict | None = None,
    fenced: dict[tuple[int, int], str] | None = None,
    writers=None,
) -> Iterator[Decision]:
    """Every file under the root that the policy governs, decided (keep or expire, and why).

    ``policies`` are all the config's (for the files another one decides); ``freed``
    carries what those evaluated before this one expire, and learns what this one does;
    ``fenced``: ``own_places`` of the config, never entered;
    ``restored``: the marks of ops/state/restored.py (by file), kept while their grace lasts;
    ``writers``: the files other processes hold open for writing (ops/sys/writers.py), kept.
    """
    policies = tuple(policies)
    matches = matcher(policy)
    earlier = _claimed_before(policy, policies)

    def governs(path: str) -> bool:
        return matches(path) and not any(m(path) for m in earlier)

    def skipped(path: str, why: str) -> None:
        # A directory that cannot be read may hide matching files, and one of the toolkit's
        # own reached through a mount is worth an operator's look: always said.
        if governs(path) or path == "." or why.startswith(("cannot read directory", "is the toolkit's own")):
            on_skip(path, why)

    files = (
        f for f in walk_files(Path(policy.root), skipped, nested_roots(policy, policies), fenced) if governs(f.path)
    )
    decisions = decide(files, policy, now_ns, disk=disk_of(policy, freed) if policy.min_free else None)
    decisions = keep_undeletable(keep_open(keep_restored(decisions, restored, now_ns), writers), policy.root)
    return freed.tally(decisions) if freed is not None else decisions
