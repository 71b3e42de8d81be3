"""Progress bars for long steps (rich); CROPMAP_PROGRESS=0 turns them off."""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.text import Text


def progress_enabled() -> bool:
    return os.environ.get("CROPMAP_PROGRESS", "1") != "0"


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        return Text(f"{task.speed:,.0f} {self.unit}/s" if task.speed else f"- {self.unit}/s")


@contextlib.contextmanager
def progress_bar(description: str, total: int, unit: str | None = None) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; draws a bar with count (or rate of ``unit``), elapsed and remaining time."""
    if not progress_enabled():
        yield lambda n=1: None
        return
    count = _RateColumn(unit) if unit else MofNCompleteColumn()
    columns = (TextColumn("{task.description}"), BarColumn(), count, TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


@contextlib.contextmanager
def progress_counter(description: str) -> Iterator[Callable[[int, int], None]]:
    """Yield ``report(done, total)`` for producers that know the total only once they start."""
    if not progress_enabled():
        yield lambda done, total: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)
