"""Exact re-scoring of candidates: int8 short vectors, then full-dimension float16 vectors.

Scores are similarities, higher is better: inner product for cosine/ip, minus squared distance for l2.
Candidates are read in sorted row order a few queries at a time and scored with one batched matmul; the
int8 per-dimension scales are folded into the query instead of de-quantizing every candidate.
"""
from __future__ import annotations

import numpy as np

from matryoshka.core.codec import Int8Codec

from matryoshka.storage.row_store import RowStore

CHUNK_BYTES = 8 << 20  # float32 candidates scored at once: small blocks stay in cache and reuse memory


def _rescore(q: np.ndarray, cand: np.ndarray, store: RowStore, score_chunk) -> np.ndarray:
    nq, k = cand.shape
    out = np.full((nq, k), -np.inf, dtype=np.float32)
    step = max(1, CHUNK_BYTES // max(1, k * store.width * 4))
    for lo in range(0, nq, step):
        c = cand[lo:lo + step]
        if not (c >= 0).any():
            continue
        s = score_chunk(store.candidates(c), q[lo:lo + step])
        s[c < 0] = -np.inf
        out[lo:lo + step] = s
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
        return _rescore(q_short, cand, store, lambda x, q: _minus_sq_dist(codec.decode(x), q))

    def score(x, q):
        qs, const = codec.fold_query(q)
        return _dot(x.astype(np.float32), qs) + const[:, None]
    return _rescore(q_short, cand, store, score)


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
    return _rescore(q, cand, store, score)
