"""Human output, in one place: rich on a terminal, plain and quiet otherwise.

Steps never print; they call this. Under cron (no TTY) a successful step says nothing
unless asked (--verbose / VERBOSE=1); errors always get one clear paragraph on stderr.
Machine-readable output (--json) goes to stdout and never passes through here.
"""

import contextlib
import os
import sys

from ops.errors import OpsError


class Console:
    def __init__(self, verbose: bool = False):
        self.tty = sys.stderr.isatty()
        self.verbose = verbose or os.environ.get("VERBOSE", "") not in ("", "0")
        self._rich = None
        self.log_path = None  # set once the step knows its log file; named in error paragraphs
        if self.tty:
            from rich.console import Console as RichConsole

            self._rich = RichConsole(stderr=True, highlight=False)
            self._out = RichConsole(highlight=False)

    @property
    def chatty(self) -> bool:
        return self.tty or self.verbose

    def info(self, msg: str) -> None:
        if not self.chatty:
            return
        if self._rich:
            self._rich.print(msg, markup=False)
        else:
            print(msg, file=sys.stderr)

    def warn(self, msg: str) -> None:
        if self._rich:
            self._rich.print("warning: " + msg, style="yellow", markup=False)
        elif self.verbose:
            print("warning: " + msg, file=sys.stderr)

    def problem(self, msg: str) -> None:
        """What an operator must hear of although the run succeeded (a destination failed
        while the others met the quorum): one plain line on stderr even under cron, which
        mails it, where a warning would say nothing."""
        if self._rich:
            self._rich.print("warning: " + msg, style="yellow", markup=False)
        else:
            print("qts-ops warning: " + msg, file=sys.stderr)

    def summary(self, title: str, figures: dict) -> None:
        """The end of a run: a panel on a terminal, one line with --verbose, nothing under cron."""
        if self._rich:
            from rich.panel import Panel

            body = "\n".join(f"{k.replace('_', ' ')}: {v}" for k, v in figures.items())
            self._rich.print(Panel(body, title=title, expand=False))
        elif self.verbose:
            print(f"{title}: " + " ".join(f"{k}={v}" for k, v in figures.items()), file=sys.stderr)

    def error(self, exc: OpsError, step: str) -> None:
        lines = [f"qts-ops {step}: {exc.message}"]
        if exc.hint:
            lines.append(exc.hint)
        if exc.code == 1 and step in ("scan", "backup", "verify", "clean", "maintenance"):
            lines.append("Nothing unverified was deleted.")
        if self.log_path:
            lines.append(f"Log: {self.log_path}")
        lines.append("Look closer: make status (or scripts/status.py --json)")
        text = "\n".join(lines)
        if self._rich:
            self._rich.print(text, style="bold red", markup=False)
        else:
            print(text, file=sys.stderr)

    def table(self, title: str, columns: list[str], rows: list[list], footer: list | None = None) -> None:
        """A report the operator asked for (plan, status): printed with or without a TTY."""
        if self._rich:
            from rich.table import Table
            from rich.text import Text

            # A narrow terminal folds a cell onto more lines, never cuts it with "…": a path
            # shown must be the whole path. Cells are Text, not markup: "[x]" in a name stays.
            t = Table(title=Text(title), show_footer=footer is not None)
            for i, c in enumerate(columns):
                numeric = rows and all(isinstance(r[i], int) for r in rows)
                t.add_column(
                    c, footer=str(footer[i]) if footer else "", justify="right" if numeric else "left", overflow="fold"
                )
            for row in rows:
                t.add_row(*(Text(str(x)) for x in row))
            self._out.print(t)
            return
        print(f"== {title}")
        print("\t".join(columns))
        for row in rows + ([footer] if footer else []):
            print("\t".join(str(x) for x in row))

    def report(self, lines: list[str]) -> None:
        """Lines of a report the operator asked for (plan's files): on stdout, with or without a TTY."""
        for line in lines:
            if self._rich:
                self._out.print(line, markup=False, highlight=False)
            else:
                print(line)

    @contextlib.contextmanager
    def live_counts(self, title: str, columns: list[str]):
        """Yield ``show(policy, counts)``: a live table of per-policy counts on a terminal only."""
        if not self._rich:
            yield lambda key, counts: None
            return
        import time as _time

        from rich.live import Live
        from rich.table import Table

        rows: dict[str, dict] = {}
        last = [0.0]

        def table() -> Table:
            t = Table(title=title)
            t.add_column("policy")
            for c in columns:
                t.add_column(c, justify="right")
            for key, counts in rows.items():
                t.add_row(key, *(str(counts.get(c, 0)) for c in columns))
            return t

        with Live(table(), console=self._rich, transient=False, auto_refresh=False) as live:

            def show(key: str, counts: dict) -> None:
                rows[key] = counts
                now = _time.monotonic()
                if now - last[0] >= 0.25:  # a redraw per file would cost more than the unlink
                    last[0] = now
                    live.update(table(), refresh=True)

            yield show
            live.update(table(), refresh=True)

    @contextlib.contextmanager
    def progress(self, description: str, total: int):
        """Yield ``advance(n_bytes)``; a rich bar on a terminal, nothing otherwise."""
        if not self._rich:
            yield lambda n: None
            return
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=self._rich,
            transient=True,
        ) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)
