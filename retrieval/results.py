"""What a search returns: hits with every stage's score, one query or a batch at a time."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

STAGES = ("first_pass", "lexical", "int8", "full", "hybrid", "rerank")


@dataclass
class Hit:
    id: object  # the external id given at build time
    score: float  # the score of the last stage that ran
    row: int  # global row number in the index
    text: str | None = None
    scores: dict[str, float] = field(default_factory=dict)  # stage name -> score, for each stage that scored it


@dataclass
class Record:
    """A stored document, as `Index.get` and `Index.records` return it."""

    id: object
    row: int  # global row number in the index
    text: str | None = None
    attributes: dict = field(default_factory=dict)  # columns that are null for the row are left out
    vector: np.ndarray | None = None  # the full float32 vector, when asked for


@dataclass
class SearchResult:
    """A batch's results as arrays (nq, k); rows are -1 where fewer than k hits exist. A stage's scores are NaN
    for the queries it did not run for (a batch whose per-query filters took different paths)."""

    rows: np.ndarray
    scores: np.ndarray
    stage_scores: dict[str, np.ndarray]
    ids: list[list]
    texts: list[list[str]] | None
    timings: dict[str, float]
    partial: bool = False  # True when some shards could not answer (only with allow_partial=True)
    missing_shards: list[int] = field(default_factory=list)  # the shard numbers whose rows are absent

    def reordered(self, order: np.ndarray) -> "SearchResult":
        """The result's queries in `order`."""
        texts = None if self.texts is None else [self.texts[i] for i in order]
        return SearchResult(self.rows[order], self.scores[order], {s: v[order] for s, v in self.stage_scores.items()},
                            [self.ids[i] for i in order], texts, self.timings, self.partial, self.missing_shards)

    @staticmethod
    def concat(parts: list["SearchResult"], timings: dict) -> "SearchResult":
        """The parts' queries one after another (depths padded with -1 / -inf to the deepest part; a stage that
        did not run for a part's queries is NaN for them)."""
        k = max(p.rows.shape[1] for p in parts)

        def pad(a, fill):
            return np.pad(a, ((0, 0), (0, k - a.shape[1])), constant_values=fill)

        def stage(p, s):  # an exhaustive (filtered) part has only the full-vector stage: the others did not run
            return p.stage_scores.get(s, np.full(p.rows.shape, np.nan, np.float32))
        names = [s for s in STAGES if any(s in p.stage_scores for p in parts)]
        return SearchResult(np.vstack([pad(p.rows, -1) for p in parts]),
                            np.vstack([pad(p.scores, -np.inf) for p in parts]),
                            {s: np.vstack([pad(stage(p, s), -np.inf) for p in parts]) for s in names},
                            [ids for p in parts for ids in p.ids],
                            None if parts[0].texts is None else [t for p in parts for t in p.texts], timings,
                            any(p.partial for p in parts), sorted({s for p in parts for s in p.missing_shards}))

    def __len__(self) -> int:
        return len(self.rows)

    def hits(self, i: int) -> list[Hit]:
        out = []
        for j, row in enumerate(self.rows[i]):
            if row < 0:
                break
            out.append(Hit(self.ids[i][j], float(self.scores[i, j]), int(row),
                           self.texts[i][j] if self.texts is not None else None,
                           {s: float(v[i, j]) for s, v in self.stage_scores.items() if not np.isnan(v[i, j])}))
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
        for s, v in self.stage_scores.items():  # null where the stage did not run for the query
            cols[f"score_{s}"] = pa.array(v[valid], from_pandas=True)
        if self.texts is not None:
            cols["text"] = pa.array([self.texts[i][j] for i, j in zip(qi, rank)], pa.string())
        return pa.table(cols)
