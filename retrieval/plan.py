"""A search's plan as a value: its path, each stage with its depth and the store (and tier) it reads, and how
the batch is split. `plan` asks each registered stage (`retrieval.stages`) for its step, `runner.run` runs the
steps, `Index.explain` returns the plan.

Every choice the cascade makes before it touches a vector is made here, with its reason:
- exhaustive or first pass: a filter that passes few rows is scored row by row from the full vectors, exact
  and cheaper than probing lists for them (`Rules.exact_filter_work`, `Rules.exact_filter_scan_ratio`);
- the lists probed: nprobe, widened to nprobe / f under a filter passing a share f of the rows (the lists hold
  f as many passing rows), all of them when k1 reaches every live row, a cap under a probe margin;
- chunks: queries scored at once, so that memory is bounded whatever the depths (`Rules.max_batch`,
  `Rules.max_candidates`);
- the stages that run and the candidates each keeps (k1 -> k2 -> k3 or k).
Two choices stay at run time, since they depend on the query vectors: the lists a probe margin skips, and a
second first pass over every list for the queries of a filtered search that find fewer than k passing rows.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

from matryoshka.core import checks
from matryoshka.core.errors import InputError
from matryoshka.core.params import SearchParams

from .stages import STAGES, Planning, Stage, Step
from .stages.exhaustive import exhaustive_cheaper

__all__ = ["Plan", "Rules", "Shape", "Step", "exhaustive_cheaper", "plan"]


SSD_MIN_CHUNK = 16  # queries per chunk at least when chunks overlap (fewer and the per-chunk work shows)


@dataclass(frozen=True)
class Rules:
    """The planner's thresholds. The filter ones come from the crossover measured at 1M x 1024
    (benchmarks/results/filtered-1m): about 23k passing rows there. Pass other rules to `open_index(rules=)`
    or `search_batch(rules=)` to steer the path (tests and benchmarks do)."""

    exact_filter_work: int = 24_000_000  # passing rows x full dims scored exhaustively at most
    exact_filter_scan_ratio: float = 11  # ... or this many times the bytes of codes the widened pass would scan
    max_batch: int = 1024  # queries scored at once
    max_candidates: int = 1 << 21  # first-pass candidates held at once over a chunk's queries
    ssd_in_flight: int = 2  # chunks searched at once when a store is read from SSD: one's reads beside another's CPU

    def checked(self) -> "Rules":
        checks.integer("rules exact_filter_work", self.exact_filter_work, 0, None)
        checks.number("rules exact_filter_scan_ratio", self.exact_filter_scan_ratio, 0, float("inf"))
        checks.integer("rules max_batch", self.max_batch, 1, None)
        checks.integer("rules max_candidates", self.max_candidates, 1, None)
        checks.integer("rules ssd_in_flight", self.ssd_in_flight, 1, None)
        return self

    @classmethod
    def of(cls, value) -> "Rules":
        """`rules=`: a Rules, a dict of its fields, or None (the defaults)."""
        if value is None:
            return cls()
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(cls.__dataclass_fields__))
            if unknown:
                raise InputError(f"rules has no field {unknown[0]!r}; its fields are "
                                 f"{', '.join(cls.__dataclass_fields__)}")
            value = cls(**value)
        if not isinstance(value, cls):
            raise InputError(f"rules= takes a retrieval.Rules or a dict of its fields; got {type(value).__name__}")
        return value.checked()


@dataclass(frozen=True)
class Shape:
    """What the planner needs to know of an opened index."""

    live: int  # rows not deleted
    nlist: int  # IVF lists
    code_size: int  # bytes of a first-pass code
    full_dim: int
    device: str  # where the first pass runs
    tiers: dict  # store -> tier (`matryoshka.storage.tiers`)
    coarse: str = "flat"  # how queries are assigned to lists: "flat" (every centroid) or "hnsw" (a graph)
    rescore: str | None = None  # where re-scoring runs: None for numpy on the CPU, else torch's device


@dataclass(frozen=True)
class Plan:
    params: SearchParams  # the depths as run: checked and clamped to the index
    queries: int
    chunk: int  # queries scored at once
    path: str  # "cascade" (first pass, then re-scoring), "exhaustive" (every passing row scored), "lexical",
    # or either of the first two + "+lexical" (hybrid)
    steps: tuple[Step, ...]
    passing: int | None = None  # live rows passing the filter (None: no filter)
    notes: tuple[str, ...] = field(default=())
    in_flight: int = 1  # chunks searched at once

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["params"] = self.params.to_dict()
        return d

    def explain(self) -> str:
        """The plan as text: one line per stage with its reason."""
        head = (f"plan: {self.queries} quer{'y' if self.queries == 1 else 'ies'} in "
                f"{math.ceil(self.queries / self.chunk)} chunk(s) of up to {self.chunk}, path {self.path}")
        if self.in_flight > 1:
            head += f", {self.in_flight} chunks at once"
        if self.passing is not None:
            head += f", {self.passing:,} rows pass the filter"
        lines = [head]
        for i, s in enumerate(self.steps, 1):
            probe = f", nprobe {s.nprobe}" if s.nprobe is not None else ""
            lines.append(f"  {i}. {s.name:<10} keep {s.keep:<5} reads {s.reads}{probe}")
            lines.append(f"     why: {s.why}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def plan(shape: Shape, p: SearchParams, queries: int, rules: Rules, *, passing: int | None = None,
         rerank: bool = False, asked: frozenset = frozenset(), measured: bool = False,
         point_note: str | None = None, stages: Sequence[Stage] = STAGES) -> Plan:
    """The plan for `queries` queries at checked params `p`: each stage of `stages` (the registry,
    `stages.STAGES`, in cascade order) adds its step or not. `passing` is the count of live rows passing the filter (None: no filter),
    `rerank` whether the cross-encoder runs; `asked` names the depths the caller set, `measured` says whether
    the others come from the index's measured operating point, which `point_note` describes (what it was
    measured on, its interval, whether the index changed since)."""
    origin = "as asked" if "nprobe" in asked else "the index's measured operating point" if measured \
        else "the built-in default (no operating point measured: `matryoshka tune`)"
    ctx = Planning(shape, p, rules, passing, rerank, origin, notes=[point_note] if point_note else [])
    for stage in stages:
        step = stage.plan(ctx)
        if step is not None:
            ctx.steps.append(step)
    chunk, in_flight = max(1, min(rules.max_batch, rules.max_candidates // p.k1)), 1
    if shape.tiers.get("int8") == "ssd" or shape.tiers.get("full") == "ssd":
        ctx.notes.append("stores on SSD: each stage gathers its rows for the chunk and reads them with many reads "
                         "in flight (matryoshka.storage.row_reader)")
        # (not with a GPU first pass or a cross-encoder: neither is searched from two threads at once)
        if rules.ssd_in_flight > 1 and queries >= 2 * SSD_MIN_CHUNK and shape.device != "gpu" and not rerank:
            # smaller chunks, several at once: one chunk's reads wait on the device while another's stages compute
            chunk = min(chunk, max(SSD_MIN_CHUNK, math.ceil(queries / (2 * rules.ssd_in_flight))))
            in_flight = min(rules.ssd_in_flight, math.ceil(queries / chunk))
            ctx.notes.append(f"{in_flight} chunks searched at once: the reads of one overlap the first pass and "
                             "re-scoring of another")
    return Plan(p, queries, chunk, ctx.path, tuple(ctx.steps), passing, tuple(ctx.notes), in_flight)
