"""The local backend: one or more shards of an index opened in this process, free of any distributed engine.

A group answers the first pass over its own shards, re-scores the candidates it owns (int8, then full
dims), and looks up external ids and texts of its rows. The single-process `Index` holds one group over
every shard; the Ray backend puts one group in each worker and merges their answers (see `backend`).
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faiss
import numpy as np

from matryoshka.core.codec import Codec
from matryoshka.core.errors import IndexFormatError
from matryoshka.storage.attribute_schema import manifest_schema
from matryoshka.storage.lexical import bm25, idf, query_terms, tokens_of
from matryoshka.storage.manifest import Manifest, read_manifest
from matryoshka.storage.pinned import PinnedFolder
from matryoshka.storage import tiers
from matryoshka.storage.row_store import RowStore, read_stats
from matryoshka.storage.shard_files import Shard, read_shared
from matryoshka.storage.tiers import SsdReads
from matryoshka.rerank.rescore import Stores, exact_topk

from .filters import PassingCache
from .backend import Scorer
from .first_pass import FirstPass, merge_topk


def _pin_same(root: Path, manifest: Manifest) -> PinnedFolder:
    """The folder at `root`, pinned, if it still holds the index `manifest` describes (a worker opening its
    shards after the driver must not open a newer index that an overwrite put there meanwhile)."""
    folder = PinnedFolder(root)
    if read_manifest(folder) != manifest:
        folder.close()
        raise IndexFormatError(f"{root} was replaced by another index while its shards were being opened; open "
                               "it again")
    return folder


LEXICAL_DECIMALS = 5  # BM25 scores are a few units: float32 noise from a shard's weighting sits far below this
LEXICAL_EXTRA = 10  # candidates beyond k (or k / 2, the more) each shard gives for scoring again


class ShardGroup:
    """Shards `numbers` of the index at `root` (all of them when None), opened for search.

    Implements `backend.Backend`; a group in this process always answers, so `missing` is never added to."""

    def __init__(self, root: PinnedFolder | str | Path, manifest: Manifest, numbers: list[int] | None = None, *,
                 device: str = "cpu", verify: bool = False, codec: Codec | None = None,
                 trained: faiss.Index | None = None, memory_budget: int | None = None,
                 ssd: SsdReads | None = None, previous: "ShardGroup | None" = None, gpu_budget: int | None = None,
                 rescore_device: str | None = None):
        """`previous`: the group of the generation before, whose unchanged shards (the same manifest record) and
        codes this one takes over instead of reading them again. `gpu_budget`: GPU memory the int8 store may
        take (`tiers.choose`). `rescore_device`: where re-scoring runs: None for numpy on the CPU (the faster
        there, benchmarks/results/rescore-device.json), "cpu" or "cuda" for torch; the default is "cuda" when
        the first pass runs on a GPU and torch sees one."""
        self.device, self.verify = device, verify
        folder = root if isinstance(root, PinnedFolder) else _pin_same(Path(root), manifest)
        m = manifest
        metas = [s for s in m.shards if numbers is None or s.number in set(numbers)]
        self.whole = numbers is None  # every shard: each candidate a stage is given is this group's own
        self.numbers = [s.number for s in metas]
        schema = manifest_schema(m.attributes)
        reusable = previous.reusable(schema, memory_budget, ssd, gpu_budget) if previous is not None else {}
        self.shards = [reusable.get(s.number) if reusable.get(s.number) is not None
                       and reusable[s.number].meta == s else
                       Shard(folder, s, m.full_dim, m.index_dim, m.has_text, deep=verify, attributes=schema,
                             codes=previous is None) for s in metas]
        taken = [s for s in self.shards if reusable.get(s.number) is s]
        if codec is None or trained is None:
            codec, trained = read_shared(folder, m)
        self.sizes = tiers.store_sizes(m, trained, metas, held=sum(s.held_bytes() for s in self.shards))
        gpu = gpu_budget is not None or device == "gpu"
        if gpu:  # torch takes 1.4 s to import: only an index opened for a GPU asks it anything
            from matryoshka.storage import device_store
        cuda = gpu and device_store.cuda_available()
        if gpu_budget is not None and not cuda:
            warnings.warn(tiers.NO_CUDA, stacklevel=3)
        self.tiers = tiers.choose(self.sizes, memory_budget, gpu_budget, cuda)
        if memory_budget is not None or gpu_budget is not None:
            if previous is not None and self.tiers != previous.tiers:  # a store changed tier: place every shard
                self.shards = [Shard(folder, s.meta, m.full_dim, m.index_dim, m.has_text, deep=verify,
                                     attributes=schema, codes=False) if s in taken else s for s in self.shards]
                taken = []
            for s in self.shards:
                if s not in taken:
                    s.place(folder, self.tiers, ssd or SsdReads())
        self.starts = np.array([s.id_start for s in self.shards], dtype=np.int64)
        self.ends = self.starts + np.array([s.count for s in self.shards], dtype=np.int64)
        self.stores = Stores(self._store("int8", "short", m.index_dim, np.int8),
                             self._store("full", "full", m.full_dim, np.float16), codec.int8, m.metric)
        held = self.tiers["int8"] in (tiers.GPU, tiers.PINNED)
        # a GPU or pinned tier is chosen only under a GPU memory budget, so device_store is imported here
        self.int8_rows = device_store.DeviceRows(self.stores.short, "cuda", pinned=self.tiers["int8"] == tiers.PINNED) \
            if held else None
        self.rescore_device = rescore_device or ("cuda" if device == "gpu" and cuda else None)
        self.first = FirstPass(trained, self.shards, m.metric, device,
                               previous=None if previous is None else previous.first,
                               read_codes=lambda s: s.read_codes(folder))
        if folder is not root:
            folder.close()
        self.filters = PassingCache(self.shards)
        self.budget, self.ssd, self.gpu_budget = memory_budget, ssd, gpu_budget
        self._given: set[int] = set()  # ids of shards a newer group took over (not closed with this one)
        if previous is not None:
            previous._given |= {id(s) for s in taken}

    def reusable(self, schema, memory_budget, ssd, gpu_budget=None) -> dict[int, Shard]:
        """This group's shards a group of a newer generation may take over as they are, by number: all of them
        when it opens with the same attribute columns and the same reads, none otherwise."""
        if self.shards and (self.shards[0].schema != schema or memory_budget != self.budget or ssd != self.ssd
                            or gpu_budget != self.gpu_budget):
            return {}
        return {s.number: s for s in self.shards}

    def _store(self, store: str, attr: str, width: int, dtype) -> RowStore:
        readers = [s.readers[store] for s in self.shards] if self.tiers[store] == tiers.SSD else None
        return RowStore(self.starts, [getattr(s, attr) for s in self.shards], width, dtype, readers,
                        [s.slots for s in self.shards])

    def placement(self) -> dict:
        """Each store's tier and bytes (`storage.tiers`), and where the stages that read it run:
        {store: {"tier", "bytes", "device"}}."""
        rescore = f"torch on {self.rescore_device}" if self.rescore_device else "numpy on the CPU"
        where = {"codes": "faiss on the GPU" if self.device == "gpu" else "faiss on the CPU", "int8": rescore,
                 "full": rescore, "texts": "the CPU"}
        return {s: {"tier": self.tiers[s], "bytes": self.sizes[s], "device": where[s]} for s in tiers.STORES}

    def drop_page_cache(self) -> None:
        """Make every store not held in RAM cold (`Shard.drop_page_cache`), the one view over every shard's rows
        (`row_view`) first: a page still mapped there would stay in the page cache."""
        for store in (self.stores.short, self.stores.full) if self.stores is not None else ():
            if store.view is not None:
                store.view.drop()
        for s in self.shards:
            s.drop_page_cache()

    def store_reads(self) -> dict:
        """Device reads issued by each store read from SSD since the group opened (see `row_reader`)."""
        if self.stores is None:
            return {}
        return {name: read_stats(store) for name, store in (("int8", self.stores.short), ("full", self.stores.full))
                if store.readers is not None}

    def live_rows(self) -> np.ndarray:
        """The global rows of this group's documents that are not deleted, in order."""
        return np.concatenate([np.arange(s.id_start, s.id_start + s.count)[~s.dead] if s.dead is not None else
                               np.arange(s.id_start, s.id_start + s.count) for s in self.shards] or
                              [np.zeros(0, np.int64)])

    def owns(self, rows: np.ndarray) -> np.ndarray:
        """A mask of the rows (global row ids) held by this group's shards."""
        if not len(self.starts):  # no shards: every document deleted and compacted away
            return np.zeros(np.shape(rows), bool)
        s = np.searchsorted(self.starts, rows, side="right") - 1
        s = np.clip(s, 0, len(self.starts) - 1)
        return (rows >= 0) & (rows >= self.starts[s]) & (rows < self.ends[s])

    def first_pass(self, short: np.ndarray, k: int, nprobe: int, assigned: tuple[np.ndarray, np.ndarray] | None,
                   missing: set | None = None, where=None) -> tuple[np.ndarray, np.ndarray]:
        """This group's top k (scores, global rows) for short query vectors, among rows passing `where`."""
        passing = self.filters.get(where) if where is not None else None  # holds the bitmap faiss reads
        return self.first.search(short, k, nprobe, assigned, passing.selector if passing is not None else None)

    def passing(self, where, missing: set | None = None) -> int:
        """How many of this group's live rows pass `where`."""
        return self.filters.get(where).count

    def exhaustive(self, x: np.ndarray, k: int, where, missing: set | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The exact top k (full-vector scores, global rows) among this group's live rows passing `where`
        (None: all of them)."""
        return exact_topk(self.stores, x, self.select(where), k)

    def select(self, where, missing: set | None = None) -> np.ndarray:
        """This group's live global rows that pass `where` (None: all of them), ascending."""
        return self.live_rows() if where is None else self.filters.get(where).global_rows

    def full_vectors(self, rows: np.ndarray) -> np.ndarray:
        """The float32 full vectors of sorted global rows; zeros for rows of other groups."""
        out = np.zeros((len(rows), self.stores.full.width), np.float32)
        mine = self.owns(rows)
        out[mine] = self.stores.full.take(rows[mine])
        return out

    def list_sizes(self) -> np.ndarray:
        """Codes per IVF list over this group's shards."""
        return self.first.list_sizes()

    def reload(self, folder, manifest: Manifest, between_searches) -> bool:
        """A local group does not move in place: the handle opens a new one beside it (False)."""
        return False

    def score(self, store: str, queries: np.ndarray, cand: np.ndarray, scorer: Scorer,
              missing: set | None = None) -> np.ndarray:
        """`scorer(queries, candidates, rows, device)` over the candidates this group owns in `store` ("int8" or
        "full"), on this group's re-scoring device; -inf elsewhere."""
        rows = (self.int8_rows or self.stores.short) if store == "int8" else self.stores.full
        return scorer(queries, cand if self.whole else np.where(self.owns(cand), cand, -1), rows,
                      self.rescore_device)

    def lookup(self, rows: np.ndarray, texts: bool, missing: set | None = None) -> tuple[list, list | None]:
        """External ids (None where not owned) and texts ('' where not owned) of a flat array of rows."""
        ids = np.full(len(rows), None, object)
        out_texts = np.full(len(rows), "", object) if texts else None
        for s, pos in self._by_shard(rows):
            local = rows[pos] - self.starts[s]
            ids[pos] = _objects(self.shards[s].external_ids(local))
            if texts:
                out_texts[pos] = _objects(self.shards[s].texts(local))
        return ids.tolist(), None if out_texts is None else out_texts.tolist()

    def _by_shard(self, rows: np.ndarray):
        """(shard position, positions in `rows` of its rows) for every shard of this group that `rows` touch."""
        valid = np.flatnonzero(self.owns(rows))
        if len(self.shards) == 1:
            if len(valid):
                yield 0, valid
            return
        shard_of = np.searchsorted(self.starts, rows[valid], side="right") - 1
        order = np.argsort(shard_of, kind="stable")
        bounds = np.searchsorted(shard_of[order], np.arange(len(self.shards) + 1))
        for s in np.flatnonzero(np.diff(bounds)):
            yield s, valid[order[bounds[s]:bounds[s + 1]]]

    def lexical_stats(self, terms: list[str], missing: set | None = None) -> tuple[int, dict[str, int], float]:
        """(live rows, live rows holding each term, tokens of the live rows' texts) over this group's shards: its
        part of the index-wide BM25 statistics."""
        docs, freq, tokens = 0, dict.fromkeys(terms, 0), 0.0
        for s in self.shards:
            ix = s.lexical_index()
            n, f = ix.stats(terms)
            docs, tokens = docs + n, tokens + ix.tokens - _dead_tokens(s)
            for t, c in f.items():
                freq[t] += c
        return docs, freq, tokens

    def lexical(self, texts: list[str], k: int, where=None, missing: set | None = None, syntax: bool = False,
                stats: tuple[int, dict[str, int], float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The BM25 top k (scores, global rows) of each query text over this group's live rows passing `where`;
        -inf / -1 where fewer match. Texts are plain words (`syntax`: tantivy's query language), weighted by
        index-wide `stats` (`lexical_stats` summed over every group; this group's own when None). Where a shard's
        own statistics differ from the index's (several shards, deleted rows, or other groups), each shard's
        best candidates are scored again from their texts with the index-wide ones (`lexical.bm25`)."""
        if not len(self.shards):
            return np.full((len(texts), k), -np.inf, np.float32), np.full((len(texts), k), -1, np.int64)
        again = not syntax and (len(self.shards) > 1 or stats is not None or
                                any(s.dead is not None for s in self.shards))
        fetch = k + max(LEXICAL_EXTRA, k // 2) if again else k
        passing = None if where is None else self.filters.get(where).rows  # per shard: local passing rows
        scores = np.full((len(self.shards), len(texts), fetch), -np.inf, np.float32)
        rows = np.full((len(self.shards), len(texts), fetch), -1, np.int64)

        indexes = [s.lexical_index() for s in self.shards]
        # a filter's rows per shard, turned into a BM25 filter once for every query of the batch
        only = [ix.only(rows) for ix, rows in zip(indexes, passing)] if passing is not None else [None] * len(indexes)
        terms = [query_terms(t) for t in texts] if not syntax else None
        if terms is not None:
            docs, freq, tokens = stats or self.lexical_stats(sorted({t for q in terms for t in q}))
            weights = {t: idf(docs, f) if f else 0.0 for t, f in freq.items()}

        def one(task):
            i, q = task
            hs, hr = (indexes[i].search_syntax(texts[q], fetch, only[i]) if syntax else
                      indexes[i].search(terms[q], fetch, only[i], weights))
            # rounded: equal BM25 scores from differently weighted shards tie exactly, and break by the lower row
            scores[i, q, :len(hs)], rows[i, q, :len(hr)] = np.round(hs, LEXICAL_DECIMALS), hr + self.starts[i]
        tasks = [(i, q) for i in range(len(self.shards)) for q in range(len(texts))]
        if len(tasks) > 1:  # tantivy releases the GIL while it searches: one query per core at once
            with ThreadPoolExecutor(min(len(tasks), os.cpu_count() or 1)) as pool:
                list(pool.map(one, tasks))
        elif tasks:
            one(tasks[0])
        best_s, best_r = merge_topk(list(scores), list(rows), fetch)
        if not again:
            return best_s, best_r
        return self._bm25_again(best_r, terms, weights, tokens / max(docs, 1), k)

    def _bm25_again(self, rows: np.ndarray, terms: list, weights: dict, avgdl: float, k: int
                    ) -> tuple[np.ndarray, np.ndarray]:
        """The top k of candidate rows scored from their texts with the index-wide BM25 statistics."""
        text = np.full(rows.size, None, object)
        flat = rows.ravel()
        for s, pos in self._by_shard(flat):
            text[pos] = _objects(self.shards[s].texts(flat[pos] - self.starts[s]))
        text = text.reshape(rows.shape)
        scores = np.full(rows.shape, -np.inf, np.float32)
        for q, i in zip(*np.nonzero(rows >= 0)):
            scores[q, i] = bm25(terms[q], text[q, i], weights, avgdl)
        scores[scores <= 0] = -np.inf
        return merge_topk([np.round(scores, LEXICAL_DECIMALS)], [np.where(np.isfinite(scores), rows, -1)], k)

    def find(self, ids, missing: set | None = None) -> np.ndarray:
        """The global row of each external id (-1 where not live here); see `Backend.find`."""
        rows = np.full(len(ids), -1, np.int64)
        for start, shard in zip(self.starts, self.shards):
            pos, local = shard.find(ids)
            rows[pos] = local + start
        return rows

    def attributes(self, rows: np.ndarray, missing: set | None = None) -> list[dict | None]:
        """Attribute values of a flat array of rows (None where not owned)."""
        out = np.full(len(rows), None, object)
        for s, pos in self._by_shard(rows):
            out[pos] = _objects(self.shards[s].attributes(rows[pos] - self.starts[s]))
        return out.tolist()

    def id_map_bytes(self) -> int:
        """Bytes of external ids held in RAM (none for shards whose ids are their row numbers)."""
        return sum(s.ids.nbytes for s in self.shards if s.ids is not None)

    def close(self) -> None:
        """Drop every shard, store and cached filter: their memory maps unmap as the last references go."""
        for s in self.shards:
            if id(s) not in self._given:
                s.close()
        self.shards, self.stores, self.first, self.filters = [], None, None, None


def _objects(values: list) -> np.ndarray:
    """A list as a 1-d object array, its items as they are (numpy would make strings or dicts an array)."""
    out = np.empty(len(values), object)
    out[:] = values
    return out


def _dead_tokens(shard: Shard) -> int:
    """Tokens of a shard's deleted rows' texts, counted once per opened shard (its lexical index counts them)."""
    if shard.dead is None:
        return 0
    if getattr(shard, "_dead_tokens", None) is None:
        shard._dead_tokens = sum(tokens_of(t) for t in shard.texts(np.flatnonzero(shard.dead)))
    return shard._dead_tokens
