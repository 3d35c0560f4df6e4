"""Operating points: the fastest (nprobe, k1, k2) that reaches a recall@10 target, measured on the index itself.

Coverage and depth are separate knobs. nprobe decides which lists the first pass reads, so it bounds how many
of the true neighbours can be found at all; k1 decides how many of the scanned candidates go on to be
re-scored. One deep first pass per nprobe gives the coverage at every depth at once; the shallowest depth that
covers the target and has nearly reached the coverage of its lists is then checked with the whole cascade, and
k2 is cut as far as recall allows. Of the settings that reach the target, the cheapest wins: its cost is the work
it did on these queries, counted (lists probed, codes those lists hold, int8 and full candidates re-scored) and
priced by the machine's calibrated constants (`matryoshka.core.cost_model`), never timed, so that the same index
and queries give the same point however busy the machine is.

Queries are the user's own, or rows of the index chosen to behave like real queries (`samples.query_like`;
each one's own row left out of the truth and of the results), which must show the target itself. The truth is
the exact top 10 by the full vectors, the cascade's last stage, over every row.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from matryoshka.indexing.selection import SATURATION, sample_target
from matryoshka.core import cost_model, layout
from matryoshka.core.checks import flag, integer, number
from matryoshka.core.errors import InputError
from matryoshka.core.params import SearchParams
from matryoshka.storage import tiers
from matryoshka.storage.manifest import Manifest
from matryoshka.storage.row_reader import random_read_rate

from .first_pass import lists_probed, prune_lists
from .samples import query_like
from .traffic import stale, wilson


class Tunable(Protocol):
    """What the tuner reads of an opened index, and the one call through which it stores what it measured
    (`Index.tunable()` gives one; a test or another engine can give its own)."""

    root: Path
    count: int  # rows, deleted ones included (the build's)
    full_dim: int
    index_dim: int
    metric: str
    nlist: int
    device: str
    generation: int
    tiers: dict  # store -> tier
    factory: str  # the faiss factory string of the first pass
    build: dict  # the build's record (its training sample)
    full_path: Path  # a full-vector store file (for the device's read rate)

    def search(self, x: np.ndarray, params: SearchParams) -> np.ndarray:
        """The rows the cascade finds at `params` for full-dim query vectors."""

    def assign(self, x: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """The coarse assignment (distances, lists) of full-dim query vectors."""

    def list_sizes(self) -> np.ndarray:
        """Codes per IVF list over every shard."""

    def exact_topk(self, x: np.ndarray, k: int) -> np.ndarray:
        """The exact top k rows by the full vectors over every live row, ties by the lower row."""

    def live_rows(self) -> np.ndarray: ...

    def full_vectors(self, rows: np.ndarray) -> np.ndarray: ...

    def query_vectors(self, queries) -> np.ndarray:
        """Normalized full-dim vectors of query texts or vectors."""

    def store(self, change: Callable[[Manifest], None], lock: bool = True) -> None:
        """Apply `change` to this generation's manifest and write it, under the build lock unless the caller
        holds it; the handle adopts the result (`Index.update_settings`)."""

TARGET_RECALL = 0.95
NPROBES = (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
DEPTHS = (20, 50, 100, 150, 200, 300, 400, 600, 800, 1200, 1600)
# k2 candidates: each full-vector row costs 6-9x an int8 one (1M x 1024: 630-920 against about 105 ns per candidate,
# benchmarks/results/headline-1m-all), so k2 is cut finely
KEEP = (20, 30, 40, 50, 70, 100, 150, 200)
SAMPLE_QUERIES = 300
PASSING_NPROBES = 2  # nprobes past the first that reaches the target are slower: stop after this many
MAX_TRUTH_WORK = 2e12  # multiply-adds the build spends on exact truth at most (N x dim x queries)
MIN_VECTORS = 100  # below this the default depths reach every vector: searches are exhaustive already
ADAPTIVE_CAP = 2  # a probe margin lets a query probe up to this many times the best fixed nprobe
ADAPTIVE_LISTS = (0.5, 0.75)  # ... at these shares of that nprobe's lists on average
ADAPTIVE_STEPS = 3  # ... then bisections of the share towards the least reaching the target
# A margin replaces the fixed nprobe only when this much faster on the sample: on full GCIDE the margin fitted to
# sample vectors had real queries probe a little more (101 lists against 96), and the saving did not carry over.
ADAPTIVE_NOISE = 0.10
# Settings whose modelled costs differ by less than this are equally fast (the model is no finer): the more
# accurate wins. On the demo's 9,438 passages nprobe 4 and 8 timed 0.073 and 0.075 ms, at 0.963 and 0.981.
TIME_NOISE = 0.05


@dataclass
class OperatingPoint:
    """A measured setting, its recall@10 against the exact truth, and how it was found."""

    nprobe: int
    k1: int
    k2: int
    recall_at_10: float
    ms_per_query: float  # modelled (see cost_model), per query in a batch
    target_recall: float
    reached: bool
    queries: int
    source: str  # "index sample" or "given"
    tried: list[dict] = field(default_factory=list)
    required_recall: float | None = None  # what the queries had to show (`measure`)
    probe_margin: float | None = None  # nprobe is a cap: lists whose centroid trails the nearest by more are skipped
    lists_probed: float | None = None  # mean lists a query probed at this setting
    cost_model: dict | None = None  # the calibrated constants the costs were priced with
    within_latency: bool = True  # False: no setting met max_latency_ms; the fastest is kept
    interval: tuple[float, float] | None = None  # 95% Wilson interval of recall_at_10 over queries x 10 neighbours
    met: bool | None = None  # the interval's lower end reaches target_recall
    generation: int | None = None  # the index generation it was measured on (adds and deletes make it stale)

    def to_dict(self) -> dict:
        return asdict(self)


def exact_truth(index: "Tunable", x: np.ndarray, k: int) -> np.ndarray:
    """(nq, k) global rows of the exact top k by the full vectors, the scores of the cascade's last stage, over
    every live row (ties by the lower row)."""
    return index.exact_topk(x, k)


def _positions(found: np.ndarray, truth: np.ndarray, own: np.ndarray | None, k: int = 10) -> np.ndarray:
    """(nq, k) where each query's true top k first appears among its `found` rows, each query's own row left
    out of both (a position counts the found rows before it other than the own row); int64's max if absent."""
    if own is not None:  # the own row moved to the end of the truth, then cut
        truth = np.take_along_axis(truth, np.argsort(truth == own[:, None], axis=1, kind="stable"), 1)
    match = found[:, :, None] == truth[:, None, :k]
    hit = match.any(1)
    pos = np.where(hit, match.argmax(1), np.iinfo(np.int64).max)
    if own is not None:
        mine = found == own[:, None]
        after = mine.any(1)[:, None] & (pos > mine.argmax(1)[:, None]) & hit
        pos = pos - after
    return pos


def _recall(found: np.ndarray, truth: np.ndarray, own: np.ndarray | None, depth: int = 10, k: int = 10) -> float:
    """Mean share of the true top k among the first `depth` found, each query's own row left out of both."""
    return float((_positions(found, truth, own, k) < depth).mean())


class Pricer:
    """The modelled cost of a setting on a query batch, from the work it does: the lists it probes, the codes
    they hold in every shard, and the candidates each stage re-scores."""

    def __init__(self, index: "Tunable"):
        self.index, self.cal = index, cost_model.calibration()
        self.sizes = index.list_sizes().astype(np.float64)
        # a store on SSD costs a device read per candidate row (rows rarely share a page at scale)
        self.on_ssd = [s for s in ("int8", "full") if index.tiers.get(s) == tiers.SSD]
        self.read_ns = 0.0
        if self.on_ssd:
            path = index.full_path
            self.read_ns = cost_model.device_read_ns(path, lambda: random_read_rate(path))
        self.code = layout.parse_factory(index.factory)[1]

    def ms(self, x: np.ndarray, p: SearchParams) -> float:
        assigned = self.index.assign(x, p.nprobe)
        if p.probe_margin is not None:
            assigned = prune_lists(assigned, p.probe_margin, self.index.metric)
        lists = assigned[1]
        codes = np.where(lists >= 0, self.sizes[np.maximum(lists, 0)], 0).sum(1)
        int8 = np.minimum(codes, p.k1)
        full = np.minimum(int8, p.k2)
        reads = {"int8": int8.mean(), "full": full.mean()}
        return cost_model.query_ms(self.cal, nlist=self.index.nlist, dim=self.index.index_dim,
                                   code=self.code, lists=float((lists >= 0).sum(1).mean()), codes=float(codes.mean()),
                                   int8=float(int8.mean()), full=float(full.mean()), full_dim=self.index.full_dim,
                                   reads=float(sum(reads[s] for s in self.on_ssd)), read_ns=self.read_ns)


def _priced(index: "Tunable", pricer: Pricer, x: np.ndarray, params: SearchParams) -> tuple[np.ndarray, float]:
    return index.search(x, params), pricer.ms(x, params)


def measure(index: "Tunable", x: np.ndarray, own: np.ndarray | None = None, target: float = TARGET_RECALL,
            max_latency_ms: float | None = None, source: str = "index sample",
            required: float | None = None) -> OperatingPoint:
    """The fastest setting reaching `target` recall@10 on queries `x` (rows `own` of the index, left out of
    their own results, or None for outside queries); the most accurate one when none reaches it. With
    `max_latency_ms`, only settings at most that many ms per query (batched) count, and the fastest is kept
    when none is that fast. The queries must show `required` (default: the target, or `sample_target` of it for
    uniform rows of the index, easier than real queries)."""
    if not 0 < target <= 1:
        raise InputError(f"target recall must be in (0, 1]; got {target}")
    extra = 0 if own is None else 1
    need = required if required is not None else sample_target(target) if own is not None else target
    k = 10 + extra
    truth = exact_truth(index, x, k)
    pricer = Pricer(index)
    nlist = index.nlist
    tried, passing = [], []
    for nprobe in [p for p in NPROBES if p < nlist] + [nlist]:
        depths = sorted({min(d, index.count - extra) for d in DEPTHS})
        deep = index.search(x, SearchParams(k=depths[-1] + extra, nprobe=nprobe, k1=depths[-1] + extra,
                                            int8=False, full=False, rerank=False))
        pos = _positions(deep, truth, own)
        cover = {d: float((pos < d).mean()) for d in depths}
        # On real text the depth curve of real queries saturates later than that of the index's own vectors
        # (GCIDE: 0.937 against 0.960 at k1 50, equal from k1 200), while the coverage it saturates at, set by
        # the lists probed, carries over: so k1 must reach the flat part of the curve, not just the target.
        full_cover = cover[depths[-1]]
        depth_ok = [d for d in depths if cover[d] >= max(need, full_cover - SATURATION)] if full_cover >= need \
            else []
        for k1 in (depth_ok[:2] if depth_ok else depths[-1:]):
            # coverage short of the target: no depth can reach it, so one measured row (at the deepest k2 kept)
            # records what this nprobe gives, for the choice when nothing reaches the target
            keeps = [v for v in KEEP if v < k1] + [k1] if depth_ok else [min(KEEP[-1], k1)]
            for k2 in keeps:
                p = SearchParams(k=k, nprobe=nprobe, k1=k1 + extra, k2=k2 + extra, rerank=False)
                rows, ms = _priced(index, pricer, x, p)
                r = _recall(rows, truth, own)
                tried.append({"nprobe": nprobe, "k1": k1, "k2": k2, "coverage": cover[k1], "recall_at_10": r,
                              "ms_per_query": ms})
                if r >= need:
                    break
            if r >= need:
                break
        if tried[-1]["recall_at_10"] >= need:
            passing.append(tried[-1])
            if len(passing) >= PASSING_NPROBES:
                break
    best, reached = choose(tried, need, max_latency_ms)
    if reached and index.device != "gpu":
        adaptive = _adaptive(index, pricer, x, truth, own, best, need)
        tried += adaptive
        faster = [t for t in adaptive if t["recall_at_10"] >= need and
                  t["ms_per_query"] < best["ms_per_query"] * (1 - ADAPTIVE_NOISE)]
        if faster and (max_latency_ms is None or min(t["ms_per_query"] for t in faster) <= max_latency_ms):
            best = min(faster, key=lambda t: t["ms_per_query"])
    within = max_latency_ms is None or best["ms_per_query"] <= max_latency_ms
    interval = wilson(best["recall_at_10"], 10 * len(x))
    return OperatingPoint(best["nprobe"], best["k1"], best["k2"], best["recall_at_10"], best["ms_per_query"],
                          target, reached, len(x), source, tried, need, best.get("probe_margin"),
                          best.get("lists_probed"), pricer.cal.to_dict(), within, interval, interval[0] >= target,
                          index.generation)


def margin_for(assigned: tuple[np.ndarray, np.ndarray], lists: float, metric: str) -> float:
    """The probe margin at which queries probe `lists` lists on average (of the assignment's, by bisection)."""
    lo, hi = 0.0, float(np.abs(assigned[0][:, :1] - assigned[0]).max()) + 1e-6
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if lists_probed(prune_lists(assigned, mid, metric)) < lists else (lo, mid)
    return hi


def _adaptive(index: "Tunable", pricer: Pricer, x: np.ndarray, truth: np.ndarray, own: np.ndarray | None, best: dict,
              need: float) -> list[dict]:
    """Settings that probe up to ADAPTIVE_CAP x the best fixed nprobe, skipping far lists (probe_margin), at
    ADAPTIVE_LISTS x its lists on average, then ADAPTIVE_STEPS bisections of that share between the largest
    falling short and the smallest reaching `need`: on real text they cover more at equal lists probed, and the
    share, unlike nprobe, is continuous, so the point lands close to the target instead of a power of two past it."""
    cap = min(index.nlist, ADAPTIVE_CAP * best["nprobe"])
    if cap <= best["nprobe"]:
        return []
    assigned = index.assign(x, cap)
    extra = 0 if own is None else 1

    def trial(share: float) -> dict:
        margin = margin_for(assigned, share * best["nprobe"], index.metric)
        p = SearchParams(k=10 + extra, nprobe=cap, k1=best["k1"] + extra, k2=best["k2"] + extra, rerank=False,
                         probe_margin=margin)
        rows, ms = _priced(index, pricer, x, p)
        return {"nprobe": cap, "k1": best["k1"], "k2": best["k2"], "probe_margin": margin, "share": share,
                "lists_probed": lists_probed(prune_lists(assigned, margin, index.metric)),
                "coverage": None, "recall_at_10": _recall(rows, truth, own), "ms_per_query": ms}
    out = [trial(share) for share in ADAPTIVE_LISTS]
    lo = max([0.0] + [t["share"] for t in out if t["recall_at_10"] < need])
    hi = min([1.0] + [t["share"] for t in out if t["recall_at_10"] >= need and t["share"] > lo])
    for _ in range(ADAPTIVE_STEPS):
        out.append(trial((lo + hi) / 2))
        lo, hi = (lo, out[-1]["share"]) if out[-1]["recall_at_10"] >= need else (out[-1]["share"], hi)
    return out


def choose(tried: list[dict], target: float, max_latency_ms: float | None = None) -> tuple[dict, bool]:
    """(setting, reached): the fastest setting reaching `target` (of those within TIME_NOISE of the fastest,
    the most accurate), else the most accurate; only settings within `max_latency_ms` count, and the fastest of
    all when none is."""
    within = [t for t in tried if max_latency_ms is None or t["ms_per_query"] <= max_latency_ms] or \
        [min(tried, key=lambda t: t["ms_per_query"])]
    passing = [t for t in within if t["recall_at_10"] >= target]
    if passing:
        fastest = min(t["ms_per_query"] for t in passing)
        tied = [t for t in passing if t["ms_per_query"] <= fastest * (1 + TIME_NOISE)]
        return max(tied, key=lambda t: (t["recall_at_10"], -t["ms_per_query"])), True
    return max(within, key=lambda t: (t["recall_at_10"], -t["ms_per_query"])), False


def truth_work(index: "Tunable", queries: int = SAMPLE_QUERIES) -> float:
    return float(index.count) * index.full_dim * queries


def store(index: "Tunable", point: OperatingPoint, lock: bool = True) -> None:
    """Record `point` in the index's manifest (atomically, under the build lock unless the caller holds it) and
    make it this handle's default."""
    key = tiers.point_key(index.tiers)

    def put(m: Manifest) -> None:
        if key:
            m.operating_points = {**m.operating_points, key: point.to_dict()}
        else:
            m.operating_point = point.to_dict()
    index.store(put, lock)


def tune(index: "Tunable", target_recall: float = TARGET_RECALL, queries=None, max_latency_ms: float | None = None,
         n_queries: int = SAMPLE_QUERIES, save: bool = True, lock: bool = True,
         source: str = "given") -> OperatingPoint:
    """Measure the operating point for `target_recall` on `queries` (texts or vectors; default: a sample of the
    index's own vectors), and store it as the index's default unless save=False. `source` names where given
    queries came from ("given", or "traffic": the handle's sample of live queries)."""
    number("target recall (target_recall)", target_recall, 0, 1, low_open=True)
    number("max_latency_ms", max_latency_ms, 0, low_open=True, optional=True)
    integer("n_queries", n_queries)
    flag("save", save)
    if index.count < MIN_VECTORS:
        raise InputError(f"the index holds {index.count} vectors, too few to tune: the default depths already "
                         "reach every one of them, so every search is exhaustive")
    if queries is None:
        own, x = query_like(index, n_queries)
        point = measure(index, x, own, target_recall, max_latency_ms, required=target_recall)
    else:
        x = index.query_vectors(queries)
        point = measure(index, x, None, target_recall, max_latency_ms, source=source)
    if not point.within_latency:
        raise InputError(f"no setting meets max_latency_ms={max_latency_ms}: the fastest tried costs "
                         f"{point.ms_per_query:.3g} ms per query (modelled, in a batch) at recall@10 "
                         f"{point.recall_at_10:.3f}; allow more time, or build with fewer lists or a smaller code. "
                         "Nothing was stored")
    if save:
        store(index, point, lock)
    return point


def describe(point: dict, generation: int | None = None) -> str:
    """One line: the setting, its measured recall (with its interval) and time, on what it was measured, whether
    its target is met, and whether the index changed since (`generation`: the index's now). A figure the stored
    point lacks (a manifest edited by hand) shows as "?"."""
    get = point.get
    margin = get("probe_margin")
    probe = (f"nprobe {point['nprobe']}" if not _number(margin) else
             f"nprobe up to {point['nprobe']} with probe margin {margin:.3g} "
             f"({_shown(get('lists_probed'), '.0f')} lists on average)")
    line = (f"{probe}, k1 {point['k1']}, k2 {point['k2']}: recall@10 {_shown(get('recall_at_10'), '.3f')} "
            f"on {get('queries', '?')} {get('source', '?')} queries, {_shown(get('ms_per_query'), '.2f')} ms/query "
            "in a batch (modelled)")
    target = get("target_recall")
    if _number(get("required_recall")) and _number(target) and point["required_recall"] > target:
        line += f" (target {target}, {point['required_recall']:.2f} required of the index's own vectors)"
    if get("reached") is False:
        line += (f"; the target {target} was not reached by any setting tried: the most accurate is kept (rebuild "
                 "with more lists or a larger index dim)")
    interval = get("interval")
    if isinstance(interval, (list, tuple)) and len(interval) == 2 and all(map(_number, interval)):
        line += f"; 95% interval {interval[0]:.3f}-{interval[1]:.3f}"
        if get("reached") and not get("met") and _number(target):
            line += (f": its lower end falls {target - interval[0]:.3f} short of the target with {get('queries', '?')} "
                     "queries, so the target is not shown met (tune on more queries)")
    if stale(point, generation):
        line += (f"; measured on generation {point['generation']}, the index is at {generation} since: re-tune "
                 "(`matryoshka tune`, or index.tune(from_traffic=True))")
    return line


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _shown(v, spec: str) -> str:
    return format(v, spec) if _number(v) else "?"
