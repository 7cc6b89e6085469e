"""The scripts' shared shell: arguments, exit codes, privacy and priority, set once.

A script is ``main(argv)``: it builds its parser here, names one function of ``ops`` to
call, and returns that function's exit code. Any OpsError becomes its own exit code and
one clear paragraph on stderr, and so does any OSError (exit 1: a read-only or full file
system, a permission); argparse's own usage errors exit 64, not 2, because 2 means
"refused" in this toolkit. A failure of the chain or of one of its steps is counted in
the metrics here, once, whatever raised it.
"""

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ops.config import Config, load_config
from ops.console import Console
from ops.errors import EXIT_STATUS_HELP, UsageError
from ops.logs.guard import Guard
from ops.state.manifest import check_run_id
from ops.sys.budget import READS, WRITES
from ops.sys.pace import PACE, PACES
from ops.sys.priority import lower_priority
from ops.sys.window import WINDOW

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "retention.yaml"


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{self.prog}: {message}", hint=f"see {self.prog} --help")


def parser(
    name: str, description: str, run: bool = True, pace: bool = False, window: bool = False, brake: bool = False
) -> argparse.ArgumentParser:
    p = _Parser(
        prog=f"scripts/{name}.py",
        description=description,
        epilog=EXIT_STATUS_HELP,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config", default=str(DEFAULT_CONFIG), metavar="PATH", help="retention.yaml to use (default: %(default)s)"
    )
    if run:
        p.add_argument("--run", metavar="ID", type=_run_id, help="run id (default: the newest run)")
    if pace:
        p.add_argument(
            "--pace",
            choices=PACES,
            default=None,
            help="gentle: leave the disk's latency to the trading core; full: as fast as the disk allows "
            "(default: the config's pace, gentle unless set)",
        )
    if window:
        p.add_argument(
            "--ignore-window",
            action="store_true",
            help="run even outside the config's maintenance window (for an operator at the keyboard)",
        )
    if brake:
        p.add_argument(
            "--allow-large-delete",
            metavar="POLICY[,POLICY]",
            type=lambda text: frozenset(n.strip() for n in text.split(",") if n.strip()),
            default=frozenset(),
            help="let this one run expire more of these policies than their max_delete allows",
        )
    p.add_argument("-v", "--verbose", action="store_true", help="print a summary even when not on a terminal")
    return p


def _run_id(text: str) -> str:
    try:
        return check_run_id(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def count(text: str) -> int:
    """An argument that is a whole number, 0 or more."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number, 0 or more, got {text!r}")
    return int(text)


def _open_standard_descriptors() -> None:
    """Reopen on /dev/null any of descriptors 0-2 that whoever started us left closed.

    Otherwise the first file the toolkit opens (the lock, a log) takes that number, and
    whatever is written to "stderr" (an error paragraph, a library's warning) lands in it.
    """
    for fd, mode, name in ((0, os.O_RDONLY, "stdin"), (1, os.O_WRONLY, "stdout"), (2, os.O_WRONLY, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, mode)  # the lowest free number: this one (0, 1, 2 go in order)
            if getattr(sys, name) is None:
                setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))


def main(
    name: str, p: argparse.ArgumentParser, argv, action: Callable[[argparse.Namespace, Config, Console], int]
) -> int:
    _open_standard_descriptors()
    os.umask(0o077)  # everything the toolkit creates is private to its user
    guard = Guard(name)

    def body() -> int:
        args = p.parse_args(argv)
        guard.ui = Console(verbose=args.verbose)
        guard.config = load_config(args.config)
        config = guard.config
        # Set once per process, and inherited by the chain's forked steps.
        PACE.set(getattr(args, "pace", None) or config.pace)
        lower_priority(PACE.gentle)
        if hasattr(args, "ignore_window"):  # the steps and the chain; restore, find, status, plan never look
            WINDOW.set(config.window, config.window_timezone, ignored=args.ignore_window)
        READS.set(config.io_limit)
        WRITES.set(config.io_limit)
        return action(args, guard.config, guard.ui)

    return guard.run(body)


def run(argv=None, **kw) -> None:
    sys.exit(main(argv=argv, **kw))
