"""The fixed time grid that composites are made on: ``steps`` periods of ``period_days`` from ``start``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class TimeGrid:
    start: dt.date
    period_days: int
    steps: int

    @classmethod
    def covering(cls, dates: Sequence[dt.date], period_days: int = 10) -> "TimeGrid":
        """Grid anchored on January 1 of the first date's year, so that steps line up across scenes."""
        if period_days < 1:
            raise ValueError(f"period must be at least 1 day, got {period_days}")
        first, last = min(dates), max(dates)
        jan1 = dt.date(first.year, 1, 1)
        start = jan1 + dt.timedelta(days=((first - jan1).days // period_days) * period_days)
        steps = (last - start).days // period_days + 1
        return cls(start, period_days, steps)

    def step_of(self, d: dt.date) -> int:
        """Index of the step holding ``d`` (may fall outside ``0 .. steps-1``)."""
        return (d - self.start).days // self.period_days

    @property
    def centres(self) -> list[dt.date]:
        half = self.period_days // 2
        return [self.start + dt.timedelta(days=i * self.period_days + half) for i in range(self.steps)]

    @property
    def day_of_year(self) -> np.ndarray:
        """``[T]`` day of year (1..366) of each step's centre: the model's notion of time."""
        return np.array([c.timetuple().tm_yday for c in self.centres], dtype=np.int16)

    def in_year(self, year: int) -> "TimeGrid":
        """The same grid moved to another year (a model trained on 2023 applied to 2024)."""
        try:
            start = self.start.replace(year=year)
        except ValueError:  # Feb 29
            start = dt.date(year, 2, 28)
        return TimeGrid(start, self.period_days, self.steps)

    def to_dict(self) -> dict:
        return {"start": self.start.isoformat(), "period_days": self.period_days, "steps": self.steps}

    @classmethod
    def from_dict(cls, d: dict) -> "TimeGrid":
        return cls(dt.date.fromisoformat(d["start"]), int(d["period_days"]), int(d["steps"]))
