"""One archive stream written to every destination at once; a destination that fails is dropped
(and its staging aborted) while the others go on."""

from ops.destinations import DestinationError
from ops.errors import StepFailed
from ops.maintenance.step import StepContext


class Fanout:
    """One stream of bytes to the same file on every live destination.

    A destination that fails (disk full, endpoint down) is dropped and its staging thrown
    away; the others go on. Only when none is left does the step fail.
    """

    def __init__(self, ctx: StepContext, stagings: dict, failed: dict[str, str]):
        self.ctx = ctx
        self.stagings = stagings  # name -> Staging, live ones only
        self.failed = failed

    def drop(self, name: str, exc: BaseException) -> None:
        staging = self.stagings.pop(name, None)
        if staging is None:
            return
        self.failed[name] = f"{type(exc).__name__}: {exc}"
        try:
            self.ctx.log.event(
                "destination_failed", f"{name}: {exc}; continuing without it", level="error", destination=name
            )
            self.ctx.ui.warn(f"destination {name} failed: {exc}")
        finally:
            staging.abort()  # no longer among the stagings the step aborts on its way out
        if not self.stagings:
            raise StepFailed("every destination failed: " + "; ".join(f"{n}: {e}" for n, e in self.failed.items()))

    def each(self, action) -> None:
        """Run ``action(name, staging)`` on every live destination, dropping those that fail."""
        for name, staging in list(self.stagings.items()):
            try:
                action(name, staging)
            except (OSError, DestinationError) as exc:
                self.drop(name, exc)

    def create(self, filename: str) -> "FanoutFile":
        files = {}
        self.each(lambda name, staging: files.__setitem__(name, staging.create(filename)))
        return FanoutFile(self, files)


class FanoutFile:
    def __init__(self, fanout: Fanout, files: dict):
        self.fanout = fanout
        self.files = files

    def write(self, data) -> int:
        for name, f in list(self.files.items()):
            if name not in self.fanout.stagings:
                del self.files[name]
                continue
            try:
                f.write(data)
            except (OSError, DestinationError) as exc:
                del self.files[name]
                self.fanout.drop(name, exc)
        return len(data)

    def flush(self) -> None:
        pass  # each destination makes its files durable when the run is published
