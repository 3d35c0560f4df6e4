"""Seconds spent per named step, for the build's statistics and each search's stage timings."""
from __future__ import annotations

import time


class StageTimer(dict):
    """A dict of step name -> seconds. `lap(name)` adds the time since the last lap (or `mark`) to `name`."""

    def __init__(self, seconds: dict[str, float] | None = None):
        super().__init__(seconds or {})
        self.mark()

    def mark(self) -> None:
        """Start timing the next step from now (time since the last lap is not counted)."""
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self[name] = self.get(name, 0.0) + now - self._t
        self._t = now
