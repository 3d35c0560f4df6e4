"""Gathering candidate rows from per-shard memory-mapped matrices by global row id."""
from __future__ import annotations

import mmap

import numpy as np


def advise_random(arr: np.ndarray) -> None:
    """Tell the kernel not to read ahead on a memory map that is read at random rows."""
    m = getattr(arr, "_mmap", None)
    if m is not None and hasattr(mmap, "MADV_RANDOM"):
        m.madvise(mmap.MADV_RANDOM)


class RowStore:
    """One logical (N, w) matrix made of shards; shard s holds global rows starts[s] .. starts[s] + len - 1."""

    def __init__(self, starts: np.ndarray, arrays: list[np.ndarray], width: int, dtype):
        self.starts = np.asarray(starts, dtype=np.int64)
        self.arrays = arrays
        self.width, self.dtype = width, np.dtype(dtype)

    def take(self, gids: np.ndarray) -> np.ndarray:
        """Rows for global ids given in ascending order, read shard by shard (so the reads go forward)."""
        cuts = np.searchsorted(gids, self.starts[1:])
        parts = [a[rows - s] for a, s, rows in zip(self.arrays, self.starts, np.split(gids, cuts)) if len(rows)]
        if not parts:  # no rows asked for, or an index with no shards (every document deleted and compacted)
            return np.zeros((len(gids), self.width), self.dtype)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def candidates(self, cand: np.ndarray) -> np.ndarray:
        """(nq, k) global ids -> (nq, k, width) rows, read in sorted order; -1 entries get an arbitrary row."""
        flat = np.where(cand >= 0, cand, self.starts[0] if len(self.starts) else -1).ravel()
        order = np.argsort(flat, kind="stable")
        out = np.empty((len(flat), self.width), dtype=self.dtype)
        out[order] = self.take(flat[order])
        return out.reshape(*cand.shape, self.width)
