"""Filtered search: which rows pass a predicate over the attributes, as one bitmap the first pass selects with.

A predicate is a SQL boolean expression over the attribute columns, evaluated by DuckDB (which parses it and
names the column or position of an error), or a pyarrow compute expression (`pyarrow.compute.field("year")
>= 2020`), evaluated by pyarrow. Grammar: DuckDB's expressions, e.g.

    lang = 'en' AND year >= 2020          lang IN ('en', 'de')          NOT archived
    list_contains(tags, 'python')         published >= TIMESTAMP '2024-01-01'

A row passes when the predicate is true (NULL counts as false) and the row is not deleted.
"""
from __future__ import annotations

import hashlib
import pickle
import threading
from collections import OrderedDict

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from matryoshka.core.errors import InputError
from matryoshka.storage.shard_files import Shard
from matryoshka.storage.tombstones import rows_bitmap

MAX_CACHED = 16  # predicates whose bitmaps a shard group keeps


def key(where) -> str:
    """The cache key of a predicate; refuses what is not a predicate."""
    if isinstance(where, str):
        if not where.strip():
            raise InputError("where= is empty; give a condition such as \"lang = 'en'\" or leave it out")
        return "sql:" + where.strip()
    if isinstance(where, pc.Expression):  # str() shortens long value sets: key on the whole expression
        return "expr:" + hashlib.sha256(pickle.dumps(where)).hexdigest()
    raise InputError(f"where= takes a SQL condition (a string) or a pyarrow.compute expression; got "
                     f"{type(where).__name__}")


def row_mask(table: pa.Table, where) -> np.ndarray:
    """A bool per row of `table`: the predicate is true (NULL is false)."""
    if isinstance(where, pc.Expression):
        try:
            col = ds.dataset(table).to_table(columns={"m": where}).column(0)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
            raise InputError(f"where={where}: {e} (attributes: {_columns(table)})") from None
    else:
        import duckdb

        # no file or network access, so no extension loads: without ICU, time zones compare in UTC on every node
        con = duckdb.connect(config={"enable_external_access": False})
        try:
            con.register("attrs", table)
            col = con.sql(f"SELECT coalesce(({where}\n), false) AS m FROM attrs").to_arrow_table().column(0)
        except duckdb.Error as e:
            first = str(e).splitlines()[0]
            raise InputError(f"where={where!r}: {first} (attributes: {_columns(table)})") from None
        finally:
            con.close()
    if len(col) != table.num_rows:
        raise InputError(f"where={where!r} gives {len(col)} values for {table.num_rows} rows; write a condition on "
                         "each row's attributes (no aggregates or subqueries)")
    if not pa.types.is_boolean(col.type):
        raise InputError(f"where={where!r} gives {col.type} values, not true or false; write a condition such as "
                         "\"year >= 2020\"")
    return col.fill_null(False).to_numpy(zero_copy_only=False).astype(bool)


def _columns(table: pa.Table) -> str:
    return ", ".join(f"{f.name} {f.type}" for f in table.schema)


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
