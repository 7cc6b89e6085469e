"""Which files expire and why: the pure rules, the walk, scan and plan."""
