"""Documents with metadata over an index folder: what the LangChain and LlamaIndex stores (and the server's
document calls) share.

A store may start empty (no folder yet: its dims come with the first vectors) and every change is an upsert by
id. Each document's metadata is kept whole as JSON (so it comes back exactly as given), and its scalar values
(strings, integers, floats, booleans, lists of strings; keys not starting with `_`) are also attribute
columns, so that filters (`where`, or the dict filters of `filter_sql`) can use them.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from matryoshka import indexing, retrieval
from matryoshka.core.errors import InputError
from matryoshka.core.layout import MANIFEST

log = logging.getLogger("matryoshka")

METADATA = "_metadata"  # the attribute column holding each document's metadata as JSON
RESERVED = ("id", "embedding", "text", METADATA)


def column(key: str) -> str:
    """The attribute column that holds metadata `key` (`meta_<key>` for names the index reserves)."""
    return f"meta_{key}" if key in RESERVED else key


@dataclass
class Doc:
    id: str
    text: str
    metadata: dict = field(default_factory=dict)
    score: float | None = None
    vector: np.ndarray | None = None


class DocumentStore:
    """Documents in the index folder `path` (created by the first add), searched through the engine's cascade.

    `build_options` go to `indexing.build` when the first add creates the index (its plan is fixed then:
    add the bulk of a corpus first, or rebuild it from the corpus once it grew), `open_options` to
    `retrieval.open_index`, `search_options` (k1, k2, nprobe, rerank...) to every search."""

    def __init__(self, path: str | os.PathLike, *, build_options: dict | None = None,
                 open_options: dict | None = None, search_options: dict | None = None):
        self.path = Path(path)
        self.build_options = {"quiet": True, **(build_options or {})}
        self.open_options = dict(open_options or {})
        self.search_options = dict(search_options or {})
        self._index: retrieval.Index | None = None
        self._lock = threading.Lock()  # one change at a time from this store

    @property
    def exists(self) -> bool:
        return (self.path / MANIFEST).exists()

    @property
    def index(self) -> retrieval.Index | None:
        """The open index (None while the store is empty and has no folder)."""
        if self._index is None and self.exists:
            self._index = retrieval.open_index(self.path, **self.open_options)
        return self._index

    @property
    def has_model(self) -> bool:
        """True when the index stores the model that made its vectors (it can encode texts itself)."""
        return self.index is not None and self.index.manifest["model"] is not None

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
        attrs = attribute_table(metadatas)
        with self._lock:
            if self.exists:
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
            indexing.delete(self.path, ids, missing_ok=True, quiet=True)
            self.index.reload()

    # -- reads ---------------------------------------------------------------------------------------------
    def get(self, ids: Sequence[str], vectors: bool = False) -> list[Doc]:
        """The stored documents with these ids, in the order given (ids not stored are left out)."""
        if not ids or self.index is None:
            return []
        return [_doc(r) for r in self.index.get([str(i) for i in ids], vectors=vectors)]

    def select(self, where, limit: int | None = None) -> list[Doc]:
        """The stored documents that pass `where` (SQL, or None: all of them), in row order, at most `limit`."""
        if self.index is None or self.index.live == 0:
            return []
        return [_doc(r) for r in self.index.get(where=where or "true", limit=limit)]

    def search(self, query, k: int, where=None, vectors: bool = False, **options) -> list[Doc]:
        """The k best documents for one query (a text, encoded by the index's model, or a vector), best first."""
        index = self.index
        if index is None or index.live == 0 or k <= 0:
            return []
        hits = index.search(query if isinstance(query, str) else np.asarray(query, np.float32), k=k, where=where,
                            **{**self.search_options, **options})
        records = index.records([h.row for h in hits], vectors=vectors)
        return [_doc(r, h.score) for r, h in zip(records, hits)]


    def rank(self, query, ids: Sequence[str], k: int, where=None) -> list[Doc]:
        """The k best of the documents `ids` (those passing `where`) for one query, scored exactly on their full
        vectors as the cascade's full-vector stage scores them."""
        docs = self.get(ids, vectors=True)
        if where is not None and docs:
            passing = {d.id for d in self.select(where)}
            docs = [d for d in docs if d.id in passing]
        if not docs or k <= 0:
            return []
        index = self.index
        x, _ = index.query_vectors(query if isinstance(query, str) else np.asarray(query, np.float32)[None, :])
        v = np.stack([d.vector for d in docs])
        scores = -((v - x[0]) ** 2).sum(1) if index.metric == "l2" else v @ x[0]
        order = np.argsort(-scores, kind="stable")[:k]
        return [Doc(docs[i].id, docs[i].text, docs[i].metadata, float(scores[i])) for i in order]


def _doc(r: retrieval.Record, score: float | None = None) -> Doc:
    attrs = dict(r.attributes)
    meta = json.loads(attrs.pop(METADATA)) if METADATA in attrs else attrs
    return Doc(str(r.id), r.text or "", meta, score, r.vector)


def attribute_table(metadatas: Sequence[dict]) -> pa.Table:
    """Metadata as attribute columns: the whole of each as JSON, and every key whose values are all of one
    filterable kind as a column of its own (named by `column`)."""
    cols: dict[str, Any] = {METADATA: pa.array([json.dumps(m, sort_keys=True, default=str) for m in metadatas])}
    keys = sorted({k for m in metadatas for k in m if isinstance(k, str) and not k.startswith("_")})
    for key in keys:
        values = [m.get(key) for m in metadatas]
        kinds = {_kind(v) for v in values if v is not None}
        if len(kinds) != 1 or None in kinds:
            if kinds - {None}:
                log.info("metadata %r is kept in the JSON only: its values are of mixed or unfilterable kinds", key)
            continue
        try:
            cols[column(key)] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            continue
    return pa.table(cols)


def _kind(v) -> str | None:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, str) for x in v):
        return "strings"
    return None


# -- dict filters -------------------------------------------------------------------------------------------
_OPS = {"$eq": "=", "$ne": "<>", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def filter_sql(f) -> str | None:
    """A metadata filter as the engine's SQL `where`: a SQL string as it is, or a dict such as
    {"genre": "poem", "year": {"$gte": 2000}, "$or": [{"lang": "en"}, {"lang": {"$in": ["fr", "de"]}}]}
    (keys are ANDed; operators $eq $ne $gt $gte $lt $lte $in $nin $and $or $not)."""
    if f is None or f == {}:
        return None
    if isinstance(f, str):
        return f
    if not isinstance(f, dict):
        raise InputError(f"a filter is a dict of metadata conditions or a SQL string; got {type(f).__name__}")
    parts = []
    for key, cond in f.items():
        if key in ("$and", "$or"):
            if not isinstance(cond, list) or not cond:
                raise InputError(f"{key} takes a non-empty list of filters; got {cond!r}")
            parts.append("(" + f" {key[1:].upper()} ".join(filter_sql(c) for c in cond) + ")")
        elif key == "$not":
            parts.append(f"NOT ({filter_sql(cond)})")
        elif key.startswith("$"):
            raise InputError(f"unknown filter operator {key!r}; use $and, $or, $not or a metadata key")
        else:
            parts.append(_condition(identifier(column(key)), cond))
    return " AND ".join(parts)


def _condition(col: str, cond) -> str:
    if not isinstance(cond, dict):
        return f"{col} = {literal(cond)}"
    parts = []
    for op, value in cond.items():
        if op in _OPS:
            parts.append(f"{col} {_OPS[op]} {literal(value)}")
        elif op in ("$in", "$nin"):
            if not isinstance(value, (list, tuple)) or not value:
                raise InputError(f"{op} takes a non-empty list of values; got {value!r}")
            parts.append(f"{col} {'NOT ' if op == '$nin' else ''}IN ({', '.join(literal(v) for v in value)})")
        else:
            raise InputError(f"unknown filter operator {op!r}; use one of {sorted(_OPS) + ['$in', '$nin']}")
    return " AND ".join(parts)


def identifier(name: str) -> str:
    """A column name quoted for SQL."""
    return '"' + name.replace('"', '""') + '"'


def literal(v) -> str:
    """A filter value as an SQL literal (strings quoted, only finite numbers and booleans besides)."""
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, (int, float)) and np.isfinite(v):
        return repr(v)
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    raise InputError(f"filter values are strings, numbers or booleans; got {v!r}")
