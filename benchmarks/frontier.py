"""The compression frontier: quality against bytes per vector over index dims, shortening and codes.

Every point is an exhaustive search in the compressed space (so it measures the code, not an IVF), scored
against the exact full-dim top-10. `recall_at_10` is the compressed ranking alone; `recall_at_10_rescored`
re-scores its top-100 with the full vectors, the way the engine's cascade would.
"""
from __future__ import annotations

import time

import faiss
import numpy as np

from matryoshka.indexing.transform import fit_pca, fit_prefix
from matryoshka.core.codec import Int8Codec

from .data import Dataset
from .metrics import Qrels, ndcg_at_10, recall

PQ_SIZES = (8, 16, 32, 64)
TRAIN = 20_000
PQ_TRAIN = 10_000  # faiss PQ k-means is slow on short sub-vectors; 39 points per centroid suffice
DEPTH = 100


def default_dims(dim: int, smallest: int = 32) -> list[int]:
    dims, d = [], smallest
    while d < dim:
        dims.append(d)
        d *= 2
    return dims + [dim]


def _codes(d: int, n_train: int) -> list[str]:
    out = ["float32", "int8"]
    if n_train >= 1000:  # 256 centroids per sub-quantizer need a few points each
        out += [f"PQ{m}" for m in PQ_SIZES if d % m == 0 and d // m >= 4]
    return out


def _encoded_index(code: str, short: np.ndarray, train: np.ndarray) -> tuple[faiss.Index, int]:
    """(index over the short vectors as `code` stores them, bytes per vector of the code)."""
    d = short.shape[1]
    if code == "float32":
        index, nbytes = faiss.IndexFlatIP(d), 4 * d
        index.add(short)
    elif code == "int8":
        codec = Int8Codec.fit(train)
        index, nbytes = faiss.IndexFlatIP(d), d
        index.add(codec.decode(codec.encode(short)))
    else:
        m = int(code[2:])
        index, nbytes = faiss.IndexPQ(d, m, 8, faiss.METRIC_INNER_PRODUCT), m
        index.do_polysemous_training = False
        index.train(train[:PQ_TRAIN])
        index.add(short)
    return index, nbytes


def _rescore(q: np.ndarray, cand: np.ndarray, docs: np.ndarray) -> np.ndarray:
    scores = np.einsum("qkd,qd->qk", docs[cand.clip(0)], q)
    scores[cand < 0] = -np.inf
    return np.take_along_axis(cand, np.argsort(-scores, axis=1), 1)


def sweep(ds: Dataset, truth: np.ndarray, qrels: Qrels | None, dims: list[int] | None = None,
          shortenings=("prefix", "pca"), n_queries: int = 500, seed: int = 0,
          codes: tuple[str, ...] | None = None) -> list[dict]:
    """One point per (shortening, index dim, code) on `ds` (keep it <= 200k vectors: it is held in RAM)."""
    docs = np.ascontiguousarray(ds.docs, dtype=np.float32)
    q = ds.queries[:n_queries]
    truth = truth[:n_queries]
    qrels = {k: v for k, v in (qrels or {}).items() if k < n_queries} or None
    rng = np.random.default_rng(seed)
    sample = docs[np.sort(rng.choice(len(docs), size=min(TRAIN, len(docs)), replace=False))]
    points = []
    for shortening in shortenings:
        for d in dims or default_dims(ds.dim):
            if shortening == "pca" and len(sample) < d:
                continue
            t = fit_prefix(ds.dim, d, "cosine") if shortening == "prefix" else fit_pca(sample, d)
            short, qs, train = t.apply(docs), t.apply(q), t.apply(sample)
            for code in [c for c in _codes(d, len(train)) if codes is None or c in codes]:
                t0 = time.perf_counter()
                index, nbytes = _encoded_index(code, short, train)
                _, cand = index.search(qs, min(DEPTH, len(docs)))
                re = _rescore(q, cand, docs)
                p = {"dataset": ds.name, "n": ds.n, "dim": ds.dim, "shortening": shortening, "index_dim": d,
                     "code": code, "bytes_per_vector": nbytes, "recall_at_10": recall(cand, truth, 10),
                     "recall_at_10_in_top_100": recall(cand, truth, 10, DEPTH),
                     "recall_at_10_rescored": recall(re, truth, 10), "seconds": time.perf_counter() - t0}
                if qrels:
                    p["ndcg_at_10"] = ndcg_at_10(cand, qrels)
                    p["ndcg_at_10_rescored"] = ndcg_at_10(re, qrels)
                points.append(p)
    return points


def seed_question(points: list[dict], code: str = "float32") -> list[dict]:
    """Projection minus prefix recall@10 at each index dim (the same code), per dataset."""
    out = []
    key = {(p["dataset"], p["shortening"], p["index_dim"], p["code"]): p for p in points}
    for (name, s, d, c), p in sorted(key.items()):
        if s == "prefix" and c == code and (name, "pca", d, c) in key:
            pca = key[(name, "pca", d, c)]
            row = {"dataset": name, "index_dim": d, "code": c, "prefix_recall_at_10": p["recall_at_10"],
                   "projection_recall_at_10": pca["recall_at_10"],
                   "projection_minus_prefix": pca["recall_at_10"] - p["recall_at_10"]}
            if "ndcg_at_10" in p:
                row["projection_minus_prefix_ndcg_at_10"] = pca["ndcg_at_10"] - p["ndcg_at_10"]
            out.append(row)
    return out


def smallest_surviving(points: list[dict], metric: str = "recall_at_10_rescored", floor: float = 0.98) -> dict | None:
    """The point with the fewest bytes per vector whose `metric` is at least `floor`."""
    ok = [p for p in points if p.get(metric, -1) >= floor]
    return min(ok, key=lambda p: (p["bytes_per_vector"], -p[metric])) if ok else None
