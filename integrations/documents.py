"""Documents with metadata over an index folder, or over an index a server serves (a URL, or a handle from
`retrieval.open_index(URL)`): what the LangChain and LlamaIndex stores share.

A store may start empty (no folder yet: its dims come with the first vectors) and every change is an upsert by
id. Each document's metadata is kept whole as JSON (so it comes back as given, as JSON holds it), and its values
are also attribute columns, so that filters (`where`, or the dict filters of `filter_sql`) can use them:

- a key's column is named after the key (`column`); a key the index reserves (id, embedding, text), or one that
  is already such a name with `meta_` before it, gets one more `meta_` (`id` -> `meta_id`, `meta_id` ->
  `meta_meta_id`), so no two keys share a column. Keys starting with `_` and the empty key stay in the JSON only.
- a value's kind decides its column: the key's own column while the value fits its type (the kind the key
  first had; integers also go into a float column when exact), else a column of that kind,
  `_<kind>:<column>` (kinds int, float, bool, string, strings: a list of strings, and json for anything
  else, kept as JSON text). A key may so change kind from one document or call to the next, and stays
  filterable. An integer beyond int64 is refused by name; NaN counts as no value, as in the engine.
- a condition compares a value with values of its kind only (numbers with numbers, strings with strings,
  booleans with booleans; lists through list operators): a document whose value is missing, null, NaN or of
  another kind is unknown to it, as NULL is in SQL, and matches neither the condition nor its negation.
"""
from __future__ import annotations

import json
import math
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pyarrow as pa

from matryoshka import indexing, retrieval
from matryoshka.core.checks import integer
from matryoshka.core.errors import InputError
from matryoshka.core.layout import MANIFEST
from matryoshka.storage.attribute_schema import manifest_schema

if TYPE_CHECKING:
    from matryoshka.retrieval.remote import RemoteIndex

METADATA = "_metadata"  # the attribute column holding each document's metadata as JSON
RESERVED = ("id", "embedding", "text")  # names the index keeps for itself
ESCAPE = "meta_"
KINDS = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "string": pa.string(),
         "strings": pa.list_(pa.string()), "json": pa.string()}  # a value's kind: the type of its own column
NUMBERS = ("int", "float")
INT64 = (-2**63, 2**63 - 1)
PAGE = 1000  # records read per call by `select`


def column(key: str) -> str:
    """The attribute column that holds metadata `key`: the key itself, or `meta_<key>` for a key the index
    reserves and for one that already is such a name (`meta_id` -> `meta_meta_id`): one key, one column."""
    bare = key
    while bare.startswith(ESCAPE):
        bare = bare[len(ESCAPE):]
    return ESCAPE + key if bare in RESERVED else key


def kind_column(key: str, kind: str) -> str:
    """The column holding metadata `key`'s values of `kind` that its own column cannot hold."""
    return f"_{kind}:{column(key)}"


def filterable(key) -> bool:
    """True for a metadata key that has columns (a string, not empty, not starting with `_`)."""
    return isinstance(key, str) and key != "" and not key.startswith("_")


def value_kind(v) -> str | None:
    """The kind of a metadata value as JSON holds it (see `KINDS`); None for no value (None, NaN)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list) and all(x is None or isinstance(x, str) for x in v):
        return "strings"
    return "json"


def type_kind(t: pa.DataType) -> str | None:
    """The kind of the values a column of type `t` holds (None: a type metadata never makes, e.g. a date)."""
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_string(t.value_type):
        return "strings"
    return None


class Columns:
    """The attribute columns of a store's index ({name: type}) and which of them hold a metadata key's values.
    `types` None: untyped, every key read from its own column alone (a filter translated without an index)."""

    def __init__(self, types: dict[str, pa.DataType] | None):
        self.types = None if types is None else dict(types)

    @classmethod
    def of(cls, index: "retrieval.Index | None") -> "Columns":
        if index is None:
            return cls({})
        schema = manifest_schema(index.manifest.attributes)
        return cls({f.name: f.type for f in schema} if schema is not None else {})

    def holding(self, key: str, kinds: Sequence[str]) -> list[str]:
        """The columns holding `key`'s values of these kinds: its own column (if of one of them), then the
        kind columns."""
        own = column(key)
        if self.types is None:
            return [own]
        found = [own] if own in self.types and type_kind(self.types[own]) in kinds else []
        return found + [kind_column(key, k) for k in kinds if kind_column(key, k) in self.types]

    def all_of(self, key: str) -> list[str]:
        """Every column holding some value of `key`."""
        own = column(key)
        if self.types is None:
            return [own]
        return ([own] if own in self.types else []) + [kind_column(key, k) for k in KINDS
                                                       if kind_column(key, k) in self.types]

    def place(self, key: str, kind: str, v) -> str:
        """The column a value of `key` goes into (its type noted in `types`): the key's own column when the value
        fits it, else the column of its kind."""
        own = column(key)
        t = self.types.get(own)
        if t is not None and _fits(t, kind, v):
            return own
        name = kind_column(key, kind)
        self.types.setdefault(name, KINDS[kind])
        return name

    def claim(self, key: str, kinds: Sequence[str]) -> None:
        """Give a key new to the index its own column, of the first filterable kind among `kinds` (the key's
        values in document order; numbers as floats when there are floats among them)."""
        own, first = column(key), next((k for k in kinds if k != "json"), None)
        if own in self.types or first is None:
            return
        if first == "int" and "float" in kinds:
            first = "float"
        self.types[own] = KINDS[first]


def _fits(t: pa.DataType, kind: str, v) -> bool:
    """True when the value `v` of `kind` goes into a column of type `t` unchanged (the engine's rule, by value)."""
    have = type_kind(t)
    if kind == "json" or have is None:
        return False
    if have == "float" and kind == "int":  # where every integer is exact, as the engine's cast requires
        return abs(v) <= 2 ** (np.finfo(t.to_pandas_dtype()).nmant + 1)
    if have == "float" and kind == "float":  # when the column is as precise
        return math.isinf(v) or float(np.array(v, dtype=t.to_pandas_dtype())) == v
    if have == "int" and kind == "int":
        info = np.iinfo(t.to_pandas_dtype())
        return int(info.min) <= v <= int(info.max)
    return have == kind


@dataclass
class Doc:
    id: str
    text: str
    metadata: dict = field(default_factory=dict)
    score: float | None = None
    vector: np.ndarray | None = None
    row: int | None = None  # in the generation it was read from


class DocumentStore:
    """Documents in the index folder `path` (created by the first add), searched through the engine's cascade;
    or in the index a server serves at a URL, or behind a remote handle (`retrieval.open_index(URL)`), which on
    a server of many indexes the first add creates too.

    `build_options` go to `indexing.build` when the first add creates a local index (its plan is fixed then:
    add the bulk of a corpus first, or rebuild it from the corpus once it grew), `open_options` to
    `retrieval.open_index` (for a URL: token, timeout), `search_options` (k1, k2, nprobe, rerank...) to every
    search."""

    def __init__(self, path: str | os.PathLike | RemoteIndex, *, build_options: dict | None = None,
                 open_options: dict | None = None, search_options: dict | None = None):
        self.build_options = {"quiet": True, **(build_options or {})}
        self.open_options = dict(open_options or {})
        self.search_options = dict(search_options or {})
        self._index: retrieval.Index | RemoteIndex | None = None
        self.remote = _remote(path, self.open_options)
        self.path = None if self.remote is not None else Path(path)
        self._lock = threading.Lock()  # one change at a time from this store

    @property
    def exists(self) -> bool:
        return self.remote.exists if self.remote is not None else (self.path / MANIFEST).exists()

    @property
    def index(self) -> retrieval.Index | RemoteIndex | None:
        """The open index (None while the store is empty and has no index)."""
        if self._index is None and self.exists:
            self._index = self.remote or retrieval.open_index(self.path, **self.open_options)
        return self._index

    @property
    def has_model(self) -> bool:
        """True when the index stores the model that made its vectors (it can encode texts itself)."""
        return self.index is not None and self.index.manifest.model is not None

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None

    # -- changes -------------------------------------------------------------------------------------------
    def upsert(self, texts: Sequence[str], vectors, metadatas: Sequence[dict] | None = None,
               ids: Sequence[str | None] | None = None) -> list[str]:
        """Add documents, replacing those whose ids are already stored; ids left None get new UUIDs. `vectors`
        None: the index's own model encodes the texts. Returns the ids."""
        texts = list(texts)
        ids = [str(i) if i is not None else str(uuid.uuid4()) for i in (ids or [None] * len(texts))]
        metadatas = list(metadatas) if metadatas is not None else [{} for _ in texts]
        if not (len(ids) == len(texts) == len(metadatas)):
            raise InputError(f"{len(texts)} texts, {len(metadatas)} metadatas and {len(ids)} ids: give one of each "
                             "per document")
        if not texts:
            return []
        latest = {i: n for n, i in enumerate(ids)}  # an id given twice keeps its last document
        keep = sorted(latest.values())
        texts, metadatas, kept_ids = [texts[n] for n in keep], [metadatas[n] for n in keep], [ids[n] for n in keep]
        data = texts if vectors is None else np.asarray(vectors, dtype=np.float32)[keep]
        with self._lock:  # the columns of the generation this store last wrote or read (its changes reload);
            # another writer's newer ones, where they clash, make the engine refuse the add by name
            attrs = attribute_table(metadatas, Columns.of(self.index))
            if self.remote is not None:  # the server adds, or creates the index
                self.remote.upsert(data, ids=kept_ids, texts=None if vectors is None else texts, attributes=attrs)
            elif self.exists:
                indexing.add(self.path, data, ids=kept_ids, texts=texts, attributes=attrs, upsert=True, quiet=True)
                if self.index is not None:
                    self.index.reload()
            else:
                if vectors is None:
                    raise InputError("an empty store needs vectors for its first documents (or an embeddings "
                                     "model): its index does not exist yet")
                indexing.build(self.path, data, ids=kept_ids, texts=texts, attributes=attrs,
                               **self.build_options)
        return ids

    def delete(self, ids: Sequence[str]) -> None:
        """Delete documents by id; ids not stored are ignored."""
        ids = [str(i) for i in ids]
        if not ids or not self.exists:
            return
        with self._lock:
            if self.remote is not None:
                self.remote.delete(ids, missing_ok=True)
            else:
                indexing.delete(self.path, ids, missing_ok=True, quiet=True)
                self.index.reload()

    # -- reads ---------------------------------------------------------------------------------------------
    @property
    def columns(self) -> Columns:
        """The attribute columns of the open index, for filters (`filter_sql`)."""
        return Columns.of(self.index)

    def where(self, f) -> str | None:
        """A LangChain-style filter (a dict of metadata conditions, or an SQL string) as the engine's `where`."""
        return filter_sql(f, self.columns)

    def get(self, ids: Sequence[str], vectors: bool = False) -> list[Doc]:
        """The stored documents with these ids, in the order given (ids not stored are left out)."""
        if not ids or self.index is None:
            return []
        return [_doc(r) for r in self.index.get([str(i) for i in ids], vectors=vectors)]

    def select(self, where, limit: int | None = None) -> list[Doc]:
        """The stored documents that pass `where` (SQL, or None: all of them), in row order, at most `limit`
        (read a page at a time: a server answers a page per request)."""
        if self.index is None or self.index.live == 0:
            return []
        out: list[Doc] = []
        while limit is None or len(out) < limit:
            page = PAGE if limit is None else min(PAGE, limit - len(out))
            records = self.index.get(where=where or "true", limit=page, after=out[-1].row if out else None)
            out += [_doc(r) for r in records]
            if len(records) < page:
                break
        return out

    def search(self, query, k: int, where=None, vectors: bool = False, **options) -> list[Doc]:
        """The k best documents for one query (a text, encoded by the index's model, or a vector), best first."""
        k = integer("k", k)
        index = self.index
        if index is None or index.live == 0:
            return []
        hits = index.search(query if isinstance(query, str) else np.asarray(query, np.float32), k=k, where=where,
                            **{**self.search_options, **options})
        records = {r.id: r for r in index.get([h.id for h in hits], vectors=vectors)} if hits else {}
        return [_doc(records[h.id], h.score) for h in hits if h.id in records]  # one deleted meanwhile: left out


    def rank(self, query, ids: Sequence[str], k: int, where=None) -> list[Doc]:
        """The k best of the documents `ids` (those passing `where`) for one query, scored exactly on their full
        vectors as the cascade's full-vector stage scores them."""
        k = integer("k", k)
        docs = self.get(ids, vectors=True)
        if where is not None and docs:
            passing = {d.id for d in self.select(where)}
            docs = [d for d in docs if d.id in passing]
        if not docs:
            return []
        index = self.index
        x, _ = index.query_vectors(query if isinstance(query, str) else np.asarray(query, np.float32)[None, :])
        v = np.stack([d.vector for d in docs])
        scores = -((v - x[0]) ** 2).sum(1) if index.metric == "l2" else v @ x[0]
        order = np.argsort(-scores, kind="stable")[:k]
        return [Doc(docs[i].id, docs[i].text, docs[i].metadata, float(scores[i])) for i in order]


def _remote(target, open_options: dict) -> RemoteIndex | None:
    """The remote index `target` is (a URL, or a handle from `retrieval.open_index(URL)`); None for a folder."""
    if isinstance(target, str) and target.startswith(("http://", "https://")):
        return retrieval.open_index(target, must_exist=False, **open_options)
    if isinstance(target, (str, os.PathLike)):
        return None
    from matryoshka.retrieval.remote import RemoteIndex
    if not isinstance(target, RemoteIndex):
        raise InputError(f"a store takes an index folder, a URL or a remote handle (retrieval.open_index(URL)); "
                         f"got {type(target).__name__}")
    return target


def _doc(r: retrieval.Record, score: float | None = None) -> Doc:
    attrs = dict(r.attributes)
    stored = attrs.pop(METADATA, None)
    meta = json.loads(stored) if stored is not None else \
        {k: v for k, v in attrs.items() if not (k.startswith("_") and ":" in k)}  # a row added otherwise
    return Doc(str(r.id), r.text or "", meta, score, r.vector, r.row)


def attribute_table(metadatas: Sequence[dict], columns: Columns | None = None) -> pa.Table:
    """Metadata as attribute columns: the whole of each as JSON, and each value of a key in the column
    `columns.place` gives it (`columns`: the index's, None for a new index; updated with the new ones). The
    columns are filled from the metadata as JSON gives it back, so that filters see what the documents hold."""
    columns = Columns({}) if columns is None or columns.types is None else columns
    texts = [_json(m, i) for i, m in enumerate(metadatas)]
    found = [json.loads(t) for t in texts]
    before = dict(columns.types)
    values: dict[str, list] = {}
    for key in sorted({k for m in found for k in m if filterable(k)}):
        held = [(row, m[key], value_kind(m[key])) for row, m in enumerate(found) if value_kind(m.get(key))]
        for row, v, kind in held:
            if kind == "int" and not INT64[0] <= v <= INT64[1]:
                raise InputError(f"metadata {key!r} of document {row} is {v}, an integer beyond int64 (-2^63 .. "
                                 "2^63-1) that no column can hold; store it as a string or a float")
        columns.claim(key, [kind for _, _, kind in held])
        for row, v, kind in held:
            values.setdefault(columns.place(key, kind, v), [None] * len(found))[row] = \
                json.dumps(v, sort_keys=True) if kind == "json" else v
    _check_case(before, [name for name in values if name not in before])
    cols: dict[str, Any] = {METADATA: pa.array(texts, pa.string())}
    cols.update({name: pa.array(vals, columns.types[name]) for name, vals in values.items()})
    return pa.table(cols)


def _json(metadata, i: int) -> str:
    """The metadata of document `i` as JSON, or an InputError naming what JSON cannot keep."""
    if not isinstance(metadata, dict):
        raise InputError(f"the metadata of document {i} is a {type(metadata).__name__}; give a dict")
    bad = next((k for k in metadata if not isinstance(k, str)), None)
    if bad is not None:
        raise InputError(f"the metadata of document {i} has the key {bad!r}; metadata keys are strings (JSON "
                         "would turn it into one): convert it")
    try:
        return json.dumps(metadata, sort_keys=True, default=str)
    except (TypeError, ValueError) as e:
        raise InputError(f"the metadata of document {i} cannot be stored as JSON ({e}); give JSON-like values "
                         "(strings, numbers, booleans, None, lists and dicts with string keys)") from None


def _check_case(before: dict, new: list[str]) -> None:
    """Refuse new columns whose names differ only by case from another's (SQL cannot tell them apart)."""
    seen = {name.lower(): name for name in before}
    for name in new:
        other = seen.setdefault(name.lower(), name)
        if other != name:
            raise InputError(f"metadata keys {other.split(':', 1)[-1]!r} and {name.split(':', 1)[-1]!r} differ "
                             "only by case; filters could not tell their columns apart: rename one")


# -- filters -------------------------------------------------------------------------------------------------
_OPS = {"$eq": "=", "$ne": "<>", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def filter_sql(f, columns: Columns | None = None) -> str | None:
    """A metadata filter as the engine's SQL `where`: a SQL string as it is, or a dict such as
    {"genre": "poem", "year": {"$gte": 2000}, "$or": [{"lang": "en"}, {"lang": {"$in": ["fr", "de"]}}]}
    (keys are ANDed; operators $eq $ne $gt $gte $lt $lte $in $nin $and $or $not), over the store's `columns`
    (None: each key's own column alone, of whatever kind)."""
    if f is None or f == {}:
        return None
    if isinstance(f, str):
        return f
    return _dict_sql(f, columns if columns is not None else Columns(None))


def _dict_sql(f, columns: Columns) -> str:
    if not isinstance(f, dict) or not f:
        raise InputError(f"a filter is a non-empty dict of metadata conditions or a SQL string; got {f!r}")
    parts = []
    for key, cond in f.items():
        if key in ("$and", "$or"):
            if not isinstance(cond, list) or not cond:
                raise InputError(f"{key} takes a non-empty list of filters; got {cond!r}")
            parts.append("(" + f" {key[1:].upper()} ".join(f"({_dict_sql(c, columns)})" for c in cond) + ")")
        elif key == "$not":
            parts.append(f"NOT ({_dict_sql(cond, columns)})")
        elif isinstance(key, str) and key.startswith("$"):
            raise InputError(f"unknown filter operator {key!r}; use $and, $or, $not or a metadata key")
        else:
            parts.append(_condition(columns, key, cond))
    return " AND ".join(parts)


def _condition(columns: Columns, key, cond) -> str:
    if not isinstance(cond, dict):
        return compare(columns, key, "=", cond)
    if not cond:
        raise InputError(f"the condition on {key!r} is empty; give a value or operators such as {{'$gte': 2}}")
    parts = []
    for op, value in cond.items():
        if op in _OPS:
            parts.append(compare(columns, key, _OPS[op], value))
        elif op in ("$in", "$nin"):
            if not isinstance(value, (list, tuple)) or not value:
                raise InputError(f"{op} takes a non-empty list of values; got {value!r}")
            parts.append(member(columns, key, list(value), negate=op == "$nin"))
        else:
            raise InputError(f"unknown filter operator {op!r}; use one of {sorted(_OPS) + ['$in', '$nin']}")
    return " AND ".join(parts)


def checked_key(key) -> str:
    """`key` when a filter may name it, else an InputError."""
    if not filterable(key):
        raise InputError(f"metadata key {key!r} cannot be filtered: keys starting with '_' (and the empty key) "
                         "are kept in the metadata's JSON only; filter on another key")
    return key


def compare(columns: Columns, key, op: str, value) -> str:
    """SQL for `key op value` (op: = <> > >= < <=), which compares `value` with the key's values of its kind."""
    kinds = _kinds(value)
    return _either([_compare(c, columns, op, value) for c in columns.holding(checked_key(key), kinds)])


def member(columns: Columns, key, values: list, negate: bool = False) -> str:
    """SQL for `key IN values` (NOT IN when `negate`): a value is looked for among those of its kind."""
    checked_key(key)
    groups: dict[tuple, list] = {}
    for v in values:
        groups.setdefault(_kinds(v), []).append(v)
    parts = []
    for kinds, vs in groups.items():
        for c in columns.holding(key, kinds):
            exact = [x for x in vs if _exact(columns.types, c, x) is not None]
            parts.append(f"{identifier(c)} IN ({', '.join(literal(_exact(columns.types, c, x)) for x in exact)})"
                         if exact else f"({identifier(c)} <> {identifier(c)})")  # none can equal: false
    either = _either(parts)
    return f"NOT ({either})" if negate else either


def list_test(columns: Columns, key, values, every: bool) -> str:
    """SQL for: the key's list of strings holds any (every: all) of `values` (strings)."""
    values = [values] if isinstance(values, str) else values
    if not isinstance(values, (list, tuple)) or not values or not all(isinstance(v, str) for v in values):
        raise InputError(f"list conditions on {key!r} match lists of strings: give a string or a non-empty list "
                         f"of strings; got {values!r}")
    join = " AND " if every else " OR "
    return _either(["(" + join.join(f"list_contains({identifier(c)}, {literal(v)})" for v in values) + ")"
                    for c in columns.holding(checked_key(key), ("strings",))])


def text_test(columns: Columns, key, value, insensitive: bool = False) -> str:
    """SQL for: the key's string contains `value` (ignoring case when `insensitive`)."""
    if not isinstance(value, str):
        raise InputError(f"text matches on {key!r} take a string; got {value!r}")
    fold = "lower({})" if insensitive else "{}"
    return _either([f"contains({fold.format(identifier(c))}, {fold.format(literal(value))})"
                    for c in columns.holding(checked_key(key), ("string",))])


def empty_test(columns: Columns, key) -> str:
    """SQL for: the key has no value, null, NaN, an empty string or an empty list (true or false, never unknown)."""
    cols = columns.all_of(checked_key(key))
    if columns.types is None:
        return f"{identifier(cols[0])} IS NULL"
    kinds = {c: type_kind(columns.types[c]) if not c.startswith("_json:") else "json" for c in cols}
    held = [f"{identifier(c)} <> ''" if k == "string" else f"len({identifier(c)}) > 0" if k == "strings" else
            f"{identifier(c)} = {identifier(c)}" for c, k in kinds.items()]  # the last: true where there is a value
    return f"NOT COALESCE({', '.join(held + ['FALSE'])})"


def _either(parts: list[str]) -> str:
    """The one of `parts` that is not NULL (a document holds a key's value in one column at most); NULL: none."""
    if not parts:
        return "NULL"
    return parts[0] if len(parts) == 1 else f"COALESCE({', '.join(parts)})"


def _kinds(v) -> tuple[str, ...]:
    """The kinds of stored values a filter value compares with, or an InputError."""
    literal(v)
    return ("bool",) if isinstance(v, bool) else NUMBERS if isinstance(v, (int, float)) else ("string",)


def _exact(types: dict | None, c: str, v):
    """`v` as it compares exactly with column `c`'s values: an integral float as an integer against integers
    (a float literal would round them; one past int64 as the nearest integer past it, which compares the same
    and DuckDB can read), None where no value of the column can equal it."""
    have = type_kind(types[c]) if types is not None else None
    if have == "int" and isinstance(v, (int, float)) and not isinstance(v, bool):
        if isinstance(v, float) and not v.is_integer():
            return None
        return min(max(int(v), INT64[0] - 1), INT64[1] + 1)
    if have == "float" and isinstance(v, int) and not isinstance(v, bool) and _as_float(v) != v:
        return None
    return v


def _compare(c: str, columns: Columns, op: str, v) -> str:
    """SQL for `column op v`, exact where DuckDB would round: an integer past 2^53 against floats."""
    col, exact = identifier(c), _exact(columns.types, c, v)
    if exact is not None:
        return f"{col} {op} {literal(exact)}"
    if isinstance(v, float):  # a non-integral float against integers
        bound = math.floor(v) if op in (">", ">=", "=") else math.ceil(v)  # col > 2.5 is col > 2; = : none
        return {"=": f"({col} <> {col})", "<>": f"({col} = {col})"}.get(op, f"{col} {op[0]} {bound}")
    d = _as_float(v)  # the nearest float to v, which no float equals: each float is above or below v
    if op in ("=", "<>"):
        return f"({col} <> {col})" if op == "=" else f"({col} = {col})"
    up = d > v
    strict = {">": not up, ">=": not up, "<": up, "<=": up}[op]
    return f"{col} {op[0]}{'' if strict else '='} {literal(d)}"


def _as_float(v: int) -> float:
    try:
        return float(v)
    except OverflowError:
        raise InputError(f"filter value {v} is beyond the largest float; give a smaller number") from None


def identifier(name: str) -> str:
    """A column name quoted for SQL."""
    return '"' + name.replace('"', '""') + '"'


def literal(v) -> str:
    """A filter value as an SQL literal (strings quoted, only finite numbers and booleans besides)."""
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int) or (isinstance(v, float) and math.isfinite(v)):
        return repr(int(v) if isinstance(v, int) else v)
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    raise InputError(f"filter values are strings, numbers or booleans (finite numbers); got {v!r}")
