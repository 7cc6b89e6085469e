"""What one trial of the campaign found: the ``Outcome`` the trials fill in and the report
counts, and ``TrialAbort``, for a trial that cannot go on."""

import random
from dataclasses import dataclass, field


@dataclass
class Outcome:
    kind: str
    trial: int
    seed: int
    faults: int = 0
    recovered: bool = False
    new_run: bool = False
    lost: list = field(default_factory=list)
    kept_forever: list = field(default_factory=list)
    violations: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    skipped: str = ""
    mechanism: str = ""
    seconds: float = 0.0
    budget: float = 1.0  # scales the cheap faults per trial (the slice in make test uses less)

    def count(self, rng: random.Random, lo: int, hi: int) -> int:
        return max(1, round(rng.randint(lo, hi) * self.budget))

    def bad(self, msg: str) -> None:
        if len(self.violations) < 20:
            self.violations.append(msg)

    @property
    def failed(self) -> bool:
        return bool(self.lost or self.kept_forever or self.violations)


class TrialAbort(Exception):
    """A trial cannot go on (its state is not what the next fault needs); already recorded."""
