"""The hybrid fusion measured on an index's own labelled queries: which fusion and lexical weight give the best
nDCG@10, stored in the manifest like the operating point and used as the index's hybrid default."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from matryoshka.core.errors import InputError


if TYPE_CHECKING:
    from .index import Index

CANDIDATES = (("weighted", 0.25), ("weighted", 0.5), ("weighted", 1.0), ("rrf", 0.5), ("rrf", 1.0))


def ndcg_at_10(found: list[list], relevant: list[set]) -> float:
    """Mean nDCG@10 with binary gains: `found` ids per query, best first; `relevant` ids per query."""
    disc = 1.0 / np.log2(np.arange(2, 12))
    scores = []
    for ids, rel in zip(found, relevant):
        gains = np.array([1.0 if i in rel else 0.0 for i in ids[:10]])
        ideal = disc[:min(len(rel), 10)].sum()
        scores.append(float(gains @ disc[:len(gains)]) / ideal if ideal else 0.0)
    return float(np.mean(scores))


def tune_fusion(index: "Index", queries: Sequence[str], relevant: Sequence, *, vectors=None, save: bool = True,
                candidates=CANDIDATES, **options) -> dict:
    """Measure hybrid searches of `queries` (texts; with `vectors`, their query vectors, for an index without a
    model) at each (fusion, lexical weight) of `candidates` against `relevant` (the relevant external ids of each
    query); the best nDCG@10 becomes the index's hybrid default (stored in the manifest unless save=False).
    `options` go to every search. Returns the measurement."""
    queries, relevant = list(queries), [set(r) for r in relevant]
    if not queries or len(queries) != len(relevant):
        raise InputError(f"{len(queries)} queries and {len(relevant)} sets of relevant ids: give one set per query")
    if not all(isinstance(q, str) for q in queries):
        raise InputError("tune_fusion takes query texts: the lexical pass searches text")
    rows = []
    for fusion, weight in candidates:
        found = index.search_batch(queries if vectors is None else vectors, k=10, mode="hybrid", fusion=fusion,
                                   lexical_weight=weight, query_texts=None if vectors is None else queries,
                                   **options).ids
        rows.append({"fusion": fusion, "lexical_weight": weight, "ndcg_at_10": ndcg_at_10(found, relevant)})
    best = max(rows, key=lambda r: r["ndcg_at_10"])  # ties: the first candidate
    record = {**best, "queries": len(queries), "measured": rows}
    index.update_settings(lambda m: setattr(m, "hybrid", record), save=save)
    return record
