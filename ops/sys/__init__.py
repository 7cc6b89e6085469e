"""Low-level system helpers: no-follow paths, atomic writes, JSON lines, hashing I/O, gathered
writes, hand-over threads, forked workers and children, priority, crash points. Nothing here
knows a step."""
