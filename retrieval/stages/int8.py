"""Exact scores of the first-pass candidates from their int8 short vectors."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from matryoshka.core.codec import Int8Codec
from matryoshka.rerank.rescore import int8_scores

from .base import Planning, Running, Stage, Step


@dataclass(frozen=True)
class Int8Scores:
    """Scores from int8 rows: numpy on the CPU (device None), else torch on `device`; sent to where rows are."""

    codec: Int8Codec
    metric: str

    def __call__(self, q: np.ndarray, cand: np.ndarray, rows, device: str | None) -> np.ndarray:
        if device is None:
            return int8_scores(q, cand, rows, self.codec, self.metric)
        from matryoshka.rerank import device_rescore  # torch, imported only for a device
        return device_rescore.host(device_rescore.int8_scores(q, cand, rows, self.codec, self.metric, device))


class Int8(Stage):
    name, store = "int8", "int8"

    def plan(self, ctx: Planning) -> Step | None:
        p = ctx.params
        if not (p.int8 and ctx.planned("first_pass")):
            return None
        why = f"exact int8 scores of the {p.k1} candidates{ctx.on}" + (f"; {ctx.fused}" if ctx.hybrid else "")
        return self.step(ctx, p.k2 if p.full or ctx.rerank else ctx.last, why)

    def run(self, step: Step, ctx: Running) -> None:
        scorer = Int8Scores(ctx.codec.int8, ctx.metric)
        ctx.stages[self.name] = ctx.backend.score(self.store, ctx.short, ctx.cand, scorer, ctx.missing)
        ctx.cut(self.name, step.keep)
