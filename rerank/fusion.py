"""Fusing a dense and a lexical candidate list: the scores a hybrid search orders its candidates by.

Both inputs are (queries, candidates) score arrays over the same candidates, -inf where a list lacks the
candidate. Reciprocal-rank fusion (Cormack et al., 2009) adds 1 / (RRF_K + rank) from each list; the
weighted sum adds per-query min-max normalized scores. Either way the lexical side is multiplied by `weight`
and a list that lacks a candidate adds nothing.
"""
from __future__ import annotations

import numpy as np

RRF_K = 60


def _ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of each score within its row (ties in column order); inf where the score is -inf."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, scores.shape[1] + 1)[None, :].repeat(len(scores), 0), 1)
    return np.where(np.isfinite(scores), ranks, np.inf)


def _minmax(scores: np.ndarray) -> np.ndarray:
    finite = np.isfinite(scores)
    lo = np.where(finite, scores, np.inf).min(1, keepdims=True)
    hi = np.where(finite, scores, -np.inf).max(1, keepdims=True)
    span = np.where(hi > lo, hi - lo, 1.0)
    norm = np.where(hi > lo, (scores - lo) / span, 1.0)  # a list of one score (or equal ones): each is its best
    return np.where(finite, norm, 0.0)


def fuse(dense: np.ndarray, lexical: np.ndarray, how: str = "rrf", weight: float = 1.0) -> np.ndarray:
    """Fused scores (higher is better; -inf where neither list has the candidate)."""
    if how == "rrf":
        fused = 1.0 / (RRF_K + _ranks(dense)) + weight / (RRF_K + _ranks(lexical))
    elif how == "weighted":
        fused = _minmax(dense) + weight * _minmax(lexical)
    else:
        raise ValueError(f"unknown fusion {how!r}")
    present = np.isfinite(dense) | np.isfinite(lexical)
    return np.where(present, fused, -np.inf).astype(np.float32)


def union(cand: np.ndarray, stages: dict, rows: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, dict]:
    """The candidates with the lexical list's rows appended where they are new, and every stage's scores
    padded (-inf) to match; the lexical scores become the stage "lexical"."""
    nq, k = cand.shape
    extra = np.where(rows >= 0, rows, -1)
    lex = np.full((nq, k + rows.shape[1]), -np.inf, np.float32)
    for i in range(nq):
        valid = extra[i] >= 0
        pos = {int(r): j for j, r in enumerate(cand[i]) if r >= 0}
        for j in np.flatnonzero(valid):
            r = int(extra[i, j])
            if r in pos:  # already a candidate: its lexical score goes on its column
                lex[i, pos[r]] = scores[i, j]
                extra[i, j] = -1
            else:
                lex[i, k + j] = scores[i, j]
    out = np.hstack([cand, extra])
    padded = {s: np.hstack([v, np.full(rows.shape, -np.inf, np.float32)]) for s, v in stages.items()}
    padded["lexical"] = lex
    return out, padded
