"""Filtered search: which rows pass a predicate over the attributes, as one bitmap the first pass selects with.

A predicate is a SQL boolean expression over the attribute columns, evaluated by DuckDB (which parses it and
names the column or position of an error), or a pyarrow compute expression (`pyarrow.compute.field("year")
>= 2020`), evaluated by pyarrow. The SQL grammar is a *row predicate*: DuckDB's expressions over one row's own
attributes, e.g.

    lang = 'en' AND year >= 2020          lang IN ('en', 'de')          NOT archived
    list_contains(tags, 'python')         published >= TIMESTAMP '2024-01-01'
    score BETWEEN 0.2 AND 0.8             lower(title) LIKE '%faiss%'   CASE WHEN a THEN b ELSE c END

Allowed: attribute names (case-sensitive, as stored), constants, comparisons, AND / OR / NOT, IN, BETWEEN,
LIKE, IS [NOT] NULL, casts, CASE, and DuckDB's deterministic scalar functions. Refused by name, before anything
runs: more than one statement, subqueries, window functions, aggregates, table functions and macros,
functions that read the session, settings or catalogue (`current_setting`, `duckdb_settings`, `version`, ...)
or that differ per call (`random`, `now`, ...): a filter is evaluated shard by shard, so anything but a
condition on each row's own values would mean something other than what it says. An evaluation that runs past
FILTER_SECONDS is stopped.

A row passes when the predicate is true (NULL counts as false) and the row is not deleted. A NaN attribute is
missing (NULL) on both paths: no comparison with it is true.
"""
from __future__ import annotations

import functools
import hashlib
import json
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
FILTER_SECONDS = 10.0  # an evaluation of one predicate over one shard's attributes is stopped after this
ROW_CLASSES = {"CONJUNCTION", "COMPARISON", "COLUMN_REF", "CONSTANT", "FUNCTION", "OPERATOR", "CAST", "CASE",
               "BETWEEN", "COLLATE", "TYPE"}  # TYPE: the type of a cast or typed literal
# scalar functions that read the session, settings or catalogue, or give another value per call
UNSTABLE = {"currval", "nextval", "getvariable", "version", "random", "setseed", "gen_random_uuid", "uuid",
            "uuidv4", "uuidv7", "now", "get_current_time", "get_current_timestamp", "transaction_timestamp",
            "today"}


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


@functools.lru_cache(maxsize=4)
def _functions(kind: str) -> frozenset[str]:
    """DuckDB's function names of one kind ('scalar', 'aggregate', ...)."""
    import duckdb
    con = duckdb.connect(config={"enable_external_access": False})
    try:
        names = con.execute("SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_type = ?", [kind])
        return frozenset(n for (n,) in names.fetchall())
    finally:
        con.close()


def _refuse(where: str, what: str) -> InputError:
    return InputError(f"where={where!r}: no {what} allowed: a filter is a condition on each row's own "
                      "attributes (see retrieval.filters for the grammar)")


@functools.lru_cache(maxsize=256)
def check_sql(where: str, columns: tuple[str, ...]) -> None:
    """Refuse, by name, what is not a row predicate over `columns` (the module's grammar); parsed, never run."""
    import duckdb
    con = duckdb.connect(config={"enable_external_access": False})
    try:
        tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [_wrapped(where)]).fetchone()[0])
    finally:
        con.close()
    if tree.get("error"):
        raise InputError(f"where={where!r}: {tree.get('error_message', 'not a SQL condition')} (attributes: "
                         f"{', '.join(columns)})")
    statements = tree["statements"]
    node = statements[0]["node"] if len(statements) == 1 else {}
    if len(statements) != 1 or node.get("type") != "SELECT_NODE" or len(node.get("select_list", [])) != 1 or \
            node.get("from_table", {}).get("table_name") != "attrs" or node.get("from_table", {}).get("type") != \
            "BASE_TABLE" or node.get("where_clause") or node.get("group_expressions") or node.get("having") or \
            node.get("qualify") or node.get("modifiers") or node.get("cte_map", {}).get("map"):
        raise _refuse(where, "several statements, clauses and table references")
    _check_expression(where, node["select_list"][0], set(columns))


def _check_expression(where: str, e, columns: set[str]) -> None:
    if isinstance(e, list):
        for x in e:
            _check_expression(where, x, columns)
        return
    if not isinstance(e, dict):
        return
    kind = e.get("class")
    if kind == "SUBQUERY":
        raise _refuse(where, "subqueries")
    if kind == "WINDOW":
        raise _refuse(where, f"window functions ({e.get('function_name')})")
    if kind is not None and kind not in ROW_CLASSES:
        raise _refuse(where, f"{kind.lower().replace('_', ' ')} expressions")
    if kind == "COLUMN_REF":
        names = e["column_names"]
        if len(names) != 1 or names[0] not in columns:
            near = [c for c in columns if c.lower() == names[-1].lower()]
            hint = f"; did you mean {near[0]!r}? names are case-sensitive" if near else ""
            raise InputError(f"where={where!r}: column \"{'.'.join(names)}\" not found: no such attribute{hint} "
                             f"(attributes: "
                             f"{', '.join(sorted(columns))})")
    if kind == "FUNCTION":
        name = e["function_name"].lower()
        if name in _functions("aggregate"):
            raise _refuse(where, f"aggregates ({e['function_name']})")
        if e.get("schema") or e.get("catalog") or name not in _functions("scalar") or name in UNSTABLE or \
                name.startswith(("current_", "duckdb_", "pg_", "pragma_")):
            raise _refuse(where, f"functions other than deterministic scalar ones ({e['function_name']})")
    for key, value in e.items():
        if isinstance(value, (dict, list)):
            _check_expression(where, value, columns)


def _wrapped(where: str) -> str:
    return f"SELECT coalesce(({where}\n), false) AS m FROM attrs"


def nan_as_null(table: pa.Table) -> pa.Table:
    """`table` with NaN in its float columns made NULL: one meaning of NaN on the SQL and pyarrow paths."""
    for i, f in enumerate(table.schema):
        if pa.types.is_floating(f.type):
            col = table.column(i)
            if pc.any(pc.is_nan(col)).as_py():
                table = table.set_column(i, f, pc.if_else(pc.is_nan(col), pa.scalar(None, f.type), col))
    return table


def row_mask(table: pa.Table, where, seconds: float = FILTER_SECONDS) -> np.ndarray:
    """A bool per row of `table`: the predicate is true (NULL is false); NaN attributes count as NULL."""
    table = nan_as_null(table)
    if isinstance(where, pc.Expression):
        try:
            col = ds.dataset(table).to_table(columns={"m": where}).column(0)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
            raise InputError(f"where={where}: {e} (attributes: {_columns(table)})") from None
    else:
        import duckdb

        check_sql(where, tuple(table.column_names))
        # no file or network access, so no extension loads: without ICU, time zones compare in UTC on every node
        con = duckdb.connect(config={"enable_external_access": False})
        timer = threading.Timer(seconds, con.interrupt)
        try:
            con.register("attrs", table)
            timer.start()
            col = con.sql(_wrapped(where)).to_arrow_table().column(0)
        except duckdb.InterruptException:
            raise InputError(f"where={where!r}: evaluating it took longer than {seconds:g} s; write a simpler "
                             "condition") from None
        except duckdb.Error as e:
            first = str(e).splitlines()[0]
            raise InputError(f"where={where!r}: {first} (attributes: {_columns(table)})") from None
        finally:
            timer.cancel()
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
