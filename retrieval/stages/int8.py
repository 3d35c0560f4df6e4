"""Exact scores of the first-pass candidates from their int8 short vectors."""
from __future__ import annotations

from functools import partial

from matryoshka.rerank.rescore import int8_scores

from .base import Planning, Running, Stage, Step


class Int8(Stage):
    name, store = "int8", "int8"

    def plan(self, ctx: Planning) -> Step | None:
        p = ctx.params
        if not (p.int8 and ctx.planned("first_pass")):
            return None
        why = f"exact int8 scores of the {p.k1} candidates" + (f"; {ctx.fused}" if ctx.hybrid else "")
        return self.step(ctx, p.k2 if p.full or ctx.rerank else ctx.last, why)

    def run(self, step: Step, ctx: Running) -> None:
        scorer = partial(int8_scores, codec=ctx.codec.int8, metric=ctx.metric)
        ctx.stages[self.name] = ctx.backend.score(self.store, ctx.short, ctx.cand, scorer, ctx.missing)
        ctx.cut(self.name, step.keep)
