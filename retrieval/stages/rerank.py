"""The cross-encoder: reads each query with the texts of its best candidates and gives the final order."""
from __future__ import annotations

import numpy as np

from matryoshka.rerank.rescore import keep

from .base import Planning, Running, Stage, Step


class Rerank(Stage):
    name, store = "rerank", "texts"

    def plan(self, ctx: Planning) -> Step | None:
        if not ctx.rerank:
            return None
        return self.step(ctx, ctx.params.k, f"the cross-encoder reads the query and the {ctx.last} texts")

    def run(self, step: Step, ctx: Running) -> None:
        docs = ctx.texts_of(ctx.cand)
        s = np.full(ctx.cand.shape, -np.inf, dtype=np.float32)
        for i, row in enumerate(ctx.reranker.score(ctx.texts, docs)):
            s[i, : len(row)] = row
        ctx.stages[self.name] = s
        ctx.cand, ctx.stages = keep(ctx.cand, ctx.stages, self.name, step.keep)
        ctx.last = self.name
