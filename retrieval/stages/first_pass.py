"""The first pass: IVF-PQ candidates from the lists nearest each query, over every shard at once."""
from __future__ import annotations

import math

import numpy as np

from matryoshka.core.params import coarse_ef

from ..first_pass import prune_lists
from .base import Planning, Running, Stage, Step


class FirstPass(Stage):
    name, store = "first_pass", "codes"

    def plan(self, ctx: Planning) -> Step | None:
        if ctx.params.mode == "lexical" or ctx.path == "exhaustive":
            return None
        p, shape, passing = ctx.params, ctx.shape, ctx.passing
        filtered = passing is not None
        nprobe, why = p.nprobe, f"nprobe {p.nprobe}: {ctx.origin}"
        if p.k1 >= shape.live:
            nprobe, why = shape.nlist, f"k1 {p.k1} reaches every live row ({shape.live:,}): every list"
        elif filtered:
            nprobe = min(shape.nlist, math.ceil(p.nprobe * shape.live / max(passing, 1)))
            why = (f"nprobe {p.nprobe} widened to {nprobe} for a filter passing {passing / max(shape.live, 1):.1%} "
                   "of the rows (the lists hold that share of passing rows)")
            ctx.notes.append("queries that find fewer than k passing rows are searched again over every list")
        if p.probe_margin is not None and not filtered and shape.device != "gpu" and nprobe == p.nprobe:
            why += f", a cap: lists trailing the nearest centroid by more than {p.probe_margin:g} are skipped"
        device = "GPU" if shape.device == "gpu" and not filtered else "CPU"
        if shape.coarse == "hnsw":
            why += (f"; lists found through an HNSW graph over the {shape.nlist:,} centroids, efSearch "
                    f"{coarse_ef(nprobe, p.coarse_ef)}")
        ctx.path = "cascade"
        return self.step(ctx, p.k1, f"{why}; on the {device}", nprobe=nprobe)

    def run(self, step: Step, ctx: Running) -> None:
        """The first pass over the plan's lists; queries of a filtered search that still find fewer than k
        passing rows are searched over every list."""
        p, short, where, assigner = ctx.params, ctx.short, ctx.where, ctx.assigner
        nprobe = step.nprobe
        assigned = None if ctx.device == "gpu" and where is None else assigner.assign(short, nprobe, p.coarse_ef)
        if p.probe_margin is not None and assigned is not None and where is None:
            assigned = prune_lists(assigned, p.probe_margin, ctx.metric)
        s1, cand = ctx.backend.first_pass(short, p.k1, nprobe, assigned, ctx.missing, where)
        if where is not None and nprobe < assigner.nlist:
            few = np.flatnonzero((cand >= 0).sum(1) < min(p.k, ctx.passing))
            if len(few):
                nlist = assigner.nlist
                s1[few], cand[few] = ctx.backend.first_pass(short[few], p.k1, nlist, assigner.assign(short[few], nlist),
                                                            ctx.missing, where)
        ctx.cand, ctx.stages, ctx.last = cand, {"first_pass": s1}, "first_pass"
