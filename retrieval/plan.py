"""A search's plan as a value: its path, each stage with its depth and the store (and tier) it reads, and how
the batch is split. `plan` decides, `Index` runs the plan stage by stage, `Index.explain` returns it.

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

from matryoshka.core import checks
from matryoshka.core.errors import InputError
from matryoshka.core.params import SearchParams, coarse_ef


@dataclass(frozen=True)
class Rules:
    """The planner's thresholds. The filter ones come from the crossover measured at 1M x 1024
    (benchmarks/results/filtered-1m): about 23k passing rows there. Pass other rules to `open_index(rules=)`
    or `search_batch(rules=)` to steer the path (tests and benchmarks do)."""

    exact_filter_work: int = 24_000_000  # passing rows x full dims scored exhaustively at most
    exact_filter_scan_ratio: float = 11  # ... or this many times the bytes of codes the widened pass would scan
    max_batch: int = 1024  # queries scored at once
    max_candidates: int = 1 << 21  # first-pass candidates held at once over a chunk's queries

    def checked(self) -> "Rules":
        checks.integer("rules exact_filter_work", self.exact_filter_work, 0, None)
        checks.number("rules exact_filter_scan_ratio", self.exact_filter_scan_ratio, 0, float("inf"))
        checks.integer("rules max_batch", self.max_batch, 1, None)
        checks.integer("rules max_candidates", self.max_candidates, 1, None)
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


@dataclass(frozen=True)
class Step:
    """One stage: what it does, the candidates per query it keeps, the store it reads and why it runs so."""

    name: str  # "exhaustive", "first_pass", "lexical", "int8", "full", "fuse" or "rerank"
    keep: int
    reads: str
    why: str
    nprobe: int | None = None  # first pass: lists probed per query (a cap under a probe margin)


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
        if self.passing is not None:
            head += f", {self.passing:,} rows pass the filter"
        lines = [head]
        for i, s in enumerate(self.steps, 1):
            probe = f", nprobe {s.nprobe}" if s.nprobe is not None else ""
            lines.append(f"  {i}. {s.name:<10} keep {s.keep:<5} reads {s.reads}{probe}")
            lines.append(f"     why: {s.why}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _reads(store: str, tiers: dict) -> str:
    return f"{store} ({tiers.get(store, 'page cache')})"


def plan(shape: Shape, p: SearchParams, queries: int, rules: Rules, *, passing: int | None = None,
         rerank: bool = False, asked: frozenset = frozenset(), measured: bool = False,
         point_note: str | None = None) -> Plan:
    """The plan for `queries` queries at checked params `p`; `passing` is the count of live rows passing the
    filter (None: no filter), `rerank` whether the cross-encoder runs; `asked` names the depths the caller set,
    `measured` says whether the others come from the index's measured operating point, which `point_note`
    describes (what it was measured on, its interval, whether the index changed since)."""
    t, steps, notes = shape.tiers, [], [point_note] if point_note else []
    origin = "as asked" if "nprobe" in asked else "the index's measured operating point" if measured \
        else "the built-in default (no operating point measured: `matryoshka tune`)"
    last = p.k3 if rerank else p.k
    chunk = max(1, min(rules.max_batch, rules.max_candidates // p.k1))
    filtered = passing is not None
    if filtered and exhaustive_cheaper(shape, p, passing, rules):
        why = (f"{passing:,} passing rows <= k1 {p.k1}" if passing <= p.k1 else
               f"{passing:,} passing rows x {shape.full_dim} dims cost less than the widened first pass "
               f"(rules: exact_filter_work {rules.exact_filter_work:,}, scan ratio {rules.exact_filter_scan_ratio})")
        steps.append(Step("exhaustive", last, _reads("full", t), f"every passing row scored exactly: {why}"))
        path = "exhaustive"
    else:
        nprobe, why = p.nprobe, f"nprobe {p.nprobe}: {origin}"
        if p.k1 >= shape.live:
            nprobe, why = shape.nlist, f"k1 {p.k1} reaches every live row ({shape.live:,}): every list"
        elif filtered:
            nprobe = min(shape.nlist, math.ceil(p.nprobe * shape.live / max(passing, 1)))
            why = (f"nprobe {p.nprobe} widened to {nprobe} for a filter passing {passing / max(shape.live, 1):.1%} "
                   "of the rows (the lists hold that share of passing rows)")
            notes.append("queries that find fewer than k passing rows are searched again over every list")
        margin = p.probe_margin is not None and not filtered and shape.device != "gpu" and nprobe == p.nprobe
        if margin:
            why += f", a cap: lists trailing the nearest centroid by more than {p.probe_margin:g} are skipped"
        device = "GPU" if shape.device == "gpu" and not filtered else "CPU"
        if shape.coarse == "hnsw":
            why += (f"; lists found through an HNSW graph over the {shape.nlist:,} centroids, efSearch "
                    f"{coarse_ef(nprobe, p.coarse_ef)}")
        steps.append(Step("first_pass", p.k1, _reads("codes", t), f"{why}; on the {device}", nprobe))
        path = "cascade"
        if p.int8:
            steps.append(Step("int8", p.k2 if p.full or rerank else last, _reads("int8", t),
                              f"exact int8 scores of the {p.k1} candidates"))
        if p.full:
            dims = f"the first {p.full_dims} dims" if p.full_dims else f"all {shape.full_dim} dims"
            steps.append(Step("full", last, _reads("full", t), f"exact scores over {dims} of the best "
                              f"{p.k2 if p.int8 else p.k1}"))
    if p.mode == "lexical":
        steps, path = [Step("lexical", last, _reads("lexical", t), "BM25 over the stored texts (mode lexical)")], \
            "lexical"
        notes = [n for n in notes if not n.startswith("queries that find")]
    elif p.mode == "hybrid":
        steps, path = _hybrid(steps, p, t, last), path + "+lexical"
    if rerank:
        steps.append(Step("rerank", p.k, _reads("texts", t), f"the cross-encoder reads the query and the {last} texts"))
    if t.get("int8") == "ssd" or t.get("full") == "ssd":
        notes.append("stores on SSD: each stage gathers its rows for the chunk and reads them with many reads in "
                     "flight (matryoshka.storage.row_reader)")
    return Plan(p, queries, chunk, path, tuple(steps), passing, tuple(notes))


def _hybrid(dense: list[Step], p: SearchParams, t: dict, last: int) -> list[Step]:
    """The dense steps with the lexical list joined after the first (dense) one; each later cut keeps the best by
    fusion, and the lexical rows a dense stage has not scored yet are scored by the next one."""
    fused = f"kept by {p.fusion} fusion with the BM25 ranks (lexical weight {p.lexical_weight:g})"
    steps = [dense[0], Step("lexical", p.k_lexical, _reads("lexical", t),
                            f"BM25 top {p.k_lexical} over the stored texts join the candidates")]
    steps += [Step(s.name, s.keep, s.reads, f"{s.why}; {fused}") for s in dense[1:]]
    if dense[0].name == "exhaustive":
        steps.append(Step("full", last, _reads("full", t), f"exact scores of the lexical candidates too; {fused}"))
    elif len(steps) == 2:
        steps.append(Step("fuse", last, "nothing", f"first-pass ranks {fused}"))
    return steps


def exhaustive_cheaper(shape: Shape, p: SearchParams, passing: int, rules: Rules) -> bool:
    """Whether scoring every passing row beats the widened first pass (see `Rules`): at a billion rows a
    selective filter would make the first pass scan most lists."""
    if passing <= p.k1:
        return True
    lists = min(shape.nlist, math.ceil(p.nprobe * shape.live / passing))
    scanned = lists / shape.nlist * shape.live * shape.code_size
    return passing * shape.full_dim <= max(rules.exact_filter_work, rules.exact_filter_scan_ratio * scanned)
