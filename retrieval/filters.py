"""Filtered search: which rows pass a predicate over the attributes, as one bitmap the first pass selects with.

The predicates themselves (the SQL grammar, its checks, pyarrow expressions, `row_mask`) are
`matryoshka.storage.predicates`, below both the search and the changes (a delete by condition evaluates them
too); dict filters compile into that grammar (`matryoshka.storage.dict_filters`).
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import faiss
import numpy as np
import pyarrow.compute as pc

from matryoshka.core.errors import InputError
from matryoshka.storage.predicates import key, nan_as_null, row_mask  # noqa: F401 - also this module's API
from matryoshka.storage.shard_files import Shard
from matryoshka.storage.tombstones import rows_bitmap

MAX_CACHED = 16  # predicates whose bitmaps a shard group keeps


class Passing:
    """The rows of `shards` that pass `where` and are not deleted: a count, and a selector over global rows."""

    def __init__(self, shards: list[Shard], where):
        if any(s.attrs is None for s in shards):
            raise InputError("this index stores no attributes, so it cannot filter; build it with attribute "
                             "columns (extra Parquet columns, or attributes=)")
        self.rows = []  # per shard: passing local rows
        for s in shards:
            mask = row_mask(s.attrs, where)
            if s.dead is not None:
                mask &= ~s.dead
            self.rows.append(np.flatnonzero(mask))
        self.count = int(sum(len(r) for r in self.rows))
        self.starts = [s.id_start for s in shards]
        self.bitmap = rows_bitmap(self.global_rows, max((s.id_start + s.count for s in shards), default=0))
        self.selector = faiss.IDSelectorBitmap(len(self.bitmap), faiss.swig_ptr(self.bitmap))  # reads self.bitmap

    @property
    def global_rows(self) -> np.ndarray:
        """The passing rows as global rows, in order (for the exhaustive path)."""
        return np.concatenate([r + s for r, s in zip(self.rows, self.starts)] or [np.zeros(0, np.int64)])


class PassingCache:
    """`Passing` per predicate, the most recent MAX_CACHED kept: evaluated once, not per query batch."""

    def __init__(self, shards: list[Shard]):
        self.shards, self.cache, self.lock = shards, OrderedDict(), threading.Lock()

    def get(self, where) -> Passing:
        k = key(where)
        with self.lock:
            if k in self.cache:
                self.cache.move_to_end(k)
                return self.cache[k]
        passing = Passing(self.shards, where)  # outside the lock: other predicates need not wait
        with self.lock:
            self.cache[k] = passing
            if len(self.cache) > MAX_CACHED:
                self.cache.popitem(last=False)
        return passing


def by_predicate(where, n: int) -> list[tuple[object, np.ndarray]]:
    """(predicate, query rows) groups: one predicate (or None) for all n queries, or one per query."""
    if where is None or isinstance(where, (str, pc.Expression)):
        if where is not None:
            key(where)  # refuses an empty or non-UTF-8 condition before any search
        return [(where, np.arange(n))]
    if not isinstance(where, (list, tuple)):
        key(where)  # refuses it, naming what a predicate is
    where = list(where)
    if len(where) != n:
        raise InputError(f"where= has {len(where)} predicates for {n} queries; give one per query, or one for all")
    groups: dict = {}
    for i, w in enumerate(where):
        groups.setdefault(None if w is None else key(w), (w, []))[1].append(i)
    return [(w, np.array(rows)) for w, rows in groups.values()]
