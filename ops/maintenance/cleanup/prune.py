"""Removing the directories clean emptied, when the policy asks for it (prune_empty_dirs)."""

import os
import time

from ops.state.records import ScannedPolicy
from ops.sys.paths import Beneath


class DirTracker:
    """Directories that held deleted files, with their mtime before this clean touched them.

    ``before`` is shared by the policies of one root, so a directory emptied by two of them
    keeps the mtime from before the first one's unlinks, and the last one prunes it.
    """

    def __init__(self, beneath: Beneath, before: dict[str, int]):
        self.beneath = beneath
        self.before = before

    def touch(self, path: str) -> None:
        parent = path.rpartition("/")[0]
        while parent and parent not in self.before:
            try:
                self.before[parent] = self.beneath.lstat(parent).st_mtime_ns
            except OSError:
                self.before[parent] = time.time_ns()  # unknown: treat as fresh, never pruned
            parent = parent.rpartition("/")[0]

    def prune(self, scanned: ScannedPolicy, log, policy: str) -> int:
        """Remove the directories this clean emptied, if the policy asked for it
        (``prune_empty_dirs``): never its root, never another policy's root, never one the
        core touched within the policy's horizon (``prune_after_ns``: a directory the core
        writes into must still be there for its next write)."""
        if not scanned.prune_empty_dirs:
            return 0
        removed = 0
        cutoff = time.time_ns() - scanned.prune_after_ns
        roots = set(scanned.nested_roots)
        for d in sorted(self.before, key=lambda p: p.count("/"), reverse=True):
            if self.before[d] > cutoff or d in roots:
                continue
            try:
                with self.beneath.fresh_parent(d) as (dir_fd, name):
                    os.rmdir(name, dir_fd=dir_fd)
            except OSError:
                continue  # not empty, or not ours to judge: leave it
            removed += 1
            log.event("dir_removed", f"{d}: empty directory removed (prune_empty_dirs)", policy=policy, path=d)
        return removed
