"""Live queries kept for re-measuring an operating point: a fixed-size uniform sample of the query vectors a
handle searched (reservoir sampling), in memory only, kept only when asked (`open_index(sample_queries=N)`)."""
from __future__ import annotations

import threading

import numpy as np

from matryoshka.core.checks import integer


class Reservoir:
    """A uniform sample of at most `size` of the rows ever offered (Vitter's algorithm R, vectorised per batch)."""

    def __init__(self, size: int, dim: int, seed: int = 0):
        integer("sample_queries", size, 1, None)
        self.rows = np.zeros((size, dim), np.float32)
        self.seen = 0
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()

    def add(self, x: np.ndarray) -> None:
        """Offer a batch of query vectors."""
        with self._lock:
            size, n = len(self.rows), len(x)
            fill = max(0, min(n, size - self.seen))
            self.rows[self.seen:self.seen + fill] = x[:fill]
            if n > fill:  # each later row replaces a random slot with probability size / (its number)
                numbers = self.seen + np.arange(fill, n) + 1
                slots = (self._rng.random(n - fill) * numbers).astype(np.int64)
                keep = slots < size
                # later rows of the batch win a slot drawn twice, as if offered one at a time
                self.rows[slots[keep]] = x[fill:][keep]
            self.seen += n

    def sample(self) -> np.ndarray:
        """The rows kept now (a copy)."""
        with self._lock:
            return self.rows[:min(self.seen, len(self.rows))].copy()

    def __len__(self) -> int:
        return min(self.seen, len(self.rows))


def wilson(recall: float, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a share `recall` of `trials` (here: queries x 10 neighbours; the
    neighbours of one query are not independent, so it is a little narrow)."""
    if trials <= 0:
        return 0.0, 1.0
    centre = (recall + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * np.sqrt(recall * (1 - recall) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def stale(point: dict | None, generation: int | None) -> bool:
    """Whether `point` was measured on another generation of the index than `generation`."""
    return bool(point) and point.get("generation") is not None and generation is not None and \
        point["generation"] != generation
