"""The fault kinds: ``KINDS`` (how many trials each gets per CHAOS_TRIALS unit, its
relative cost for scheduling, what it does) and ``TRIALS``, the function that runs one
trial of each, from the modules of this package."""

from tools.chaos.trials.concurrency import trial_concurrency
from tools.chaos.trials.config_change import trial_config_change
from tools.chaos.trials.copy_lost import trial_copy_lost
from tools.chaos.trials.core_race import trial_core_race
from tools.chaos.trials.corruption import trial_corrupt
from tools.chaos.trials.guard_rails import trial_brake, trial_window_close
from tools.chaos.trials.hostile import trial_hostile_deep, trial_hostile_names, trial_hostile_uid
from tools.chaos.trials.kills import trial_sigkill_point, trial_sigkill_time
from tools.chaos.trials.scrub import trial_scrub
from tools.chaos.trials.storage import trial_disk_full, trial_io_fsync, trial_io_read, trial_io_short

# Kind -> (trials per CHAOS_TRIALS unit, relative cost for scheduling, description)
KINDS = {
    "sigkill-point": (1.0, 3, "SIGKILL at QTS_OPS_CRASH_AT=<point>[:n], 1-5 crashes in a row, then recovery"),
    "sigkill-time": (0.4, 5, "SIGKILL of the chain's whole process group after a random delay"),
    "disk-full-dest": (0.25, 3, "destination is a tmpfs too small for the archive"),
    "disk-full-state": (0.25, 3, "state dir is a tmpfs too small for the manifests and entry files"),
    "io-read-eio": (0.4, 3, "EIO at a random offset while verify reads a published file"),
    "io-fsync-eio": (0.4, 3, "EIO from the n-th fsync of publish (files, staging dir, parent dir)"),
    "io-short-write": (0.4, 3, "short writes at the file descriptor, some ending in EIO"),
    "corrupt-state": (0.5, 6, "bit flip / truncation / swap from another run of manifests and entry files"),
    "corrupt-dest": (0.5, 5, "bit flip / truncation / swap of archives, .sha256, SHA256SUMS, MANIFEST.json"),
    "copy-lost": (0.4, 4, "after verify, before clean: verified copies removed, cut, extended, symlinked, moved away"),
    "core-race": (0.25, 5, "a writer appends, rewrites, renames, replaces, swaps in symlinks during the chain"),
    "hostile-names": (0.25, 3, "newlines, non-UTF-8, leading dashes, 255-byte names, long paths, links, FIFO, socket"),
    "hostile-deep": (0.01, 20, "a tree 2,000 directories deep, below a path that puts it past PATH_MAX"),
    "hostile-uid": (0.1, 3, "the chain under uid nobody; one expired file and one directory unreadable for it"),
    "concurrency": (0.1, 5, "eight chains started at once"),
    "config-change": (
        0.4,
        3,
        "between steps: quorum lowered, policy or destination removed, a second config on the state",
    ),
    "window-close": (0.3, 6, "the maintenance window closes 0.1-4 s into a run slowed by io_limit 1-2 MiB/s"),
    "brake": (0.2, 4, "a policy over its max_delete: nothing of it deleted, exit 1; then allowed once"),
    "scrub-bit-rot": (0.2, 4, "a bit flipped in an archive of an old run on one destination, then make scrub"),
    "scrub-lost-one": (0.2, 4, "a run's directory removed from one destination, then make scrub"),
    "scrub-lost-all": (0.1, 4, "a run removed from every destination: scrub must exit 1 naming it"),
    "scrub-rewritten": (0.2, 4, "an archive rewritten in place (same size, other bytes), then make scrub"),
}


TRIALS = {
    "sigkill-point": trial_sigkill_point,
    "sigkill-time": trial_sigkill_time,
    "disk-full-dest": lambda *a: trial_disk_full(*a, target="dest"),
    "disk-full-state": lambda *a: trial_disk_full(*a, target="state"),
    "io-read-eio": trial_io_read,
    "io-fsync-eio": trial_io_fsync,
    "io-short-write": trial_io_short,
    "corrupt-state": lambda *a: trial_corrupt(*a, where="state"),
    "corrupt-dest": lambda *a: trial_corrupt(*a, where="dest"),
    "copy-lost": trial_copy_lost,
    "core-race": trial_core_race,
    "hostile-names": trial_hostile_names,
    "hostile-deep": trial_hostile_deep,
    "hostile-uid": trial_hostile_uid,
    "concurrency": trial_concurrency,
    "config-change": trial_config_change,
    "window-close": trial_window_close,
    "brake": trial_brake,
    "scrub-bit-rot": lambda *a: trial_scrub(*a, fault="bit-rot"),
    "scrub-lost-one": lambda *a: trial_scrub(*a, fault="lost-one"),
    "scrub-lost-all": lambda *a: trial_scrub(*a, fault="lost-all"),
    "scrub-rewritten": lambda *a: trial_scrub(*a, fault="rewritten"),
}
assert set(TRIALS) == set(KINDS)
