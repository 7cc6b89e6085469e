"""clean's journal: a line per decision, in entry order, so a rerun skips what was decided."""

from ops.sys.paths import open_plain_file

JOURNAL_SYNC_EVERY = 512  # lines; written out after every batch, fsynced after this many


def resume_point(path) -> int:
    """Complete journal lines from an earlier attempt; a torn last line is cut off."""
    try:
        with open_plain_file(path, writable=True) as f:
            data_end = good = count = 0
            for line in f:
                data_end += len(line)
                if line.endswith(b"\n"):
                    good, count = data_end, count + 1
            f.truncate(good)
            return count
    except FileNotFoundError:
        return 0
