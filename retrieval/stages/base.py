"""What every stage of the cascade is: a name, the store it reads, how it plans and how it runs.

A stage plans from what the planner knows (`Planning`: the index's `Shape`, the checked params, the steps
planned before it) and returns its `Step`, or None when it does not run; it runs a step over one chunk of queries
(`Running`: the query vectors, the backend's data primitives, the candidates and scores so far).
"""
from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from matryoshka.core.params import SearchParams
from matryoshka.rerank import fusion
from matryoshka.rerank.rescore import keep

if TYPE_CHECKING:
    from ..backend import Backend
    from ..plan import Rules, Shape


@dataclass(frozen=True)
class Step:
    """One stage as planned: what it does, the candidates per query it keeps, the store it reads and why it
    runs so."""

    name: str  # the stage's name (see `stages.STAGES`)
    keep: int
    reads: str
    why: str
    nprobe: int | None = None  # first pass: lists probed per query (a cap under a probe margin)


@dataclass
class Planning:
    """What a stage plans from; stages add their steps and notes in the registry's order."""

    shape: "Shape"
    params: SearchParams
    rules: "Rules"
    passing: int | None  # live rows passing the filter (None: no filter)
    rerank: bool  # whether the cross-encoder runs
    origin: str  # where nprobe came from, in words
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    path: str = ""  # "exhaustive", "cascade" or "lexical", "+lexical" when hybrid

    @property
    def last(self) -> int:
        """Candidates the last re-scoring keeps: k3 for the cross-encoder, else k."""
        return self.params.k3 if self.rerank else self.params.k

    @property
    def fused(self) -> str:
        p = self.params
        return f"kept by {p.fusion} fusion with the BM25 ranks (lexical weight {p.lexical_weight:g})"

    @property
    def hybrid(self) -> bool:
        return self.params.mode == "hybrid"

    @property
    def on(self) -> str:
        """Where re-scoring runs, in words, when not numpy on the CPU (`Shape.rescore`)."""
        return f", torch on {self.shape.rescore}" if self.shape.rescore else ""

    def reads(self, store: str) -> str:
        return f"{store} ({self.shape.tiers.get(store, 'page cache')})"

    def planned(self, name: str) -> bool:
        return any(s.name == name for s in self.steps)


@dataclass
class Running:
    """One chunk of queries going through the plan: the inputs, the data primitives, and the candidates (global
    rows, -1 for none) with every stage's scores so far, ordered by the scores of `last`."""

    backend: "Backend"
    params: SearchParams
    x: np.ndarray  # normalized full-dim query vectors
    short: np.ndarray  # the same through the index's transform
    texts: list[str] | None
    where: Any  # one filter for the chunk, or None
    missing: set  # shards that could not answer (a backend that allows partial results adds to it)
    metric: str
    codec: Any  # `matryoshka.core.codec.Codec`
    assigner: Any  # `retrieval.first_pass.FirstPass`: the coarse assignment
    device: str  # where the first pass runs
    passing: int | None
    reranker: Any = None
    pending: dict[str, Future] = field(default_factory=dict)  # work a stage started before the first step ran
    cand: np.ndarray | None = None
    stages: dict = field(default_factory=dict)
    last: str | None = None

    def cut(self, name: str, depth: int) -> None:
        """Order by stage `name`'s scores (by their fusion with BM25 ranks in a hybrid search) and keep `depth`."""
        self.last = name
        if "lexical" in self.stages and name != "lexical":
            p = self.params
            self.stages["hybrid"] = fusion.fuse(self.stages[name], self.stages["lexical"], p.fusion, p.lexical_weight)
            self.last = "hybrid"
        self.cand, self.stages = keep(self.cand, self.stages, self.last, depth)


    def texts_of(self, cand: np.ndarray) -> list[list[str]]:
        """The stored texts of each query's valid candidates."""
        _, texts = self.backend.lookup(cand.ravel(), True, self.missing)
        kk = cand.shape[1]
        return [[texts[i * kk + j] for j in range(kk) if cand[i, j] >= 0] for i in range(cand.shape[0])]


class Stage:
    """A stage of the cascade. Subclasses set `name` and `store` and define `plan` and `run`; one line in
    `stages.STAGES` registers them, in cascade order."""

    name: str = ""
    store: str = ""  # the store it reads: "codes", "int8", "full", "lexical", "texts" or "nothing"

    def plan(self, ctx: Planning) -> Step | None:
        """This stage's step for the search `ctx` describes, or None when it does not run."""
        raise NotImplementedError

    def start(self, step: Step, ctx: Running) -> None:
        """Begin work that can run beside the stages before this one (in `ctx.pending`); none by default."""

    def run(self, step: Step, ctx: Running) -> None:
        """Run `step` over the chunk: update `ctx.cand`, `ctx.stages` and `ctx.last`."""
        raise NotImplementedError

    def step(self, ctx: Planning, keep: int, why: str, **extra) -> Step:
        return Step(self.name, keep, ctx.reads(self.store) if self.store != "nothing" else "nothing", why, **extra)


_BACKGROUND: list = []


def background() -> ThreadPoolExecutor:
    """The threads a search runs a stage on beside another (one per core; made on first use)."""
    if not _BACKGROUND:
        _BACKGROUND.append(ThreadPoolExecutor(max(2, os.cpu_count() or 1), thread_name_prefix="matryoshka-stage"))
    return _BACKGROUND[0]
