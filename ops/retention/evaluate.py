"""Applying one policy to its root on disk: the walk fed through the pure decision."""

import os
from pathlib import Path
from typing import Callable, Iterator

from ops.config import Policy
from ops.errors import StepFailed
from ops.retention.policy import Decision, Disk, decide, keep_restored, matcher
from ops.retention.walk import walk_files


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
    if not os.path.isdir(policy.root) or os.path.islink(policy.root):
        raise StepFailed(f"policy {policy.name}: root {policy.root} is not a directory")
    return st.st_dev, st.st_ino


def disk_of(policy: Policy) -> Disk:
    """Size and free space (for an unprivileged writer) of the filesystem holding the root."""
    st = os.statvfs(policy.root)
    return Disk(total=st.f_blocks * st.f_frsize, free=st.f_bavail * st.f_frsize)


def evaluate(policy: Policy, now_ns: int, on_skip: Callable[[str, str], None],
             restored: dict | None = None) -> Iterator[Decision]:
    """Every file under the root that the policy governs, decided (keep or expire, and why);
    ``restored``: this policy's marks from ops/restored.py, kept while their grace lasts."""
    matches = matcher(policy)

    def skipped(path: str, why: str) -> None:
        # A directory that cannot be read may hide matching files: always said.
        if matches(path) or path == "." or why.startswith("cannot read directory"):
            on_skip(path, why)

    files = (f for f in walk_files(Path(policy.root), skipped) if matches(f.path))
    decisions = decide(files, policy, now_ns, disk=disk_of(policy) if policy.min_free else None)
    return keep_restored(decisions, restored, now_ns)
