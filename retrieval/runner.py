"""Running a plan over one chunk of queries: each step by its registered stage, timed on its own."""
from __future__ import annotations

from concurrent.futures import wait
from typing import Sequence

from matryoshka.core.timing import StageTimer

from .plan import Plan
from .stages import STAGES, Running, Stage


def run(pl: Plan, ctx: Running, timer: StageTimer, stages: Sequence[Stage] = STAGES) -> Running:
    """Run the plan's steps in order over `ctx`'s queries, each by the stage of its name in `stages` (the
    registry by default); `ctx` holds the candidates and each stage's scores,
    ordered by the stage `ctx.last`. Work a stage starts early (BM25 beside the first pass) has ended when this
    returns, whatever happened: a reload may close the backend next."""
    by_name = {s.name: s for s in stages}
    try:
        for step in pl.steps:
            by_name[step.name].start(step, ctx)
        for step in pl.steps:
            by_name[step.name].run(step, ctx)
            timer.lap(step.name)
    finally:
        wait(list(ctx.pending.values()))
    return ctx
