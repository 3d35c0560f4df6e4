"""What a search returns: hits with every stage's score, one query or a batch at a time."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

STAGES = ("first_pass", "int8", "full", "rerank")


@dataclass
class Hit:
    id: object  # the external id given at build time
    score: float  # the score of the last stage that ran
    row: int  # global row number in the index
    text: str | None = None
    scores: dict[str, float] = field(default_factory=dict)  # stage name -> score, for each stage that ran


@dataclass
class SearchResult:
    """A batch's results as arrays (nq, k); rows are -1 where fewer than k hits exist."""

    rows: np.ndarray
    scores: np.ndarray
    stage_scores: dict[str, np.ndarray]
    ids: list[list]
    texts: list[list[str]] | None
    timings: dict[str, float]
    partial: bool = False  # True when some shards could not answer (only with allow_partial=True)
    missing_shards: list[int] = field(default_factory=list)  # the shard numbers whose rows are absent

    def __len__(self) -> int:
        return len(self.rows)

    def hits(self, i: int) -> list[Hit]:
        out = []
        for j, row in enumerate(self.rows[i]):
            if row < 0:
                break
            out.append(Hit(self.ids[i][j], float(self.scores[i, j]), int(row),
                           self.texts[i][j] if self.texts is not None else None,
                           {s: float(v[i, j]) for s, v in self.stage_scores.items()}))
        return out

    def __iter__(self):
        return (self.hits(i) for i in range(len(self)))

    def to_table(self, qids=None) -> pa.Table:
        """Long format: one row per (query, rank) with `qid`, `rank`, `id`, `score` and `score_<stage>`."""
        nq, k = self.rows.shape
        qids = list(range(nq)) if qids is None else list(qids)
        valid = self.rows >= 0
        qi, rank = np.nonzero(valid)
        cols = {"qid": pa.array([qids[i] for i in qi]), "rank": pa.array(rank + 1, pa.int32()),
                "id": pa.array([self.ids[i][j] for i, j in zip(qi, rank)]),
                "score": pa.array(self.scores[valid])}
        for s, v in self.stage_scores.items():
            cols[f"score_{s}"] = pa.array(v[valid])
        if self.texts is not None:
            cols["text"] = pa.array([self.texts[i][j] for i, j in zip(qi, rank)], pa.string())
        return pa.table(cols)
