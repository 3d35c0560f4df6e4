"""The user's own embeddings (`.npy` or Parquet with `id` and `embedding`), optional queries and qrels.

Without a queries file the last `n_queries` rows are held out of the corpus and used as queries.
Qrels: whitespace/tab/comma-separated lines `query_id doc_id gain` (BEIR's TSV, header allowed) or
TREC's `query_id 0 doc_id gain`. Ids are the Parquet `id` values, or row numbers for `.npy`.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from matryoshka.indexing.sources import ParquetSource, npy_source
from matryoshka.storage.npy_writer import NpyAppender

from .data import Dataset, normalize

BLOCK = 65536


def _open(path: Path):
    if path.suffix == ".npy":
        return npy_source(path)
    return ParquetSource(path)


def _ids(src) -> list[str]:
    if getattr(src, "ids", None) is not None:
        return [str(i) for i in src.ids]
    if isinstance(src, ParquetSource):
        return [str(i) for b in src.batches(BLOCK) for i in b.ids.to_pylist()]
    return [str(i) for i in range(src.count)]


def read_qrels(path: Path, query_ids: list[str], doc_ids: list[str]) -> dict:
    """query row -> {doc row: gain}; lines naming unknown ids are skipped."""
    qrow = {q: i for i, q in enumerate(query_ids)}
    drow = {d: i for i, d in enumerate(doc_ids)}
    out: dict[int, dict[int, float]] = {}
    for line in Path(path).read_text().splitlines():
        parts = line.replace(",", " ").split()
        if len(parts) == 4:
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            continue
        q, d, g = parts
        try:
            gain = float(g)
        except ValueError:
            continue  # a header
        if q in qrow and d in drow and gain > 0:
            out.setdefault(qrow[q], {})[drow[d]] = gain
    return out


def embeddings_dataset(path: str | Path, workdir: Path, queries: str | Path | None = None,
                       qrels: str | Path | None = None, n_queries: int = 1000) -> Dataset:
    """Copy the vectors, normalized, into a float16 `.npy` in workdir (streamed) and pair them with queries."""
    path = Path(path)
    src = _open(path)
    doc_ids = _ids(src)
    hold = 0 if queries is not None else min(n_queries, src.count // 10)
    n = src.count - hold
    key = hashlib.sha256(f"{path.resolve()}:{path.stat().st_mtime_ns}:{hold}".encode()).hexdigest()[:12]
    out = Path(workdir) / f"user-{key}.f16.npy"
    held = []
    if not out.exists() or hold:
        w = NpyAppender(out.with_name(out.name + ".part"), src.dim, np.float16) if not out.exists() else None
        for b in src.batches(BLOCK):
            x = normalize(b.vectors)
            lo, hi = b.start, b.start + len(x)
            if w is not None and lo < n:
                w.append(x[: max(0, n - lo)])
            if hi > n:
                held.append(x[max(0, n - lo):])
        if w is not None:
            w.close()
            w.path.rename(out)
    if queries is not None:
        qsrc = _open(Path(queries))
        q = normalize(np.concatenate([b.vectors for b in qsrc.batches(BLOCK)]))
        query_ids = _ids(qsrc)
    else:
        q = np.concatenate(held).astype(np.float32)
        query_ids = doc_ids[n:]
    labels = read_qrels(Path(qrels), query_ids, doc_ids[:n]) if qrels else None
    meta = {"kind": "embeddings", "path": str(path), "queries": str(queries) if queries else f"last {hold} rows",
            "qrels": str(qrels) if qrels else None, "labelled_queries": len(labels or {})}
    return Dataset(f"user-{path.stem}", np.load(out, mmap_mode="r"), q, labels or None, out, meta)
