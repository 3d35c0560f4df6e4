"""Stages 2 and 3: exact scores of first-pass candidates from the int8 short vectors, then the full vectors.

Scores are similarities, higher is better: inner product for cosine/ip, minus squared distance for l2.
Candidates are read a few queries at a time and scored with one batched matmul: int8 rows where they are asked
for (small, and kept in the page cache), full rows in ascending order (large, and often read from disk). The
int8 per-dimension scales are folded into the query instead of de-quantizing every candidate.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from matryoshka.core.codec import Int8Codec
from matryoshka.storage.row_store import RowStore

CHUNK_BYTES = 8 << 20  # float32 candidates scored at once: small blocks stay in cache and reuse memory
GATHER_BYTES = 32 << 20  # stored candidate rows read at once over many shards (a batch's, up to this)
# `_f32` hands torch read-only maps only to convert them into new tensors: nothing writes to the shared memory
warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)


@dataclass
class Stores:
    """What re-scoring reads: the int8 short vectors, their codec, and the float16 full vectors."""

    short: RowStore
    full: RowStore
    int8: Int8Codec
    metric: str


def exact_topk(stores: Stores, x: np.ndarray, rows: np.ndarray, k: int,
               block: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """The top k (full-vector scores, rows) among `rows` (sorted global rows) for every query: each block of
    rows is read once and scored for the whole batch. Exact, and cheap when the rows are few (a selective
    filter); -inf / -1 where fewer than k exist."""
    best_s = np.full((len(x), 0), -np.inf, np.float32)
    best_r = np.full((len(x), 0), -1, np.int64)
    for lo in range(0, len(rows), block):
        r = rows[lo:lo + block]
        m = _f32(stores.full.take(r))
        s = x @ m.T if stores.metric != "l2" else 2 * x @ m.T - (m * m).sum(1)[None, :] - (x * x).sum(1)[:, None]
        s = np.hstack([best_s, s.astype(np.float32)])
        cand = np.hstack([best_r, np.broadcast_to(r, (len(x), len(r)))])
        if s.shape[1] > k:
            part = np.argpartition(-s, k - 1, axis=1)[:, :k]
            s, cand = np.take_along_axis(s, part, 1), np.take_along_axis(cand, part, 1)
        best_s, best_r = s, cand
    order = np.lexsort((best_r, -best_s), axis=1)  # ties by lower row, as every merge breaks them
    best_s, best_r = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_r, order, 1)
    if best_s.shape[1] < k:
        pad = k - best_s.shape[1]
        best_s = np.hstack([best_s, np.full((len(x), pad), -np.inf, np.float32)])
        best_r = np.hstack([best_r, np.full((len(x), pad), -1, np.int64)])
    return best_s, best_r


def keep(cand: np.ndarray, stages: dict, key: str, depth: int):
    """Sort candidates by one stage's score and keep the best `depth`, carrying every stage's scores along."""
    order = np.argsort(-stages[key], axis=1, kind="stable")[:, :depth]
    at = (np.arange(len(order))[:, None], order)  # take_along_axis's index, made once for every array
    cand = cand[at]
    stages = {s: v[at] for s, v in stages.items()}
    invalid = ~np.isfinite(stages[key])
    cand[invalid] = -1
    return cand, stages


def _rescore(q: np.ndarray, cand: np.ndarray, store: RowStore, score_chunk, in_order: bool) -> np.ndarray:
    nq, k = cand.shape
    out = np.full((nq, k), -np.inf, dtype=np.float32)
    step = max(1, CHUNK_BYTES // max(1, k * store.width * 4))
    # over many shards rows are gathered for many chunks at once: one pass over the shards per GATHER_BYTES,
    # not per chunk (one shard: per chunk, whose rows are still in cache when they are scored)
    gather = step if len(store.starts) < 2 else \
        max(1, GATHER_BYTES // max(1, k * store.width * store.dtype.itemsize) // step) * step
    for glo in range(0, nq, gather):
        g = cand[glo:glo + gather]
        if not (g >= 0).any():
            continue
        rows = store.candidates(g, in_order)
        for lo in range(0, len(g), step):
            c = g[lo:lo + step]
            s = score_chunk(rows[lo:lo + step], q[glo + lo:glo + lo + step])
            s[c < 0] = -np.inf
            out[glo + lo:glo + lo + step] = s
    return out


def _f32(x: np.ndarray) -> np.ndarray:
    """float16 -> float32: torch's conversion uses the CPU's F16C instructions, numpy's here was 7x slower."""
    try:
        import torch
    except ImportError:
        return x.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(x)).float().numpy()


def _dot(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(n, k, d) . (n, d) -> (n, k), as one batched matrix-vector product."""
    return np.matmul(x, q[:, :, None])[..., 0]


def _minus_sq_dist(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    diff = x - q[:, None, :]
    return -np.einsum("nkd,nkd->nk", diff, diff)


def int8_scores(q_short: np.ndarray, cand: np.ndarray, store: RowStore, codec: Int8Codec, metric: str) -> np.ndarray:
    """Score candidates against their int8 codes."""
    if metric == "l2":
        return _rescore(q_short, cand, store, lambda x, q: _minus_sq_dist(codec.decode(x), q), False)

    return _rescore(q_short, cand, store, codec.inner_products, False)


def full_scores(q: np.ndarray, cand: np.ndarray, store: RowStore, metric: str, dims: int | None = None) -> np.ndarray:
    """Score candidates against their full vectors, or against their first `dims` dims (a cheaper tier)."""
    if dims is not None:
        q = q[:, :dims]
        if metric == "cosine":
            q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)

    def score(x, qc):
        x = _f32(x[..., :dims] if dims is not None else x)
        if dims is not None and metric == "cosine":
            x /= np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
        return _minus_sq_dist(x, qc) if metric == "l2" else _dot(x, qc)
    return _rescore(q, cand, store, score, True)
