"""Checking and normalizing embedding vectors, with errors that name the offending row."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import InputError

METRICS = ("cosine", "ip", "l2")
FLOAT16_MAX = float(np.finfo(np.float16).max)  # the full vectors are stored as float16


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    return metric


def as_matrix(x, dim: int | None, what: str = "vectors", rows: int | np.ndarray = 0,
              ids: Sequence | None = None) -> np.ndarray:
    """Return `x` as a C-contiguous float32 (n, dim) matrix, or raise naming the first bad row."""
    try:
        arr = np.asarray(x)
    except ValueError as e:  # ragged nested lists
        raise InputError(f"{what} have mixed dimensions ({e}); every vector must have the same length") from None
    if arr.dtype == object:
        raise InputError(f"{what} have mixed dimensions or non-numeric values; every vector must be "
                         "a list of numbers of the same length")
    if arr.ndim == 1 and dim is not None and arr.shape[0] == dim:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InputError(f"{what} must be a 2-D matrix (rows x dims); got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"{what} must be numbers; got dtype {arr.dtype}")
    if dim is not None and arr.shape[1] != dim:
        raise InputError(f"{what} have {arr.shape[1]} dims but the index expects {dim}; "
                         "pass embeddings from the same model the index was built with")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        raise InputError(f"{what}: {_where(np.flatnonzero(~finite), rows, ids)} contains NaN or infinite "
                         "values; drop or fix those rows")
    return arr


def _where(bad: np.ndarray, rows: int | np.ndarray, ids: Sequence | None) -> str:
    """'row 1234 (id 'doc-9') and 3 more': `rows` is the first row number or the row number of each row."""
    i = int(bad[0])
    label = f"row {rows + i if np.isscalar(rows) else int(rows[i])}"
    if ids is not None:
        label += f" (id {ids[i]!r})"
    more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
    return label + more


def normalize(x: np.ndarray, metric: str, what: str = "vectors", rows: int | np.ndarray = 0,
              ids: Sequence | None = None, inplace: bool = False) -> np.ndarray:
    """Prepare rows for the metric: unit-normalize them for cosine (in place if asked, else a new array; zero
    rows are an error), refuse values the float16 full store cannot hold for ip and l2."""
    if metric != "cosine":
        big = np.flatnonzero(np.abs(x).max(axis=1, initial=0) > FLOAT16_MAX)
        if len(big):
            raise InputError(f"{what}: {_where(big, rows, ids)} has values beyond +-{FLOAT16_MAX:g}, which the "
                             f"float16 full-vector store cannot hold under metric {metric!r}; scale every vector "
                             "by one common factor (it keeps the ranking) or build with metric='cosine'")
        return x
    # scale by each row's largest value first: the norm of a finite row as large as 1e20 overflows float32
    peak = np.abs(x).max(axis=1, initial=0)
    zero = peak == 0
    if zero.any():
        raise InputError(f"{what}: {_where(np.flatnonzero(zero), rows, ids)} is a zero vector, which has no "
                         "direction under the cosine metric; drop it or build with metric='ip' or 'l2'")
    if inplace:
        x /= peak[:, None]
    else:
        x = x / peak[:, None]
    x /= np.linalg.norm(x, axis=1)[:, None]
    return x


def recall_at(found: np.ndarray, truth: np.ndarray, k: int | None = None, depth: int | None = None) -> float:
    """Mean share of each query's true top k (the first k of its `truth` row; default all of them) found among
    its first `depth` (default k) rows of `found`; -1 marks no row. The one recall@k of the project."""
    k = k or np.shape(truth)[1]
    depth = depth or k
    hits = [len(np.intersect1d(f[:depth][f[:depth] >= 0], t[:k])) for f, t in zip(found, truth)]
    return float(np.mean(hits) / k) if hits else float("nan")
