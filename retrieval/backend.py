"""Where an index's shards live and answer: the interface the cascade (`Index`) searches through.

Two implementations: `shard_group.ShardGroup`, every shard in this process, and
`distributed_search.RayBackend`, shard groups in Ray actors. Each call answers for every shard, merged;
shards that could not answer are added to `missing` (only a backend that allows partial results does so).
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from matryoshka.core.params import SearchParams


class Backend(Protocol):
    def first_pass(self, short: np.ndarray, k: int, nprobe: int, assigned: tuple[np.ndarray, np.ndarray] | None,
                   missing: set | None = None, where=None) -> tuple[np.ndarray, np.ndarray]:
        """The top k (scores, global rows) of the first pass among rows passing `where` (see `filters`), best
        first; -inf / -1 where fewer exist."""

    def passing(self, where, missing: set | None = None) -> int:
        """How many live rows pass `where`."""

    def exhaustive(self, x: np.ndarray, k: int, where, missing: set | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The exact top k (full-vector scores, global rows) among the rows passing `where`."""

    def rescore(self, x: np.ndarray, short: np.ndarray, cand: np.ndarray, params: SearchParams,
                missing: set | None = None) -> dict[str, np.ndarray]:
        """Scores of the candidates per re-scoring stage that `params` switches on (-inf for none)."""

    def lookup(self, rows: np.ndarray, texts: bool, missing: set | None = None) -> tuple[list, list | None]:
        """External ids (None where unknown) and, if asked, texts of a flat array of rows."""

    def id_map_bytes(self) -> int:
        """Bytes of external ids held in RAM by the backend."""

    def placement(self) -> dict:
        """Each store's tier (`storage.tiers`): where the codes, int8, full vectors and texts are read from."""

    def store_reads(self) -> dict:
        """Device reads per store read from SSD since opening: {store: {reads, pages, rows}}."""

    def drop_page_cache(self) -> None:
        """Make every store not held in RAM cold: out of the page cache and of the backend's maps."""

    def close(self) -> None:
        """Release what the backend holds (workers, files)."""
