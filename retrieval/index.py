"""Opening an index and searching it through the cascade: first pass -> int8 -> full dims -> cross-encoder."""
from __future__ import annotations

import ctypes
import time
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np
import pyarrow as pa

from matryoshka.core import encoder, layout
from matryoshka.core.device import check_faiss_install, resolve_device, set_threads
from matryoshka.core.errors import IndexFormatError, InputError
from matryoshka.core.codec import Int8Codec
from matryoshka.core.codec import ShortTransform
from matryoshka.core.vectors import as_matrix, normalize
from rerank.cross_encoder import CrossEncoderReranker

from .first_pass import FirstPass, merge_topk
from matryoshka.storage.manifest import read_manifest
from .results import Hit, SearchResult
from matryoshka.storage.shard_files import check_files, read_faiss
from .shard_group import ShardGroup, keep as _keep

OPEN_ATTEMPTS = 3
MAX_BATCH = 1024  # queries scored at once; larger batches are split so memory stays bounded


def release_free_memory() -> None:
    """Return the heap freed while opening (checksum buffers, Parquet decoding, the centroid copies) to the
    OS, so that resident memory is what the index holds: 16 MB of slack at 1M vectors otherwise."""
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


class Index:
    """An opened index. `search` answers one query, `search_batch` many (the fast path)."""

    def __init__(self, path: str | Path, *, device: str = "auto", model=None, reranker=None,
                 threads: int | None = None, verify: bool = False):
        check_faiss_install()
        self.root = Path(path)
        self.device = resolve_device(device)
        set_threads(threads)
        for attempt in range(OPEN_ATTEMPTS):
            self.manifest = read_manifest(self.root)
            try:
                self._open(verify)
                break
            except IndexFormatError:
                # An index replaced while we opened it (an overwrite swaps folders) looks damaged for a moment:
                # open it again; a manifest that did not change means the damage is real.
                if attempt == OPEN_ATTEMPTS - 1 or not self._replaced():
                    raise
                time.sleep(0.05 * (attempt + 1))
        release_free_memory()
        self._model_arg, self._model = model, None
        if model is not None:
            self._load_model()
        self.reranker = CrossEncoderReranker(reranker, device="cpu") if isinstance(reranker, str) else reranker

    def _replaced(self) -> bool:
        try:
            return read_manifest(self.root) != self.manifest
        except IndexFormatError:
            return True

    def _open(self, verify: bool) -> None:
        m = self.manifest
        check_files(self.root, {layout.TRAINED: m["trained"], layout.TRANSFORM: m["transform_file"]}, deep=True)
        self.metric, self.full_dim, self.index_dim = m["metric"], m["full_dim"], m["index_dim"]
        with np.load(self.root / layout.TRANSFORM) as a:
            self.transform = ShortTransform.from_arrays(a)
            self.codec = Int8Codec(a["int8_offset"], a["int8_scale"])
        self.trained = read_faiss(self.root / layout.TRAINED)
        self.assigner = FirstPass(self.trained, [], self.metric, "cpu")  # the one coarse assignment per batch
        self.starts = np.array([s["id_start"] for s in m["shards"]], dtype=np.int64)
        self.count = m["count"]
        self._open_groups(verify)

    def _open_groups(self, verify: bool) -> None:
        """One group over every shard, in this process (a distributed searcher puts groups in workers)."""
        self.group = ShardGroup(self.root, self.manifest, None, self.device, verify, self.codec, self.trained)
        self.shards, self.first_pass = self.group.shards, self.group.first
        count = sum(s.count for s in self.shards)
        if count != self.count:
            raise IndexFormatError(f"{self.root}: shards hold {count} vectors, the manifest says {self.count}")

    def _fan(self, method: str, args: tuple, missing: set) -> list:
        """Call `method` on every shard group; the answers of those that answered (`missing` gets the
        shard numbers of groups that could not answer, when partial results are allowed)."""
        return [getattr(self.group, method)(*args)]

    # -- queries -------------------------------------------------------------------------------------------
    def _load_model(self):
        if self._model is None:
            rec = self.manifest["model"]
            arg = self._model_arg
            if rec is None and arg is None:
                raise InputError("this index was built from vectors without a model, so it cannot encode text "
                                 "queries; search with vectors, or open it with model=NAME (--model) naming the "
                                 "model that made its vectors")
            if arg is None or isinstance(arg, str):
                name = arg or rec["name"]
                model = encoder.load_model(name)
            else:  # a loaded SentenceTransformer
                name, model = "the given model", arg
            if rec is not None:
                encoder.check_fingerprint(rec, encoder.fingerprint(model, name))
            self._model = model
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Encode query texts with the index's model (loaded on first use)."""
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise InputError(f"query {i} is empty or not a string; give non-empty query text")
        return encoder.encode(self._load_model(), list(texts))

    def _vectors(self, queries) -> tuple[np.ndarray, list[str] | None]:
        if isinstance(queries, str):
            queries = [queries]
        if isinstance(queries, (list, tuple)) and queries and all(isinstance(q, str) for q in queries):
            x = self.encode(queries)
            texts = list(queries)
        else:
            if isinstance(queries, (list, tuple)) and len(queries) == 0:
                raise InputError("no queries were given")
            x, texts = queries, None
        x = as_matrix(x, self.full_dim, "query vectors")
        if len(x) == 0:
            raise InputError("no queries were given")
        return normalize(x, self.metric, "query vectors"), texts

    def search(self, query, k: int = 10, **options) -> list[Hit]:
        """Search one query (text or full-dim vector); see `search_batch` for the options."""
        if not isinstance(query, str):
            query = np.asarray(query, dtype=np.float32)
            if query.ndim != 1:
                raise InputError(f"search takes one query vector (1-D); got shape {query.shape}: use search_batch")
            query = query[None, :]
        qt = options.pop("query_texts", None)
        return self.search_batch(query, k, query_texts=qt if qt is None else [qt], **options).hits(0)

    def search_batch(self, queries, k: int = 10, *, nprobe: int = 32, k1: int = 500, k2: int = 100,
                     k3: int = 50, int8: bool = True, full: bool = True, rerank: bool | None = None,
                     full_dims: int | None = None, query_texts: Sequence[str] | None = None) -> SearchResult:
        """Search a batch of queries (a list of texts or an (n, full_dim) matrix).

        k1: first-pass depth; k2: kept after int8 re-scoring; k3: kept after full re-scoring for the
        cross-encoder; k: returned. int8 / full / rerank switch stages off; rerank=None runs it when a
        reranker is configured and texts exist. full_dims re-scores with only the first dims (a cheaper tier).
        """
        for name, v in (("k", k), ("nprobe", nprobe), ("k1", k1), ("k2", k2), ("k3", k3)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise InputError(f"{name} must be a positive integer; got {v!r}")
        if full_dims is not None and not 1 <= full_dims <= self.full_dim:
            raise InputError(f"full_dims must be between 1 and {self.full_dim}; got {full_dims}")
        t0 = time.perf_counter()
        x, texts = self._vectors(queries)
        if query_texts is not None:
            texts = list(query_texts)
            if len(texts) != len(x):
                raise InputError(f"{len(texts)} query texts for {len(x)} query vectors")
        timings = {"encode": time.perf_counter() - t0}
        rerank = self._rerank_wanted(rerank, texts)
        k1 = max(k1, k)
        k2 = min(max(k2, k), k1)
        k3 = min(max(k3, k), k2)
        parts = [self._cascade(x[lo:lo + MAX_BATCH], None if texts is None else texts[lo:lo + MAX_BATCH], k,
                               nprobe, k1, k2, k3, int8, full, rerank, full_dims, timings)
                 for lo in range(0, len(x), MAX_BATCH)]
        return parts[0] if len(parts) == 1 else _concat(parts, timings)

    def _rerank_wanted(self, rerank: bool | None, texts) -> bool:
        possible = self.reranker is not None and texts is not None and self.manifest["has_text"]
        if rerank and not possible:
            why = ("no cross-encoder is configured (open the index with reranker=NAME, or --reranker NAME)"
                   if self.reranker is None else "the index stores no texts" if not self.manifest["has_text"]
                   else "the queries are vectors without query_texts")
            raise InputError(f"rerank=True but {why}")
        return possible if rerank is None else rerank

    def _cascade(self, x, texts, k, nprobe, k1, k2, k3, int8, full, rerank, full_dims, timings) -> SearchResult:
        """First pass on every group -> global top k1 -> re-scoring by the owners -> cuts -> cross-encoder.

        Every group answers only for its own shards and the merges break ties by row, so one group or many
        give the identical result."""
        def lap(name, t):
            now = time.perf_counter()
            timings[name] = timings.get(name, 0.0) + now - t
            return now

        missing: set = set()
        t = time.perf_counter()
        short = self.transform.apply(x)
        assigned = None if self.device == "gpu" else self.assigner.assign(short, nprobe)
        parts = self._fan("first_pass", (short, k1, nprobe, assigned), missing)
        s1, cand = merge_topk([p[0] for p in parts], [p[1] for p in parts], k1)
        stages = {"first_pass": s1}
        t = lap("first_pass", t)
        if int8 or full:
            parts = self._fan("rescore", (x, short, cand, int8, full, k2, full_dims), missing)
            for name in [n for n, on in (("int8", int8), ("full", full)) if on]:
                got = [p[name] for p in parts]  # -inf where a group does not own the row
                stages[name] = np.maximum.reduce(got) if got else np.full(cand.shape, -np.inf, np.float32)
        if int8:
            cand, stages = _keep(cand, stages, "int8", k2)
            t = lap("int8", t)
        if full:
            cand, stages = _keep(cand, stages, "full", k3 if rerank else k)
            t = lap("full", t)
        if rerank:
            _, docs = self._lookup(cand, True, missing)
            scores = self.reranker.score(texts, docs)
            s = np.full(cand.shape, -np.inf, dtype=np.float32)
            for i, row in enumerate(scores):
                s[i, : len(row)] = row
            stages["rerank"] = s
            cand, stages = _keep(cand, stages, "rerank", k)
            t = lap("rerank", t)
        last = list(stages)[-1]
        cand, stages = _keep(cand, stages, last, k)
        ids, out_texts = self._lookup(cand, self.manifest["has_text"], missing)
        if missing:  # rows of a group that stopped answering after the first pass cannot be returned
            lost = np.array([[v is None for v in row] for row in ids], dtype=bool).reshape(cand.shape) & (cand >= 0)
            if lost.any():
                stages = {n: np.where(lost, -np.inf, v).astype(np.float32) for n, v in stages.items()}
                cand, stages = _keep(cand, stages, last, k)
                ids, out_texts = self._lookup(cand, self.manifest["has_text"], missing)
        lap("ids_and_texts", t)
        return SearchResult(cand, stages[last].copy(), stages, ids, out_texts, timings, bool(missing),
                            sorted(missing))

    def _lookup(self, cand: np.ndarray, texts: bool, missing: set) -> tuple[list[list], list[list[str]] | None]:
        """External ids per query (None for rows of groups that could not answer) and, if asked, texts of the
        valid rows."""
        flat = cand.ravel()
        ids: list = [None] * len(flat)
        out: list = [""] * len(flat)
        for g_ids, g_texts in self._fan("lookup", (flat, texts), missing):
            for p, v in enumerate(g_ids):
                if v is not None:
                    ids[p] = v
                    if texts:
                        out[p] = g_texts[p]
        kk = cand.shape[1]
        id_rows = [ids[i * kk:(i + 1) * kk] for i in range(cand.shape[0])]
        if not texts:
            return id_rows, None
        return id_rows, [[out[i * kk + j] for j in range(kk) if cand[i, j] >= 0] for i in range(cand.shape[0])]

    # -- description ---------------------------------------------------------------------------------------
    def info(self) -> dict:
        """Manifest summary with bytes per vector resident in RAM, memory-mapped, and on disk."""
        n = max(self.count, 1)
        ivf = faiss.extract_index_ivf(self.trained)
        if hasattr(self, "shards"):  # external ids, held in RAM (by the workers, in a distributed searcher)
            id_maps = sum(s.ids.nbytes for s in self.shards if s.ids is not None)
        else:
            id_maps = sum(s["files"][layout.IDS_FILE]["bytes"] for s in self.manifest["shards"]
                          if not s.get("ids_are_rows"))
        # code + faiss's int64 row id per vector, the external ids, one copy of the centroids
        ram = ivf.code_size + 8 + (id_maps + ivf.nlist * self.index_dim * 4) / n
        shard_bytes = [sum(f["bytes"] for f in s["files"].values()) for s in self.manifest["shards"]]
        mmapped = self.count * (self.index_dim + 2 * self.full_dim)  # int8 short + float16 full rows
        disk = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
        return {"path": str(self.root), "count": self.count, "metric": self.metric, "full_dim": self.full_dim,
                "index_dim": self.index_dim, "factory": self.manifest["factory"],
                "transform": self.manifest["transform"], "model": (self.manifest["model"] or {}).get("name"),
                "device": self.device,
                "shards": [{"number": s["number"], "count": s["count"], "bytes": b}
                           for s, b in zip(self.manifest["shards"], shard_bytes)],
                "ram_bytes_per_vector": ram, "mmap_bytes_per_vector": mmapped / n,
                "disk_bytes_per_vector": disk / n, "build": self.manifest["build"]}


def _concat(parts: list[SearchResult], timings: dict) -> SearchResult:
    k = max(p.rows.shape[1] for p in parts)

    def pad(a, fill):
        return np.pad(a, ((0, 0), (0, k - a.shape[1])), constant_values=fill)
    return SearchResult(np.vstack([pad(p.rows, -1) for p in parts]),
                        np.vstack([pad(p.scores, -np.inf) for p in parts]),
                        {s: np.vstack([pad(p.stage_scores[s], -np.inf) for p in parts]) for s in parts[0].stage_scores},
                        [ids for p in parts for ids in p.ids],
                        None if parts[0].texts is None else [t for p in parts for t in p.texts], timings,
                        any(p.partial for p in parts), sorted({s for p in parts for s in p.missing_shards}))


def open_index(path: str | Path, *, ray: str | None = None, **kwargs) -> Index:
    """Open an index folder for search; see `Index` for device, model, reranker and threads.

    ray="auto" or a cluster address searches with Ray actors instead (see `retrieval.distributed_search`;
    needs the `distributed` extra); kwargs then also take RayIndex's options (workers, allow_partial, ...)."""
    if ray:
        from .distributed_search import RayIndex
        kwargs.pop("device", None)
        return RayIndex(path, address=ray, **kwargs)
    return Index(path, **kwargs)
