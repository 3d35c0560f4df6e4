"""Sample queries for the tuner: rows of the index that stand in for the queries it will be asked.

A document is an easy query for its own index: it sits where documents are dense, near its list's centre, with
its neighbours in that list. Real queries lie farther out and their neighbours spread over more lists, by an
amount that depends on the workload, not on the index: on one index of 120,000 dictionary senses, senses
asked without their headword reach recall 0.95 at nprobe 64, headwords at 256. So the sample is a prior: the
quarter of a uniform draw that lies farthest from its nearest list centre. On six labelled tasks
(docs/measurements.md, "Operating points on real queries") points tuned on it fell short of the target on 5
of 18 task-targets, by at most 0.006, where uniform rows fell short on 12, by up to 0.036; where queries
resemble the documents it errs high, by up to 0.035.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from matryoshka.indexing.training import sample_rows

if TYPE_CHECKING:
    from .tuning import Tunable

FAR_SHARE = 0.25  # the share of a uniform draw kept: the rows farthest from their nearest list centre


def own_rows(index: "Tunable", n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(global rows, their full vectors as float32): `n` live rows at random, outside the build's training
    sample where the build left enough rows out of it (its PQ codes fit the sample better than other vectors,
    so sample rows as queries overstate recall). Where the build trained on every row, rows outside the sample
    are only those added since, from wherever the adds came: a sample of them alone misjudged GCIDE after
    drifting adds by up to 0.08 (docs/measurements.md), so the draw is from every live row."""
    build = index.build
    pool = index.live_rows()
    built = build.get("count") or build["identity"]["source"].get("count") or index.count  # rows at build time
    trained = build.get("train_rows") or 0
    if 0 < trained < built and len(pool) - trained >= n:
        seen = np.arange(trained) if build.get("train_first_rows") else \
            sample_rows(built, trained, build["options"]["seed"])
        pool = np.setdiff1d(pool, seen, assume_unique=True)
    rows = np.sort(np.random.default_rng(seed).choice(pool, size=min(n, len(pool)), replace=False))
    return rows, index.full_vectors(rows)


def centre_distance(index: "Tunable", x: np.ndarray) -> np.ndarray:
    """(n,) how far each vector lies from its nearest list centre, in the index's space (larger: farther)."""
    nearest = index.assign(x, 1)[0][:, 0]
    return nearest if index.metric == "l2" else -nearest  # l2: a distance; otherwise a similarity


def query_like(index: "Tunable", n: int, seed: int = 1, share: float = FAR_SHARE) -> tuple[np.ndarray, np.ndarray]:
    """(global rows, full vectors): the `n` rows farthest from their nearest list centre out of `n / share`
    drawn by `own_rows`, ascending by row."""
    rows, x = own_rows(index, math.ceil(n / share), seed)
    far = np.sort(np.argsort(-centre_distance(index, x), kind="stable")[:n])
    return rows[far], x[far]
