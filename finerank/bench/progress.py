"""Progress of a benchmark run: a live bar on a terminal, one line per step elsewhere.

Example:
    >>> progress = BenchProgress(total=2, live=False, stream=sys.stdout)
    >>> with progress.step("seed float32: finerank"):
    ...     pass  # doctest: +ELLIPSIS
    [bench 1/2] seed float32: finerank ... done in ...s
    >>> progress.close()
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class BenchProgress:
    """Counts steps; draws a ``rich`` progress bar on a terminal (stderr), else prints lines.

    Args:
        total: the number of steps the run plans (skipped steps are advanced past).
        live: force the bar on/off; default: on when ``stream`` is a terminal.
        stream: where lines (or the bar) go; default stderr, so that stdout keeps the results.
    """

    def __init__(self, total: int, *, live: bool | None = None, stream: TextIO | None = None):
        self.total = max(1, total)
        self.done = 0
        self.started = time.perf_counter()
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self._bar = None
        if self.live:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]bench[/bold] {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
            )
            self._bar.start()
            self._task = self._bar.add_task("starting", total=self.total)

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.started

    @contextmanager
    def step(self, description: str) -> Iterator[None]:
        """One measured step (a line when it ends, or the bar's label while it runs)."""
        number = min(self.done + 1, self.total)
        if self._bar is not None:
            self._bar.update(self._task, description=description)
        began = time.perf_counter()
        yield
        self.done += 1
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
        else:
            seconds = time.perf_counter() - began
            print(
                f"[bench {number}/{self.total}] {description} ... done in {seconds:.1f}s",
                file=self.stream,
                flush=True,
            )

    def skip(self, steps: int, reason: str) -> None:
        """Advance past ``steps`` planned steps that will not run, saying why."""
        self.done += steps
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
            self._bar.console.print(f"bench: {reason}")
        else:
            print(f"[bench] {reason}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=self.total)
            self._bar.stop()
            self._bar = None
