"""One or more shards of an index and the work a searcher does on them, free of any distributed engine.

A group answers the first pass over its own shards, re-scores the candidates it owns (int8, then full
dims), and looks up external ids and texts of its rows. The single-process `Index` holds one group over
every shard; a distributed searcher holds one group per worker and merges their answers (see `cascade`).
"""
from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from matryoshka.core import layout
from matryoshka.core.codec import Int8Codec
from matryoshka.storage.row_store import RowStore
from rerank.rescore import full_scores, int8_scores

from .first_pass import FirstPass
from matryoshka.storage.shard_files import Shard, read_faiss


def keep(cand: np.ndarray, stages: dict, key: str, depth: int):
    """Sort candidates by one stage's score and keep the best `depth`, carrying every stage's scores along."""
    order = np.argsort(-stages[key], axis=1, kind="stable")[:, :depth]
    cand = np.take_along_axis(cand, order, 1)
    stages = {s: np.take_along_axis(v, order, 1) for s, v in stages.items()}
    invalid = ~np.isfinite(stages[key])
    cand[invalid] = -1
    return cand, stages


class ShardGroup:
    """Shards `numbers` of the index at `root` (all of them when None), opened for search."""

    def __init__(self, root: str | Path, manifest: dict, numbers: list[int] | None = None, device: str = "cpu",
                 verify: bool = False, codec: Int8Codec | None = None, trained: faiss.Index | None = None):
        self.root = Path(root)
        m = manifest
        self.metric, self.full_dim, self.index_dim = m["metric"], m["full_dim"], m["index_dim"]
        metas = [s for s in m["shards"] if numbers is None or s["number"] in set(numbers)]
        self.numbers = [s["number"] for s in metas]
        self.shards = [Shard(self.root, s, self.full_dim, self.index_dim, m["has_text"], deep=verify)
                       for s in metas]
        if codec is None:
            with np.load(self.root / layout.TRANSFORM) as a:
                codec = Int8Codec(a["int8_offset"], a["int8_scale"])
        self.codec = codec
        self.starts = np.array([s.id_start for s in self.shards], dtype=np.int64)
        self.ends = self.starts + np.array([s.count for s in self.shards], dtype=np.int64)
        self.short = RowStore(self.starts, [s.short for s in self.shards])
        self.full = RowStore(self.starts, [s.full for s in self.shards])
        trained = trained if trained is not None else read_faiss(self.root / layout.TRAINED)
        self.first = FirstPass(trained, self.shards, self.metric, device)

    def owns(self, rows: np.ndarray) -> np.ndarray:
        """A mask of the rows (global row ids) held by this group's shards."""
        s = np.searchsorted(self.starts, rows, side="right") - 1
        s = np.clip(s, 0, len(self.starts) - 1)
        return (rows >= 0) & (rows >= self.starts[s]) & (rows < self.ends[s])

    def first_pass(self, short: np.ndarray, k: int, nprobe: int,
                   assigned: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """This group's top k (scores, global rows) for short query vectors."""
        return self.first.search(short, k, nprobe, assigned)

    def rescore(self, x: np.ndarray, short: np.ndarray, cand: np.ndarray, int8: bool, full: bool,
                k2: int, full_dims: int | None) -> dict[str, np.ndarray]:
        """Scores of the candidates this group owns (-inf elsewhere), per stage.

        int8 scores every owned candidate; full scores those among this group's best k2 by int8 (a superset
        of the global best k2 that it owns), or every owned candidate when int8 is off.
        """
        mine = np.where(self.owns(cand), cand, -1)
        out = {}
        if int8:
            out["int8"] = int8_scores(short, mine, self.short, self.codec, self.metric)
            if full:
                kept, _ = keep(mine, {"int8": out["int8"]}, "int8", k2)
                score = full_scores(x, kept, self.full, self.metric, full_dims)
                out["full"] = _scatter(cand, kept, score)
        elif full:
            out["full"] = full_scores(x, mine, self.full, self.metric, full_dims)
        return out

    def lookup(self, rows: np.ndarray, texts: bool) -> tuple[list, list | None]:
        """External ids (None where not owned) and texts ('' where not owned) of a flat array of rows."""
        ids: list = [None] * len(rows)
        out_texts = [""] * len(rows) if texts else None
        valid = np.flatnonzero(self.owns(rows))
        shard_of = np.searchsorted(self.starts, rows[valid], side="right") - 1
        for s in np.unique(shard_of):
            pos = valid[shard_of == s]
            local = rows[pos] - self.starts[s]
            for p, v in zip(pos, self.shards[s].external_ids(local)):
                ids[p] = v
            if texts:
                for p, v in zip(pos, self.shards[s].texts(local)):
                    out_texts[p] = v
        return ids, out_texts


def _scatter(cand: np.ndarray, kept: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Place scores of `kept` (a subset of each row of `cand`, distinct rows) at their positions in `cand`."""
    out = np.full(cand.shape, -np.inf, dtype=np.float32)
    # one sorted search over (query, row) keys for the whole batch instead of a loop over queries
    q_of = np.arange(len(cand), dtype=np.int64)[:, None] << 40
    keys = (q_of + np.where(cand >= 0, cand, (1 << 40) - 1)).ravel()
    order = np.argsort(keys, kind="stable")
    valid = kept >= 0
    wanted = (np.broadcast_to(q_of, kept.shape) + kept)[valid]
    out.ravel()[order[np.searchsorted(keys, wanted, sorter=order)]] = score[valid]
    return out
