"""Exact scores from the full vectors (or their first `full_dims` dims) of the best candidates so far."""
from __future__ import annotations

from functools import partial

from matryoshka.rerank.rescore import full_scores

from .base import Planning, Running, Stage, Step


class Full(Stage):
    name, store = "full", "full"

    def plan(self, ctx: Planning) -> Step | None:
        p = ctx.params
        if p.full and ctx.planned("first_pass"):
            dims = f"the first {p.full_dims} dims" if p.full_dims else f"all {ctx.shape.full_dim} dims"
            why = f"exact scores over {dims} of the best {p.k2 if p.int8 else p.k1}"
            return self.step(ctx, ctx.last, why + (f"; {ctx.fused}" if ctx.hybrid else ""))
        if ctx.hybrid and ctx.planned("exhaustive"):
            return self.step(ctx, ctx.last, f"exact scores of the lexical candidates too; {ctx.fused}")
        return None

    def run(self, step: Step, ctx: Running) -> None:
        scorer = partial(full_scores, metric=ctx.metric, dims=ctx.params.full_dims)
        ctx.stages[self.name] = ctx.backend.score(self.store, ctx.x, ctx.cand, scorer, ctx.missing)
        ctx.cut(self.name, step.keep)
