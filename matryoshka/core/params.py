"""Search options as one value: what the CLI builds, what an index stores as its operating point, what
benchmarks sweep."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from .checks import flag, integer, number
from .errors import InputError, UnknownOption

DEPTHS = ("k", "nprobe", "k1", "k2", "k3", "k_lexical")
MODES = ("dense", "lexical", "hybrid")
FUSIONS = ("rrf", "weighted")


@dataclass(frozen=True)
class SearchParams:
    """Depth and switch of each stage of the cascade.

    nprobe: IVF lists scanned; k1: first-pass depth; k2: kept after int8 re-scoring; k3: kept after full
    re-scoring for the cross-encoder; k: returned. int8 / full / rerank switch stages off (rerank=None runs
    it when a reranker is configured and texts exist); full_dims re-scores with only the first dims (a
    cheaper tier). coarse_ef: how deep an HNSW coarse quantizer (indexes of many lists) searches its graph
    for the nprobe lists (None: 2 x nprobe, at least 64). probe_margin makes nprobe a cap: a query skips the
    lists whose centroid scores trail its nearest centroid's by more than the margin (CPU first pass; the
    tuner measures it).

    mode: "dense" (the cascade), "lexical" (BM25 over the stored texts alone) or "hybrid" (the BM25 top
    k_lexical join the first pass's candidates; each later cut orders them by `fusion` of the dense stage's
    ranks and the BM25 ranks: "rrf", reciprocal ranks, or "weighted", per-query min-max normalized scores,
    the BM25 side weighted by lexical_weight). Lexical and hybrid need an index built with lexical=True and
    query texts. A query text is plain words; lexical_syntax=True reads it in tantivy's query language instead
    (AND, OR, NOT, "phrases", field:value), scored with each shard's own statistics.
    """

    k: int = 10
    nprobe: int = 32
    k1: int = 500
    k2: int = 100
    k3: int = 50
    int8: bool = True
    full: bool = True
    rerank: bool | None = None
    full_dims: int | None = None
    probe_margin: float | None = None
    mode: str = "dense"
    k_lexical: int = 100
    fusion: str = "weighted"  # with lexical_weight 0.5: the best of those measured on two tasks (benchmarks.hybrid)
    lexical_weight: float = 0.5
    lexical_syntax: bool = False
    coarse_ef: int | None = None

    def updated(self, **changes) -> "SearchParams":
        """A copy with some fields changed; an unknown name is an InputError listing the known ones. A new nprobe
        without a probe_margin is probed in full (a stored margin made the old nprobe a cap)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise UnknownOption(f"unexpected keyword argument(s) {', '.join(map(repr, unknown))}: not search "
                                f"options; known: {', '.join(sorted(known))}")
        if "nprobe" in changes:
            changes.setdefault("probe_margin", None)
        return replace(self, **changes)

    def checked(self, full_dim: int) -> "SearchParams":
        """Validated, with the depths made consistent: k <= k3 <= k2 <= k1."""
        for name in DEPTHS:
            integer(name, getattr(self, name))
        if isinstance(self.probe_margin, float) and self.probe_margin == float("inf"):
            raise InputError("probe_margin must be finite; leave it out (None) to probe every list asked for")
        number("probe_margin", self.probe_margin, 0, float("inf"), optional=True)
        integer("full_dims", self.full_dims, 1, full_dim, optional=True)
        integer("coarse_ef", self.coarse_ef, 1, None, optional=True)
        flag("int8", self.int8)
        flag("full", self.full)
        flag("rerank", self.rerank, optional=True)
        flag("lexical_syntax", self.lexical_syntax)
        for name, value, allowed in (("mode", self.mode, MODES), ("fusion", self.fusion, FUSIONS)):
            if value not in allowed:
                raise InputError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        number("lexical_weight", self.lexical_weight, 0, float("inf"))
        k1 = max(self.k1, self.k)
        k2 = min(max(self.k2, self.k), k1)
        return replace(self, k1=k1, k2=k2, k3=min(max(self.k3, self.k), k2))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SearchParams":
        return cls().updated(**d)


def coarse_ef(nprobe: int, ef: int | None) -> int:
    """How deep an HNSW coarse quantizer searches for `nprobe` lists: `ef` as asked (never below nprobe), else
    twice nprobe and at least 64 (recall of the lists >= 0.99 at 65k-262k lists:
    benchmarks/results/coarse-quantizer.json)."""
    return max(nprobe, ef if ef is not None else max(64, 2 * nprobe))
