"""Exact re-scoring of candidates: int8 short vectors, then full-dimension float16 vectors.

Scores are similarities, higher is better: inner product for cosine/ip, minus squared distance for l2.
Each batch's candidates are gathered once (sorted, de-duplicated rows) and scored with one einsum.
"""
from __future__ import annotations

import numpy as np

from indexing.int8_codec import Int8Codec

from .gather import RowStore

CHUNK_BYTES = 64 << 20  # bound on the float32 block scored at once


def _rescore(q: np.ndarray, cand: np.ndarray, store: RowStore, score_block) -> np.ndarray:
    nq, k = cand.shape
    out = np.full((nq, k), -np.inf, dtype=np.float32)
    per_query = max(1, k * store.width * 4)
    step = max(1, CHUNK_BYTES // per_query)
    for lo in range(0, nq, step):
        c = cand[lo:lo + step]
        valid = c >= 0
        if not valid.any():
            continue
        block, inverse = store.gather(c[valid])
        qrow = np.nonzero(valid)[0]
        out[lo:lo + step][valid] = score_block(block, inverse, q[lo:lo + step], qrow)
    return out


def int8_scores(q_short: np.ndarray, cand: np.ndarray, store: RowStore, codec: Int8Codec, metric: str) -> np.ndarray:
    """Score candidates against their int8 codes; for inner products the scales are folded into the query."""
    if metric == "l2":
        def score(block, inverse, q, qrow):
            x = codec.decode(block)[inverse]
            return -np.einsum("nd,nd->n", x - q[qrow], x - q[qrow])
    else:
        def score(block, inverse, q, qrow):
            qs, const = codec.fold_query(q)
            return np.einsum("nd,nd->n", block[inverse].astype(np.float32), qs[qrow]) + const[qrow]
    return _rescore(q_short, cand, store, score)


def full_scores(q: np.ndarray, cand: np.ndarray, store: RowStore, metric: str, dims: int | None = None) -> np.ndarray:
    """Score candidates against their full vectors, or against their first `dims` dims (a cheaper tier)."""
    if dims is not None:
        q = q[:, :dims]
        if metric == "cosine":
            q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)

    def score(block, inverse, qc, qrow):
        x = block[:, :dims].astype(np.float32) if dims is not None else block.astype(np.float32)
        if dims is not None and metric == "cosine":
            x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        x = x[inverse]
        if metric == "l2":
            diff = x - qc[qrow]
            return -np.einsum("nd,nd->n", diff, diff)
        return np.einsum("nd,nd->n", x, qc[qrow])
    return _rescore(q, cand, store, score)
