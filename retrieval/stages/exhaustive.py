"""Every passing row scored exactly from the full vectors: a filter that passes few rows."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from matryoshka.core.params import SearchParams
from matryoshka.rerank.rescore import keep

from .base import Planning, Running, Stage, Step
from .full import FullScores

if TYPE_CHECKING:
    from ..plan import Rules, Shape


class Exhaustive(Stage):
    name, store = "exhaustive", "full"

    def plan(self, ctx: Planning) -> Step | None:
        passing, p, shape, rules = ctx.passing, ctx.params, ctx.shape, ctx.rules
        if p.mode == "lexical" or passing is None or not exhaustive_cheaper(shape, p, passing, rules):
            return None
        why = (f"{passing:,} passing rows <= k1 {p.k1}" if passing <= p.k1 else
               f"{passing:,} passing rows x {shape.full_dim} dims cost less than the widened first pass "
               f"(rules: exact_filter_work {rules.exact_filter_work:,}, scan ratio {rules.exact_filter_scan_ratio})")
        ctx.path = "exhaustive"
        return self.step(ctx, ctx.last, f"every passing row scored exactly: {why}")

    def run(self, step: Step, ctx: Running) -> None:
        _, cand = ctx.backend.exhaustive(ctx.x, step.keep, ctx.where, ctx.missing)
        # scored again as the cascade scores its last stage, so that every backend gives the same scores
        scores = ctx.backend.score("full", ctx.x, cand, FullScores(ctx.metric), ctx.missing)
        ctx.cand, ctx.stages = keep(cand, {"full": scores}, "full", cand.shape[1])
        ctx.last = "full"


def exhaustive_cheaper(shape: "Shape", p: SearchParams, passing: int, rules: "Rules") -> bool:
    """Whether scoring every passing row beats the widened first pass (see `plan.Rules`): at a billion rows a
    selective filter would make the first pass scan most lists."""
    if passing <= p.k1:
        return True
    lists = min(shape.nlist, math.ceil(p.nprobe * shape.live / passing))
    scanned = lists / shape.nlist * shape.live * shape.code_size
    return passing * shape.full_dim <= max(rules.exact_filter_work, rules.exact_filter_scan_ratio * scanned)
