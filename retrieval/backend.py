"""Where an index's shards live and answer: the data primitives the cascade's stages (`retrieval.stages`) and
the tuner read through: candidates (first pass, exhaustive, lexical), the rows of a store scored where they
are, lookups of ids, texts and attributes.

Two implementations: `shard_group.ShardGroup`, every shard in this process, and
`distributed_search.RayBackend`, shard groups in Ray actors. Each call answers for every shard, merged;
shards that could not answer are added to `missing` (only a backend that allows partial results does so).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

from matryoshka.storage.manifest import Manifest
from matryoshka.storage.row_store import RowStore

if TYPE_CHECKING:
    from matryoshka.storage.device_store import DeviceRows

# re-scoring brought to the rows: (queries, candidate global rows with -1 for none, the store's rows, the device
# re-scoring runs on: None for numpy, else torch's) -> (n, k) scores in host memory
Scorer = Callable[[np.ndarray, np.ndarray, "RowStore | DeviceRows", str | None], np.ndarray]


class Backend(Protocol):
    def first_pass(self, short: np.ndarray, k: int, nprobe: int, assigned: tuple[np.ndarray, np.ndarray] | None,
                   missing: set | None = None, where=None) -> tuple[np.ndarray, np.ndarray]:
        """The top k (scores, global rows) of the first pass among rows passing `where` (see `filters`), best
        first; -inf / -1 where fewer exist."""

    def passing(self, where, missing: set | None = None) -> int:
        """How many live rows pass `where`."""

    def exhaustive(self, x: np.ndarray, k: int, where, missing: set | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The exact top k (full-vector scores, global rows) among the live rows passing `where` (None: all)."""

    def score(self, store: str, queries: np.ndarray, cand: np.ndarray, scorer: Scorer,
              missing: set | None = None) -> np.ndarray:
        """Scores of the candidates (global rows, -1 for none) by `scorer(queries, candidates, rows, device)` run
        where the rows of `store` ("int8" or "full") are; -inf for none. The stages bring the scoring, the
        backend the rows."""

    def lookup(self, rows: np.ndarray, texts: bool, missing: set | None = None) -> tuple[list, list | None]:
        """External ids (None where unknown) and, if asked, texts of a flat array of rows."""

    def find(self, ids, missing: set | None = None) -> np.ndarray:
        """The global row of each external id in `ids` (a pyarrow array of the index's id type); -1 where it is
        not a live document."""

    def attributes(self, rows: np.ndarray, missing: set | None = None) -> list[dict | None]:
        """The attribute values of each row of a flat array (None where unknown), null columns left out."""

    def lexical(self, texts: list[str], k: int, where=None, missing: set | None = None, syntax: bool = False
                ) -> tuple[np.ndarray, np.ndarray]:
        """The BM25 top k (scores, global rows) of each query text among the live rows passing `where`, best
        first, scored with index-wide statistics; -inf / -1 where fewer match. Texts are plain words, or
        tantivy's query language when `syntax`."""

    def select(self, where, missing: set | None = None) -> np.ndarray:
        """The live global rows that pass `where` (None: every live row), ascending."""

    def live_rows(self) -> np.ndarray:
        """The global rows not deleted, ascending."""

    def full_vectors(self, rows: np.ndarray) -> np.ndarray:
        """The float32 full vectors of sorted global rows."""

    def list_sizes(self) -> np.ndarray:
        """Codes per IVF list, over every shard (what a probe of each list scans)."""

    def reload(self, folder, manifest: Manifest, between_searches: Callable[[Callable[[], None]], None]) -> bool:
        """Move to generation `manifest` in place and return True, running the switch through
        `between_searches(switch)`; or return False at once, and the caller opens a new backend."""

    def id_map_bytes(self) -> int:
        """Bytes of external ids held in RAM by the backend."""

    def placement(self) -> dict:
        """Each store's tier and bytes (`storage.tiers`): {store: {"tier", "bytes"}}."""

    def store_reads(self) -> dict:
        """Device reads per store read from SSD since opening: {store: {reads, pages, rows}}."""

    def drop_page_cache(self) -> None:
        """Make every store not held in RAM cold: out of the page cache and of the backend's maps."""

    def close(self) -> None:
        """Release what the backend holds (workers, files)."""
