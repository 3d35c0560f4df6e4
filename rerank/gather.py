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

    def __init__(self, starts: np.ndarray, arrays: list[np.ndarray]):
        self.starts = np.asarray(starts, dtype=np.int64)
        self.arrays = arrays
        self.width = arrays[0].shape[1]

    def gather(self, gids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(block, inverse): block holds each distinct row once, read in sorted order; block[inverse] are the rows."""
        uniq, inverse = np.unique(gids, return_inverse=True)
        cuts = np.searchsorted(uniq, self.starts[1:])
        parts = [a[rows - s] for a, s, rows in zip(self.arrays, self.starts, np.split(uniq, cuts)) if len(rows)]
        block = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return block, inverse
