"""Fitting the shortening to the index dim on a training sample: a Matryoshka prefix or a fixed linear
projection (`auto` measures both). The fitted transform is a `matryoshka.core.codec.ShortTransform`."""
from __future__ import annotations

import faiss
import numpy as np

from matryoshka.core.codec import ShortTransform
from matryoshka.core.errors import InputError

from .options import TRANSFORMS as KINDS


def random_rotation(dim: int, seed: int = 0) -> np.ndarray:
    """A fixed random orthogonal (dim, dim) matrix."""
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return np.ascontiguousarray(q * np.sign(np.diag(r)), dtype=np.float32)


def fit_prefix(full_dim: int, dim: int, metric: str) -> ShortTransform:
    # A prefix of a unit vector is not a unit vector: re-normalize so cosine stays cosine.
    return ShortTransform("prefix", full_dim, dim, renormalize=(metric == "cosine"), rotation=random_rotation(dim))


def fit_pca(sample: np.ndarray, dim: int) -> ShortTransform:
    """Top-d eigenvectors of the uncentred second moment: the rank-d map that best keeps inner products."""
    n, full_dim = sample.shape
    cov = np.zeros((full_dim, full_dim), dtype=np.float64)
    for lo in range(0, n, 16384):  # float64 accumulation, one block at a time
        block = sample[lo:lo + 16384].astype(np.float64)
        cov += block.T @ block
    cov /= n
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1][:dim]
    matrix = np.ascontiguousarray(evecs[:, order] @ random_rotation(dim), dtype=np.float32)
    # No re-normalization: the projected inner product is already the best estimate of the full one.
    return ShortTransform("pca", full_dim, dim, renormalize=False, matrix=matrix)


def neighbour_retention(sample: np.ndarray, t: ShortTransform, metric: str, nq: int = 256, k: int = 10) -> float:
    """Fraction of each sample query's exact full-dim top-k that stays in its top-k in the short space."""
    nq = min(nq, len(sample) // 2)
    if nq < 1 or len(sample) - nq < k:
        return float("nan")
    q, db = sample[:nq], sample[nq:]
    mt = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    _, exact = faiss.knn(q, db, k, metric=mt)
    _, short = faiss.knn(t.apply(q), t.apply(db), k, metric=mt)
    hits = sum(len(np.intersect1d(a, b)) for a, b in zip(exact, short))
    return hits / (nq * k)


def fit_transform(kind: str, sample: np.ndarray, dim: int, metric: str) -> tuple[ShortTransform, dict]:
    """Fit the requested shortening on the sample; `auto` fits both and keeps the one that keeps more neighbours."""
    if kind not in KINDS:
        raise InputError(f"unknown transform {kind!r}; choose one of {', '.join(KINDS)}")
    full_dim = sample.shape[1]
    if not 1 <= dim <= full_dim:
        raise InputError(f"index dim {dim} must be between 1 and the full dim {full_dim}")
    if kind == "pca" or kind == "auto":
        if len(sample) < dim:
            if kind == "pca":
                raise InputError(f"a {dim}-dim projection needs at least {dim} training vectors, got {len(sample)};"
                                 " use transform='prefix' or a smaller index dim")
            kind = "prefix"
    if kind == "prefix":
        return fit_prefix(full_dim, dim, metric), {"chosen": "prefix"}
    if kind == "pca":
        return fit_pca(sample, dim), {"chosen": "pca"}
    candidates = {"prefix": fit_prefix(full_dim, dim, metric), "pca": fit_pca(sample, dim)}
    scores = {name: neighbour_retention(sample, t, metric) for name, t in candidates.items()}
    chosen = "pca" if scores["pca"] > scores["prefix"] else "prefix"
    return candidates[chosen], {"chosen": chosen, "recall_at_10_in_short_space": scores}
