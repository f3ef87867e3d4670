"""Console output shared by every layer: one rich console on stderr and a progress helper.

On a terminal, progress is a rich bar. When stderr is not a terminal (a log file, CI), a bar would
print nothing until it ends, so progress is a plain line instead: the first after ``FIRST_LINE_S``
seconds (an early estimate of the remaining time), then one every ``PYRAWAN_PROGRESS_EVERY`` seconds
(default ``LOG_EVERY_S``), and one when the loop ends.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)
console.soft_wrap = not console.is_terminal     # a log gets one line per message, not lines cut at 80 columns

LOG_EVERY_S = 30.0     # seconds between progress lines in a log
FIRST_LINE_S = 5.0     # the first line comes sooner: the remaining time measured from the first steps


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s`` or ``1 h 02 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def log_every() -> float:
    """Seconds between progress lines: ``PYRAWAN_PROGRESS_EVERY`` if set to a positive number, else LOG_EVERY_S."""
    try:
        value = float(os.environ.get("PYRAWAN_PROGRESS_EVERY", ""))
    except ValueError:
        return LOG_EVERY_S
    return value if value > 0 else LOG_EVERY_S


class LogProgress:
    """Progress as plain lines: ``label: 40/400 (10%), 2.50 it/s, 2 min 24 s left, loss 0.1234``.

    ``advance(n, **fields)`` counts ``n`` steps and keeps ``fields`` (e.g. ``loss``) for the next line;
    ``clock`` and ``write`` are injectable (tests use a fake clock and a list).
    """

    def __init__(self, label: str, total: int, done: int = 0, every: float | None = None,
                 clock: Callable[[], float] = time.monotonic, write: Callable[[str], None] | None = None):
        self.label, self.total, self.done, self.start_done = label, total, done, done
        self.every, self.clock = every or log_every(), clock
        self.write = write or (lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True))
        self.started = self.last = clock()
        self.reported, self.fields = None, {}

    def advance(self, n: int = 1, **fields) -> None:
        self.done += n
        self.fields.update(fields)
        now = self.clock()
        if now - self.last >= (FIRST_LINE_S if self.reported is None else self.every):
            self.write(self.line(now))
            self.reported, self.last = self.done, now

    def line(self, now: float) -> str:
        """The progress line at time ``now``."""
        elapsed = now - self.started
        rate = (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.label}: {self.done}/{self.total} ({100 * self.done / max(self.total, 1):.0f}%)"]
        if rate > 0:
            parts.append(f"{rate:.2f} it/s" if rate >= 0.1 else f"{1 / rate:.1f} s/it")
            parts.append(f"{duration((self.total - self.done) / rate)} left" if self.done < self.total
                         else f"done in {duration(elapsed)}")
        parts += [f"{key} {value}" for key, value in self.fields.items()]
        return ", ".join(parts)

    def close(self) -> None:
        """The last line, unless the last step already printed one."""
        if self.reported != self.done:
            self.write(self.line(self.clock()))


@contextlib.contextmanager
def log_progress(label: str, total: int, done: int = 0) -> Iterator[Callable[..., None]]:
    """Plain progress lines (see LogProgress); yields ``advance(n=1, **fields)``."""
    lines = LogProgress(label, total, done)
    yield lines.advance
    lines.close()


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """A rich progress bar, or plain lines when stderr is not a terminal; yields ``advance(n=1)``.
    Silent when ``enabled`` is False."""
    if not enabled:
        yield lambda n=1: None
        return
    if not console.is_terminal:
        with log_progress(description, total) as advance:
            yield advance
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
