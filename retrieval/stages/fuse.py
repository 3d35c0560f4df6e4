"""A hybrid search with no re-scoring: the first-pass ranks fused with the BM25 ranks."""
from __future__ import annotations

from .base import Planning, Running, Stage, Step


class Fuse(Stage):
    name, store = "fuse", "nothing"

    def plan(self, ctx: Planning) -> Step | None:
        if ctx.hybrid and ctx.planned("first_pass") and not (ctx.planned("int8") or ctx.planned("full")):
            return self.step(ctx, ctx.last, f"first-pass ranks {ctx.fused}")
        return None

    def run(self, step: Step, ctx: Running) -> None:
        ctx.cut(ctx.last, step.keep)
