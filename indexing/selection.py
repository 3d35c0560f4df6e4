"""Choosing the partition (nlist) and the first-pass code by measurement on the build's training sample.

Each candidate is an IVF index over the sample with the nlist the full index would have. Held-out sample rows
are the queries, their exact full-dim top-10 over the sample the truth: sparser than the full data, so coverage
is a little pessimistic, alike for every candidate. A candidate's cost is the cheapest way it reaches the
coverage target, extrapolated to N vectors from the work counted on the sample and priced by the machine's
calibrated constants (`matryoshka.core.cost_model`), never by timing: the same sample gives the same choice on
an idle or a loaded machine.

    coarse assignment (nlist x dim) + nprobe lists + the share of the sample's codes those lists hold x N codes
    x code bytes + depth int8 candidates x dim

The depth is the one the tuner (retrieval.tuning) will take: reaching the target and within SATURATION of what
the probed lists hold at any depth. Coarser codes rank worse and need more of it.

The partition is chosen first, with the default code; then the code on that partition (the lists, and so the
coverage, do not depend on the code); then a learned (OPQ) rotation against the fixed random one.

Of partitions within NOISE of the fastest, the one with the fewest lists (least RAM) wins; a code or rotation
replaces the default only when it is faster by more than NOISE.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import faiss
import numpy as np

from matryoshka.core import cost_model

from . import ivf

SAMPLE_MISS_SHARE = 0.8  # the index's own vectors are easier queries than real ones (see the README's GCIDE run)
NPROBES = (4, 8, 16, 32, 64, 128, 256, 512)
DEPTHS = (20, 50, 100, 200, 400, 800)
QUERIES = 200
MIN_ROWS = 20_000  # below this, candidates' times differ by noise: the rules of thumb stand
MAX_ROWS = 131_072  # rows a candidate index holds, bounding what selection adds to the build
OPQ_ROWS = 32_768
NOISE = 0.10
SATURATION = 0.005  # depth goes as deep as it takes to come this close to the coverage of the lists probed
OPQ_ITERATIONS = 10


@dataclass
class Candidate:
    """One measured (nlist, code, rotation): its cheapest setting reaching the target, or its best coverage."""

    nlist: int
    code: str
    rotation: str  # "random" (fixed, already in the transform) or "opq" (learned on the sample)
    reached: bool = False
    nprobe: int | None = None
    depth: int | None = None
    coverage: float = 0.0
    ms_per_query: float = float("inf")  # modelled: first pass over N vectors + int8 re-scoring of `depth`

    @property
    def factory(self) -> str:
        return f"IVF{self.nlist},{self.code}"


@dataclass
class Selection:
    """What was measured and chosen; `rotation` is the learned (d, d) OPQ matrix when OPQ won."""

    nlist: int
    code: str
    rotation_kind: str
    candidates: list[Candidate] = field(default_factory=list)
    reason: str = ""
    target_coverage: float = 0.96
    sample_rows: int = 0
    queries: int = 0
    int8_ns_per_candidate: float = 0.0
    cost_model: dict = field(default_factory=dict)  # the calibrated constants every cost was priced with
    rotation: np.ndarray | None = None

    @property
    def factory(self) -> str:
        return f"IVF{self.nlist},{self.code}"

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("rotation", "candidates")}
        d["candidates"] = [asdict(c) for c in self.candidates]
        return d


def sample_target(target_recall: float) -> float:
    """What sample queries must show for `target_recall`: 20% fewer misses (0.95 -> 0.96, 0.99 -> 0.992)."""
    return 1.0 - (1.0 - target_recall) * SAMPLE_MISS_SHARE


def _truth(queries: np.ndarray, base: np.ndarray, metric: str) -> np.ndarray:
    _, truth = faiss.knn(queries, base, 10, metric=ivf.faiss_metric(metric))
    return truth


def _coverage(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(depths,) share of the true top-10 within each of DEPTHS of `found` (nq, max depth)."""
    out = []
    for depth in DEPTHS:
        top = found[:, :depth]
        out.append(np.mean([np.isin(t, f).mean() for t, f in zip(truth, top)]))
    return np.array(out)


def _measure(c: Candidate, index: faiss.Index, base: np.ndarray, queries: np.ndarray, truth: np.ndarray,
             n: int, cal: cost_model.Calibration, target: float) -> Candidate:
    index.add(base)
    ivf = faiss.extract_index_ivf(index)
    sizes = np.array([ivf.invlists.list_size(i) for i in range(ivf.nlist)], dtype=np.float64)
    for nprobe in NPROBES:
        if nprobe > c.nlist:
            break
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        _, found = index.search(queries, DEPTHS[-1], params=params)
        cov = _coverage(found, truth)
        c.coverage = max(c.coverage, float(cov[-1]))
        # the depth the tuner will take: the target, and within SATURATION of what these lists hold at all
        ok = np.flatnonzero(cov >= max(target, cov[-1] - SATURATION))
        if not len(ok):
            continue
        depth = DEPTHS[ok[0]]
        _, lists = ivf.quantizer.search(queries, nprobe)
        share = float(sizes[lists].sum(1).mean() / len(base))  # of the codes, scanned per query
        ms = cost_model.query_ms(cal, nlist=c.nlist, dim=base.shape[1], code=c.code, lists=nprobe,
                                 codes=share * n, int8=depth)
        if ms < c.ms_per_query:
            c.reached, c.nprobe, c.depth, c.ms_per_query, c.coverage = True, nprobe, depth, ms, float(cov[ok[0]])
        elif c.reached:
            break  # more lists cost more than they save in depth from here on
    return c


def learn_opq(short: np.ndarray, code: str) -> np.ndarray:
    """A learned (d, d) OPQ rotation for `code` on (the first OPQ_ROWS of) `short`: y = x @ rotation."""
    dim = short.shape[1]
    opq = faiss.OPQMatrix(dim, int(code[2:].split("x")[0]))
    opq.niter = OPQ_ITERATIONS
    opq.train(np.ascontiguousarray(short[:OPQ_ROWS]))
    return faiss.vector_to_array(opq.A).reshape(dim, dim).T.astype(np.float32)


def _new_ivf(code: str, centroids: np.ndarray, metric: str) -> faiss.Index:
    """An IVF index over fixed centroids (so every code is measured on the same lists), PQ still untrained."""
    index = ivf.new_index(f"IVF{len(centroids)},{code}", centroids.shape[1], metric)
    inner = faiss.downcast_index(faiss.extract_index_ivf(index))
    inner.quantizer.add(centroids)
    if hasattr(inner, "do_polysemous_training"):
        inner.do_polysemous_training = False
    return index


def _kmeans(x: np.ndarray, k: int, metric: str, seed: int) -> np.ndarray:
    km = faiss.Kmeans(x.shape[1], k, niter=10, seed=seed, spherical=metric != "l2", verbose=False,
                      min_points_per_centroid=8)  # a measurement, not the index: fewer points do
    km.train(x)
    return km.centroids


def _better(new: Candidate, old: Candidate) -> bool:
    if new.reached != old.reached:
        return new.reached
    if not new.reached:
        return new.coverage > old.coverage + 0.005
    return new.ms_per_query < old.ms_per_query * (1 - NOISE)


def _fewest_lists_within_noise(tried: list[Candidate]) -> Candidate:
    """The partition with the fewest lists (the least RAM for centroids) among those within NOISE of the
    fastest; where none reaches the target, the one covering most."""
    reached = [c for c in tried if c.reached]
    if not reached:
        return max(tried, key=lambda c: c.coverage)
    fastest = min(c.ms_per_query for c in reached)
    return min((c for c in reached if c.ms_per_query <= fastest * (1 + NOISE)), key=lambda c: c.nlist)


def nlist_candidates(n: int, auto: int) -> list[int]:
    """The rule of thumb (about 4 sqrt(N)) first, then half and twice as many lists where `n` sample rows can
    train them."""
    top = max(1, n // ivf.MIN_POINTS_PER_LIST)
    return list(dict.fromkeys(x for x in (auto, auto // 2, auto * 2) if 1 <= x <= top))


def code_candidates(pq_bytes: int, dim: int, device: str, fast_scan: bool | None) -> list[str]:
    """Codes of pq_bytes bytes: 4-bit fast-scan (CPU only) and 8-bit PQ, unless the user fixed one."""
    out = []
    if fast_scan is not False and device != "gpu" and dim % (2 * pq_bytes) == 0:
        out.append(f"PQ{pq_bytes * 2}x4fs")
    if fast_scan is not True and dim % pq_bytes == 0:
        out.append(f"PQ{pq_bytes}")
    return out


def select(sample: np.ndarray, short: np.ndarray, n: int, metric: str, pq_bytes: int, device: str,
           nlist: int | None = None, fast_scan: bool | None = None, seed: int = 0,
           target_recall: float = 0.95, rotation: str | None = None) -> Selection | None:
    """Measure and choose nlist, code and rotation for an index of `n` vectors, from its training sample (full
    vectors and their short form), for `target_recall` (as `sample_target` asks of sample queries, like the
    tuner); `rotation` "opq" or "random" is taken without measuring the other. None when the sample is too
    small to measure anything but noise, or no code fits the dim. The measurement runs on the CPU; a GPU build is
    offered only 8-bit codes."""
    dim = short.shape[1]
    codes = code_candidates(pq_bytes, dim, device, fast_scan)
    auto = ivf.choose_nlist(n)
    nlists = [nlist] if nlist else nlist_candidates(min(n, len(short) - QUERIES), auto)
    if len(short) < MIN_ROWS or not codes:
        return None
    cal = cost_model.calibration()
    target = sample_target(target_recall)
    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(len(short))
    q_rows, b_rows = np.sort(order[:QUERIES]), np.sort(order[QUERIES:QUERIES + MAX_ROWS])
    base, queries = short[b_rows], short[q_rows]
    truth = _truth(sample[q_rows], sample[b_rows], metric)

    def measure(nl: int, code: str, rotation: str, centroids: np.ndarray, b: np.ndarray, q: np.ndarray) -> Candidate:
        index = _new_ivf(code, centroids, metric)
        index.train(b)
        return _measure(Candidate(nl, code, rotation), index, b, q, truth, n, cal, target)

    tried: list[Candidate] = []
    centroids = {}
    for nl in nlists:
        centroids[nl] = _kmeans(base, nl, metric, seed)
        tried.append(measure(nl, codes[0], "random", centroids[nl], base, queries))
    best = _fewest_lists_within_noise(tried)
    best_centroids = centroids[best.nlist]
    for code in codes[1:]:
        c = measure(best.nlist, code, "random", best_centroids, base, queries)
        tried.append(c)
        if _better(c, best):
            best = c
    # OPQ on the chosen code: its rotation folds into the transform, at no search cost on either device
    opq_rotation = None
    if rotation != "random":
        learned = learn_opq(base, best.code)
        c = measure(best.nlist, best.code, "opq", best_centroids @ learned, base @ learned, queries @ learned)
        tried.append(c)
        if rotation == "opq" or _better(c, best):
            best, opq_rotation = c, learned
    default = tried[0]
    reason = ("the rule of thumb's plan: no other was faster by more than noise" if best is default else
              f"{best.factory} ({best.rotation} rotation) reached coverage {target} at "
              f"{best.ms_per_query:.3f} modelled ms per query against {default.ms_per_query:.3f} for {default.factory}"
              if best.reached else f"no candidate reached coverage {target}; {best.factory} covered most")
    return Selection(best.nlist, best.code, best.rotation, tried, reason, target, len(base), len(queries),
                     cal.int8_ns * dim, cal.to_dict(), opq_rotation)
