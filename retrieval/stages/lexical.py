"""BM25 over the stored texts: alone (mode lexical), or joining the dense candidates (mode hybrid)."""
from __future__ import annotations

from matryoshka.core.errors import InputError
from matryoshka.rerank import fusion

from .base import Planning, Running, Stage, Step, background


class Lexical(Stage):
    name, store = "lexical", "lexical"

    def plan(self, ctx: Planning) -> Step | None:
        p = ctx.params
        if p.mode == "lexical":
            ctx.path = "lexical"
            return self.step(ctx, ctx.last, "BM25 over the stored texts (mode lexical)")
        if p.mode == "hybrid":
            ctx.path += "+lexical"
            return self.step(ctx, p.k_lexical, f"BM25 top {p.k_lexical} over the stored texts join the candidates")
        return None

    def start(self, step: Step, ctx: Running) -> None:
        """BM25 runs beside the dense first pass (both release the GIL), not after it."""
        if ctx.texts is None:
            raise InputError(f"mode={ctx.params.mode!r} searches the texts: give the queries as texts, or "
                             "query_texts= beside the vectors")
        ctx.pending[self.name] = background().submit(ctx.backend.lexical, ctx.texts, step.keep, ctx.where,
                                                     ctx.missing, ctx.params.lexical_syntax)

    def run(self, step: Step, ctx: Running) -> None:
        s, rows = ctx.pending[self.name].result()
        if ctx.cand is None:  # lexical alone
            ctx.cand, ctx.stages, ctx.last = rows, {"lexical": s}, "lexical"
        else:
            ctx.cand, ctx.stages = fusion.union(ctx.cand, ctx.stages, rows, s)
