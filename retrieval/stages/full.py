"""Exact scores from the full vectors (or their first `full_dims` dims) of the best candidates so far."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from matryoshka.rerank.rescore import full_scores

from .base import Planning, Running, Stage, Step


@dataclass(frozen=True)
class FullScores:
    """Scores from full rows (float16, gathered on the host): numpy on the CPU (device None), else torch on
    `device`, the rows moved there once per block of queries."""

    metric: str
    dims: int | None = None

    def __call__(self, q: np.ndarray, cand: np.ndarray, rows, device: str | None) -> np.ndarray:
        if device is None:
            return full_scores(q, cand, rows, self.metric, self.dims)
        from matryoshka.rerank import device_rescore  # torch, imported only for a device
        return device_rescore.host(device_rescore.full_scores(q, cand, rows, self.metric, self.dims, device))


class Full(Stage):
    name, store = "full", "full"

    def plan(self, ctx: Planning) -> Step | None:
        p = ctx.params
        if p.full and ctx.planned("first_pass"):
            dims = f"the first {p.full_dims} dims" if p.full_dims else f"all {ctx.shape.full_dim} dims"
            why = f"exact scores over {dims} of the best {p.k2 if p.int8 else p.k1}{ctx.on}"
            return self.step(ctx, ctx.last, why + (f"; {ctx.fused}" if ctx.hybrid else ""))
        if ctx.hybrid and ctx.planned("exhaustive"):
            return self.step(ctx, ctx.last, f"exact scores of the lexical candidates too{ctx.on}; {ctx.fused}")
        return None

    def run(self, step: Step, ctx: Running) -> None:
        scorer = FullScores(ctx.metric, ctx.params.full_dims)
        ctx.stages[self.name] = ctx.backend.score(self.store, ctx.x, ctx.cand, scorer, ctx.missing)
        ctx.cut(self.name, step.keep)
