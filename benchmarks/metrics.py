"""Quality and latency metrics: recall against exact search, NDCG@10 and recall@100 against labels."""
from __future__ import annotations

import numpy as np

from matryoshka.core.vectors import recall_at

Qrels = dict  # query row -> {doc row: gain}


def recall(found: np.ndarray, truth: np.ndarray, k: int = 10, depth: int | None = None) -> float:
    """Mean fraction of each query's exact top-k found among the first `depth` (default k) returned rows."""
    return recall_at(found, truth, k, depth)


def ndcg_at_10(found: np.ndarray, qrels: Qrels) -> float:
    """Mean NDCG@10 over the queries that have labels (gain as given, log2 discount)."""
    scores = []
    disc = 1.0 / np.log2(np.arange(2, 12))
    for q, rel in qrels.items():
        if not rel:
            continue
        gains = np.array([rel.get(int(r), 0.0) for r in found[q][:10]], dtype=float)
        ideal = np.sort(np.array(list(rel.values()), dtype=float))[::-1][:10]
        scores.append(float(gains @ disc[:len(gains)]) / float(ideal @ disc[:len(ideal)]))
    return float(np.mean(scores)) if scores else float("nan")


def label_recall(found: np.ndarray, qrels: Qrels, k: int = 100) -> float:
    """Mean fraction of each query's relevant rows found in its first k results."""
    scores = [len(set(int(r) for r in found[q][:k]) & {d for d, g in rel.items() if g > 0}) /
              sum(1 for g in rel.values() if g > 0) for q, rel in qrels.items() if any(g > 0 for g in rel.values())]
    return float(np.mean(scores)) if scores else float("nan")


def percentiles_ms(seconds: list[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    if not seconds:
        return float("nan"), float("nan")
    a = np.asarray(seconds) * 1000.0
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def quality(found: np.ndarray, truth: np.ndarray, qrels: Qrels | None, depth: int | None = None) -> dict:
    """recall_at_10 (first 10 returned), recall_at_depth (within `depth` returned) and, with labels, ndcg/recall@100."""
    out = {"recall_at_10": recall(found, truth, 10)}
    if depth is not None:
        out["recall_at_depth"] = recall(found, truth, 10, depth)
        out["depth"] = int(depth)
    if qrels:
        out["ndcg_at_10"] = ndcg_at_10(found, qrels)
        if found.shape[1] >= 100:
            out["recall_at_100"] = label_recall(found, qrels, 100)
    return out
