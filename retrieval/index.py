"""Opening an index and searching it through the cascade: first pass -> int8 -> full dims -> cross-encoder."""
from __future__ import annotations

import copy
import ctypes
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import faiss
import numpy as np
import pyarrow as pa

from matryoshka.core import checks, encoder, layout
from matryoshka.core.codec import Codec
from matryoshka.core.device import check_faiss_install, resolve_device, set_threads
from matryoshka.core.errors import IndexFormatError, InputError
from matryoshka.core.params import SearchParams
from matryoshka.core.shared_lock import SharedLock
from matryoshka.core.timing import StageTimer
from matryoshka.core.vectors import as_matrix, normalize
from matryoshka.indexing.ids import coerce_ids, id_list
from matryoshka.storage import dict_filters
from matryoshka.storage.attribute_schema import manifest_schema
from matryoshka.indexing.folder import BuildLock
from matryoshka.storage.manifest import Manifest, moved_on, read_manifest, write_manifest
from matryoshka.storage import tiers
from matryoshka.storage.pinned import PinnedFolder
from matryoshka.storage.shard_files import read_shared
from matryoshka.storage.tiers import SsdReads
from matryoshka.rerank.cross_encoder import CrossEncoderReranker
from matryoshka.rerank.rescore import keep

from . import filters
from .backend import Backend
from .first_pass import FirstPass
from .plan import Plan, Rules, Shape, plan
from .runner import run
from .stages import Running
from .describe import describe
from .results import Hit, Record, SearchResult
from .shard_group import ShardGroup
from .traffic import Reservoir
from .tuning import Tunable, describe as describe_point

OPEN_ATTEMPTS = 4
MIN_TRAFFIC = 50  # live queries a re-tune from traffic needs at least

# (root, manifest, codec, trained, verify) -> the backend that holds the shards
BackendFactory = Callable[[PinnedFolder, Manifest, Codec, faiss.Index, bool], Backend]


def release_free_memory() -> None:
    """Return the heap freed while opening (checksum buffers, Parquet decoding, the centroid copies) to the
    OS, so that resident memory is what the index holds: 16 MB of slack at 1M vectors otherwise."""
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


class Index:
    """An opened index. `search` answers one query, `search_batch` many (the fast path).

    The shards are held by a backend: every shard in this process (the default), or Ray workers
    (`retrieval.open_index(path, ray=...)`)."""

    def __init__(self, path: str | Path, *, device: str = "auto", model=None, reranker=None,
                 threads: int | None = None, verify: bool = False, backend: BackendFactory | None = None,
                 memory_budget: int | str | None = None, ssd_reads: SsdReads | dict | None = None,
                 rules: Rules | dict | None = None, sample_queries: int = 0,
                 gpu_memory_budget: int | str | None = None, rescore_device: str | None = None):
        """`sample_queries=N` keeps a uniform sample of up to N of the query vectors searched, in memory only,
        for `tune(from_traffic=True)`; 0 (the default) keeps none. `gpu_memory_budget` lets the int8 store live
        in GPU memory (else in pinned host memory; `storage.tiers.choose`). `rescore_device` runs re-scoring
        with torch on "cpu" or "cuda"; by default numpy on the CPU (the faster there), torch on CUDA when the
        first pass runs on a GPU."""
        check_faiss_install()
        self.root = Path(path)
        self.device = resolve_device(device)
        budget = None if memory_budget is None else tiers.parse_bytes(memory_budget)
        ssd = SsdReads.of(ssd_reads)
        gpu_budget = None if gpu_memory_budget is None else tiers.parse_bytes(gpu_memory_budget, "gpu_memory_budget")
        if rescore_device not in (None, "cpu", "cuda"):
            raise InputError(f"rescore_device is {rescore_device!r}; give 'cpu' or 'cuda' (torch), or leave it out "
                             "(numpy on the CPU, torch on CUDA with device='gpu')")
        if backend is not None and (budget is not None or ssd_reads is not None or gpu_budget is not None
                                    or rescore_device is not None):
            raise InputError("memory_budget, gpu_memory_budget, ssd_reads and rescore_device place the stores of "
                             "shards opened in this process; with Ray each worker holds its own shards: leave "
                             "them out")
        set_threads(threads)
        self._verify, self._local = verify, backend is None
        self.memory_budget = budget
        self.rules = Rules.of(rules)  # the planner's thresholds (see retrieval.plan)
        # a factory that holds no reference to this handle, so that the last reference frees it (no cycle)
        self._backend = backend or partial(_local_backend, self.device, budget, ssd, gpu_budget, rescore_device)
        self.backend = None
        self._swap = SharedLock()  # searches share it; a reload swaps generations between them
        self._reloading = threading.Lock()
        self._open_newest()
        checks.integer("sample_queries", sample_queries, 0, None)
        self.traffic = Reservoir(sample_queries, self.full_dim) if sample_queries else None
        self._model_arg, self._model = model, None
        if model is not None:
            self._load_model()
        self.reranker = CrossEncoderReranker(reranker, device="cpu") if isinstance(reranker, str) else reranker

    def _open_newest(self) -> None:
        for attempt in range(OPEN_ATTEMPTS):
            try:
                self._open()
                break
            except IndexFormatError as e:
                # A change committed a newer generation (and deleted files of this one), or an overwrite put
                # another index in place, while this one was read: open the newest. Damage to an index that
                # stayed as it was is real: refuse.
                last = attempt == OPEN_ATTEMPTS - 1
                if self._superseded is False or (self._superseded is None and last):
                    raise
                if last:
                    raise IndexFormatError(f"{self.root} changed {OPEN_ATTEMPTS} times while it was being opened "
                                           f"({e}); open it again once the change has finished") from None
                time.sleep(0.05 * (attempt + 1))
        if self._local:
            count = sum(s.count for s in self.backend.shards)
            if count != self.count:
                raise IndexFormatError(f"{self.root}: shards hold {count} vectors, the manifest says {self.count}")
        release_free_memory()

    def _open(self) -> None:
        """Open every file of the newest generation through one pinned folder, so that all of them belong to it,
        and make it this handle's between two searches (a search in flight ends on the generation it began)."""
        self._superseded = None  # no folder at the path: perhaps between the two renames of a swap
        m = None
        with PinnedFolder(self.root) as folder:
            try:
                m = read_manifest(folder)
                codec, trained = read_shared(folder, m)
                # Ray workers open the new generation beside the old one, then all switch between searches
                if self.backend is not None and self.backend.reload(
                        folder, m, lambda switch: self._install(m, codec, trained, None, switch)):
                    return
                # a local group takes over the shards and codes that did not change
                backend = (self._backend(folder, m, codec, trained, self._verify, previous=self.backend)
                           if self._local else self._backend(folder, m, codec, trained, self._verify))
            except IndexFormatError:
                self._superseded = folder.superseded() or moved_on(folder, m)
                raise
        self._install(m, codec, trained, backend)

    def _install(self, m: Manifest, codec: Codec, trained: faiss.Index, backend: Backend | None,
                 switch: Callable[[], None] | None = None) -> None:
        """Make generation `m` this handle's, with no search running; `switch` moves an in-place backend to it."""
        placed = {s: v["tier"] for s, v in (backend or self.backend).placement().items()}
        point = tiers.operating_point(m, placed)  # measured for this index and placement (see retrieval.tuning)
        params = SearchParams(**{k: point.get(k) for k in ("nprobe", "k1", "k2", "probe_margin")}) if point \
            else SearchParams()
        params = _hybrid_defaults(params, m)
        assigner = FirstPass(trained, [], m.metric, "cpu")  # one coarse assignment per batch
        with self._swap.exclusive():
            if switch is not None:
                switch()
            self.manifest = m
            self.metric, self.full_dim, self.index_dim = m.metric, m.full_dim, m.index_dim
            self.count, self.live, self.generation = m.count, m.live, m.generation
            self.params, self.codec, self.trained, self.assigner = params, codec, trained, assigner
            self.tiers = placed  # where each store is read from (see matryoshka.storage.tiers)
            old, self.backend = self.backend, backend or self.backend
            if old is not None and old is not self.backend:
                old.close()  # the generation replaced: its files (perhaps deleted on disk) are released now

    def update_settings(self, change: Callable[[Manifest], None], *, save: bool = True, lock: bool = True) -> None:
        """The one call that changes an index's settings (operating points, the hybrid fusion): apply
        `change(manifest)` to this generation's manifest, write it atomically under the build lock (unless the
        caller holds it, lock=False) when `save`, and make the result this handle's between searches."""
        if not save:
            m = copy.deepcopy(self.manifest)
            change(m)
            return self._adopt(m)
        held = BuildLock(self.root) if lock else None
        try:
            with PinnedFolder(self.root) as folder:
                m = read_manifest(folder)
            if m.shards != self.manifest.shards:
                raise InputError(f"{self.root} changed since it was opened (replaced, or a newer generation); reload "
                                 "it and re-run the tuning")
            change(m)
            write_manifest(self.root, m)
        finally:
            if held is not None:
                held.release()
        self._adopt(m)

    def _adopt(self, manifest: Manifest) -> None:
        point = tiers.operating_point(manifest, self.tiers)
        with self._swap.exclusive():
            if manifest.shards != self.manifest.shards:
                raise InputError(f"{self.root}: the manifest given is another generation's; reload the index")
            self.manifest = manifest
            if point:
                self.params = self.params.updated(**{k: point.get(k) for k in ("nprobe", "k1", "k2", "probe_margin")})
            self.params = _hybrid_defaults(self.params, manifest)

    def tunable(self) -> "Tunable":
        """This handle as the tuner reads it (`retrieval.tuning.Tunable`)."""
        return _Tunable(self)

    def reload(self) -> bool:
        """Open the newest generation of the index (after `indexing.add`, `delete` or `compact`); True when it
        is newer than the one this handle held. Safe while other threads search: each search sees one
        generation whole: the new one is opened beside the old (by the Ray workers too), and the switch waits
        for searches in flight and holds new ones off while it happens."""
        self._check_open()
        with self._reloading:  # one at a time: two reloads could otherwise install their generations out of order
            before = self.generation
            self._open_newest()
            return self.generation != before

    def close(self) -> None:
        """Release everything the handle holds, at once: the memory maps and file handles of every store, the
        faiss indexes, the model and cross-encoder (and stop Ray shard workers). Searching it afterwards is an
        error. Dropping the last reference to a handle releases the same, without a garbage-collector pass."""
        with self._swap.exclusive():  # searches in flight finish first
            if self.backend is not None:
                self.backend.close()
            self.backend = self.trained = self.assigner = self._model = self.reranker = None

    @property
    def closed(self) -> bool:
        return self.backend is None

    def __len__(self) -> int:
        """The live documents of the generation this handle holds (deleted ones left out)."""
        return self.live

    def __bool__(self) -> bool:  # an open handle is true even when it holds no documents (not `len() > 0`)
        return True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- queries -------------------------------------------------------------------------------------------
    def _load_model(self):
        if self._model is None:
            rec = self.manifest.model
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

    def query_vectors(self, queries) -> tuple[np.ndarray, list[str] | None]:
        """(normalized full-dim query vectors, the query texts or None) for texts (encoded) or vectors."""
        if isinstance(queries, str):
            queries = [queries]
        if _texts(queries):
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

    def search(self, query, k: int | None = None, **options) -> list[Hit]:
        """Search one query (text or full-dim vector); see `search_batch` for the options."""
        if not isinstance(query, str):
            query = np.asarray(query, dtype=np.float32)
            if query.ndim != 1:
                raise InputError(f"search takes one query vector (1-D); got shape {query.shape}: use search_batch")
            query = query[None, :]
        qt = options.pop("query_texts", None)
        return self.search_batch(query, k, query_texts=qt if qt is None else [qt], **options).hits(0)

    def search_batch(self, queries, k: int | None = None, *, params: SearchParams | None = None,
                     query_texts: Sequence[str] | None = None, where=None, rules: Rules | dict | None = None,
                     **options) -> SearchResult:
        """Search a batch of queries (a list of texts or an (n, full_dim) matrix).

        `params` (default: the index's `params`) sets every stage's depth and switch; `k` and keyword
        `options` (nprobe, k1, k2, k3, int8, full, rerank, full_dims, probe_margin: see `SearchParams`) override
        its fields.
        `where` keeps only documents whose attributes pass a condition (see `retrieval.filters`): a SQL string,
        a dict filter (see `matryoshka.storage.dict_filters`) or a pyarrow compute expression for the whole batch, or a
        list of them (None: no filter), one per query.
        `rules` (default: the handle's) are the planner's thresholds (see `retrieval.plan.Rules`).
        """
        with self._swap.shared():
            self._check_open()
            return self._search_batch(queries, k, params, query_texts, self._where(where), options, rules)

    def explain(self, queries=1, k: int | None = None, *, params: SearchParams | None = None, where=None,
                rules: Rules | dict | None = None, **options) -> Plan:
        """The plan a search would run (`retrieval.plan.Plan`; `print(plan.explain())` shows each choice and its
        reason) for `queries`: the queries themselves, or a count of text queries; one `where` predicate (or
        None); the other arguments are `search_batch`'s. Nothing is searched; a filter is evaluated to count
        its rows."""
        with self._swap.shared():
            self._check_open()
            if k is not None:
                options["k"] = k
            if isinstance(queries, str):
                queries = [queries]
            if isinstance(queries, (int, np.integer)) and not isinstance(queries, bool):
                texts = ["?"] * checks.integer("queries", int(queries))
            elif isinstance(queries, (list, tuple)) and queries and all(isinstance(q, str) for q in queries):
                texts = list(queries)
            else:
                texts = None
                queries = as_matrix(queries, self.full_dim, "query vectors")
            n = len(queries) if texts is None else len(texts)
            p = _as_params(params, self.params).updated(**options).checked(self.full_dim)
            return self._plan(p, n, self._where(where), self._rerank_wanted(p.rerank, texts), rules, options,
                              params)

    def _where(self, where):
        """`where` with its dict filters compiled to SQL over this generation's attributes."""
        if isinstance(where, (dict, list, tuple)):
            return dict_filters.resolve(where, manifest_schema(self.manifest.attributes))
        return where

    def _check_open(self) -> None:
        if self.backend is None:
            raise InputError(f"the index {self.root} was closed; open it again with retrieval.open_index")

    def shape(self) -> Shape:
        """What the planner knows of this index (`retrieval.plan.Shape`)."""
        return Shape(self.live, self.assigner.nlist, faiss.extract_index_ivf(self.trained).code_size,
                     self.full_dim, self.device, self.tiers, "hnsw" if self.assigner.graph else "flat",
                     getattr(self.backend, "rescore_device", None))

    def _plan(self, p: SearchParams, n: int, where, rerank: bool, rules, asked, params,
              missing: set | None = None) -> Plan:
        passing = None if where is None else self.backend.passing(where, set() if missing is None else missing)
        asked = set(asked) | (set(SearchParams.__dataclass_fields__) if params is not None else set())
        point = tiers.operating_point(self.manifest, self.tiers)
        return plan(self.shape(), self._within_index(p), n, self.rules if rules is None else Rules.of(rules),
                    passing=passing, rerank=rerank, asked=frozenset(asked), measured=point is not None,
                    point_note=None if point is None or {"nprobe", "k1", "k2"} <= asked else
                    "operating point: " + describe_point(point, self.generation))

    def _search_batch(self, queries, k, params, query_texts, where, options, rules) -> SearchResult:
        if k is not None:
            options["k"] = k
        p = _as_params(params, self.params).updated(**options).checked(self.full_dim)
        timer = StageTimer()
        if p.mode == "lexical" and _texts(queries):  # BM25 alone needs no query vectors: none are encoded
            texts = [queries] if isinstance(queries, str) else list(queries)
            x = np.zeros((len(texts), self.full_dim), np.float32)
        else:
            x, texts = self.query_vectors(queries)
            if self.traffic is not None:
                self.traffic.add(x)
        if query_texts is not None:
            texts = list(query_texts)
            if len(texts) != len(x):
                raise InputError(f"{len(texts)} query texts for {len(x)} query vectors")
        if texts is not None:
            _check_texts(texts)
        timer.lap("encode")
        rerank = self._rerank_wanted(p.rerank, texts)
        parts, order, missing = [], [], set()
        for w, rows in filters.by_predicate(where, len(x)):  # queries that share a predicate are searched together
            timer.mark()
            pl = self._plan(p, len(rows), w, rerank, rules, options, params, missing)
            if w is not None:
                timer.lap("filter")
            chunks = [rows[lo:lo + pl.chunk] for lo in range(0, len(rows), pl.chunk)]
            parts += self._run_chunks(pl, chunks, x, texts, timer, w, missing)
            order += chunks
        result = parts[0] if len(parts) == 1 else SearchResult.concat(parts, dict(timer))
        perm = np.concatenate(order)
        return result if np.array_equal(perm, np.arange(len(x))) else result.reordered(np.argsort(perm))

    def _within_index(self, p: SearchParams) -> SearchParams:
        """Depths no deeper than the index: a depth that reaches every document scans every list, so k at or
        beyond the corpus size returns every document once."""
        n = max(self.live, 1)
        p = p.updated(k=min(p.k, n), k1=min(p.k1, n), k2=min(p.k2, n), k3=min(p.k3, n), k_lexical=min(p.k_lexical, n))
        return p.updated(nprobe=self.assigner.nlist) if p.k1 >= self.live else p

    def _rerank_wanted(self, rerank: bool | None, texts) -> bool:
        possible = self.reranker is not None and texts is not None and self.manifest.has_text
        if rerank and not possible:
            why = ("no cross-encoder is configured (open the index with reranker=NAME, or --reranker NAME)"
                   if self.reranker is None else "the index stores no texts" if not self.manifest.has_text
                   else "the queries are vectors without query_texts")
            raise InputError(f"rerank=True but {why}")
        return possible if rerank is None else rerank

    def _run_chunks(self, pl: Plan, chunks: list[np.ndarray], x: np.ndarray, texts: list[str] | None,
                    timer: StageTimer, where, missing: set) -> list[SearchResult]:
        """Each chunk's result, in order: one chunk after another, or `pl.in_flight` at once (stores on SSD), each
        timed on its own and the stage times summed into `timer`."""
        def one(r: np.ndarray, t: StageTimer) -> SearchResult:
            return self._run(pl, x[r], None if texts is None else [texts[i] for i in r], t, where, set(missing))
        if pl.in_flight < 2 or len(chunks) < 2:
            return [one(r, timer) for r in chunks]
        timers = [StageTimer() for _ in chunks]
        # threads of this call's own (a shared pool would queue one caller's chunks behind another's)
        with ThreadPoolExecutor(pl.in_flight, thread_name_prefix="matryoshka-chunk") as pool:
            futures = [pool.submit(one, r, t) for r, t in zip(chunks, timers)]
            try:
                out = [f.result() for f in futures]
            finally:  # nothing of this search runs on once it returns: a reload may close the backend next
                for f in futures:
                    f.cancel()
                wait(futures)
        for t in timers:
            for name, seconds in t.items():
                timer[name] = timer.get(name, 0.0) + seconds
        return out

    def _run(self, pl: Plan, x: np.ndarray, texts: list[str] | None, timer: StageTimer, where,
             missing: set) -> SearchResult:
        """Run a plan's stages over one chunk of queries, through the backend (`retrieval.runner`).

        Every shard group answers only for its own shards and the merges break ties by row, so one group or
        many give the identical result."""
        p = pl.params
        timer.mark()
        ctx = Running(self.backend, p, x, self.codec.transform.apply(x), texts, where, missing, self.metric,
                      self.codec, self.assigner, self.device, pl.passing, self.reranker)
        run(pl, ctx, timer)
        cand, stages, last = ctx.cand, ctx.stages, ctx.last
        if last != list(stages)[-1]:  # the ordering stage last, as SearchResult reads it
            stages[last] = stages.pop(last)
        cand, stages = keep(cand, stages, last, p.k)
        ids, out_texts = self._lookup(cand, self.manifest.has_text, missing)
        if missing:  # rows of a group that stopped answering after the first pass cannot be returned
            lost = np.array([[v is None for v in row] for row in ids], dtype=bool).reshape(cand.shape) & (cand >= 0)
            if lost.any():
                stages = {n: np.where(lost, -np.inf, v).astype(np.float32) for n, v in stages.items()}
                cand, stages = keep(cand, stages, last, p.k)
                ids, out_texts = self._lookup(cand, self.manifest.has_text, missing)
        timer.lap("ids_and_texts")
        return SearchResult(cand, stages[last].copy(), stages, ids, out_texts, dict(timer), bool(missing),
                            sorted(missing))

    def _lookup(self, cand: np.ndarray, texts: bool, missing: set) -> tuple[list[list], list[list[str]] | None]:
        """External ids per query (None for rows that could not be looked up) and, if asked, texts of the
        valid rows."""
        ids, out = self.backend.lookup(cand.ravel(), texts, missing)
        kk = cand.shape[1]
        id_rows = [ids[i * kk:(i + 1) * kk] for i in range(cand.shape[0])]
        if not texts:
            return id_rows, None
        return id_rows, [[out[i * kk + j] for j in range(kk) if cand[i, j] >= 0] for i in range(cand.shape[0])]

    # -- documents -----------------------------------------------------------------------------------------
    def get(self, ids=None, *, where=None, limit: int | None = None, after: int | None = None,
            vectors: bool = False) -> list[Record]:
        """Live documents by external id, in the order given (ids not in the index are left out), or by
        condition: those passing `where` (a filter as `search_batch` takes it; with ids, of those), in
        ascending row order, at most `limit`. vectors=True adds each one's full vector.

        Paging: `after` (a condition without ids) returns only rows after it; pass the `row` of the last record
        of the previous page. Rows are stable while the handle holds its generation (until `reload()`)."""
        if ids is None and where is None:
            raise InputError("get takes ids, a where condition, or both; to read every document use where='true'")
        if after is not None and ids is not None:
            raise InputError("after= pages through a where condition in row order; with ids, the records come in "
                             "the order of the ids: leave after out, or give where= alone")
        after = checks.integer("after", after, low=0, optional=True)
        limit = checks.integer("limit", limit, low=0, optional=True)
        with self._swap.shared():
            self._check_open()
            where = self._where(where)
            rows = None
            if ids is not None:
                rows = self.backend.find(coerce_ids(id_list(ids), "int" if self.manifest.id_type == "int" else "string"))
                rows = rows[rows >= 0]
            if where is not None:
                passing = self.backend.select(where)
                if after is not None:
                    passing = passing[np.searchsorted(passing, after, side="right"):]
                rows = passing if rows is None else rows[np.isin(rows, passing)]
            if limit is not None:
                rows = rows[:limit]
            return self._records(rows, vectors)

    def records(self, rows, *, vectors: bool = False) -> list[Record]:
        """The documents at global rows (a hit's `row`), in the order given, with text, attributes and, if asked,
        the full vector."""
        with self._swap.shared():
            self._check_open()
            out = self._records(np.asarray(rows, dtype=np.int64).ravel(), vectors)
            lost = [r.row for r in out if r.id is None]
            if lost:
                raise InputError(f"rows {lost[:5]} hold no document of generation {self.generation}: give rows "
                                 "from hits of this generation")
            return out

    def _records(self, rows: np.ndarray, vectors: bool) -> list[Record]:
        if not len(rows):
            return []
        ids, texts = self.backend.lookup(rows, self.manifest.has_text)
        attrs = self.backend.attributes(rows)
        vecs = None
        if vectors:
            unique, back = np.unique(rows, return_inverse=True)
            vecs = self.backend.full_vectors(unique)[back]
        return [Record(ids[i], int(r), None if texts is None else texts[i], attrs[i] or {},
                       None if vecs is None else vecs[i]) for i, r in enumerate(rows)]

    def tune(self, target_recall: float = 0.95, queries=None, *, max_latency_ms: float | None = None,
             n_queries: int = 300, save: bool = True, from_traffic: bool = False):
        """Measure the fastest nprobe / k1 / k2 reaching `target_recall` recall@10 against exact search, on
        `queries` (texts or vectors; default: `n_queries` of the index's own vectors, or with from_traffic=True
        the live queries this handle kept, see `sample_queries`), and make it this handle's default; save=True
        also stores it in the index (see `retrieval.tuning`)."""
        from .tuning import tune
        checks.flag("from_traffic", from_traffic)
        if not from_traffic:
            return tune(self.tunable(), target_recall, queries, max_latency_ms, n_queries, save)
        if queries is not None:
            raise InputError("give queries= or from_traffic=True, not both")
        if self.traffic is None or len(self.traffic) < MIN_TRAFFIC:
            have = 0 if self.traffic is None else len(self.traffic)
            raise InputError(f"from_traffic=True needs at least {MIN_TRAFFIC} live queries kept; this handle has "
                             f"{have}: open the index with sample_queries=N (matryoshka serve --sample-queries N) "
                             "and search it first")
        return tune(self.tunable(), target_recall, self.traffic.sample(), max_latency_ms, n_queries, save,
                    source="traffic")

    def tune_fusion(self, queries: Sequence[str], relevant: Sequence, *, vectors=None, save: bool = True,
                    **options) -> dict:
        """Measure the hybrid fusion and lexical weight with the best nDCG@10 on labelled queries (texts, their
        vectors for an index without a model, and the relevant ids of each) and make it the index's hybrid
        default (see `retrieval.fusion_tuning`)."""
        from .fusion_tuning import tune_fusion
        return tune_fusion(self, queries, relevant, vectors=vectors, save=save, **options)

    # -- description ---------------------------------------------------------------------------------------
    def drop_page_cache(self) -> None:
        """Make the stores that are not held in RAM cold, as on a machine whose memory they do not fit: their pages
        leave the page cache and this process's maps (for measuring cold searches; `benchmarks.cold`)."""
        with self._swap.shared():
            self._check_open()
            self.backend.drop_page_cache()

    def info(self) -> dict:
        """Manifest summary with bytes per vector resident in RAM, memory-mapped, and on disk, and each store's
        size, tier and page-cache share (see `retrieval.describe`)."""
        with self._swap.shared():  # of one generation
            self._check_open()
            return describe(self)


def _hybrid_defaults(params: SearchParams, m: Manifest) -> SearchParams:
    """`params` with the fusion measured for the index (`retrieval.fusion_tuning`), when one was."""
    hybrid = m.hybrid
    return params.updated(fusion=hybrid["fusion"], lexical_weight=hybrid["lexical_weight"]) if hybrid else params


def _texts(queries) -> bool:
    """Whether queries are texts (one, or a non-empty list of them) rather than vectors."""
    return isinstance(queries, str) or (isinstance(queries, (list, tuple)) and bool(queries) and
                                        all(isinstance(q, str) for q in queries))


def _check_texts(texts: list) -> None:
    """Query texts are strings that encode as UTF-8 (the lexical index and the cross-encoder read them)."""
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"query text {i} is {type(t).__name__} {t!r}; query texts are strings (one per query)")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InputError(f"query text {i} holds {t[e.start:e.end]!r}, which is not valid Unicode (a lone "
                             "surrogate); give valid text") from None


def _as_params(params, default: SearchParams) -> SearchParams:
    """`params=`: a SearchParams, a dict of its fields (over the index's defaults), or None (the defaults)."""
    if params is None:
        return default
    if isinstance(params, SearchParams):
        return params
    if isinstance(params, dict):
        return default.updated(**params)
    raise InputError(f"params= takes a retrieval.SearchParams or a dict of its fields; got {type(params).__name__}")


def _local_backend(device: str, budget: int | None, ssd: SsdReads, gpu_budget: int | None,
                   rescore_device: str | None, root: PinnedFolder, m: Manifest, codec: Codec,
                   trained: faiss.Index, verify: bool, previous: ShardGroup | None = None) -> Backend:
    return ShardGroup(root, m, device=device, verify=verify, codec=codec, trained=trained, memory_budget=budget,
                      ssd=ssd, previous=previous, gpu_budget=gpu_budget, rescore_device=rescore_device)


class _Tunable:
    """An opened index as the tuner reads it (`retrieval.tuning.Tunable`): a few data primitives of the handle,
    nothing else of it."""

    def __init__(self, index: Index):
        m = index.manifest
        self._index = index
        self.root, self.count, self.full_dim, self.index_dim = index.root, index.count, index.full_dim, index.index_dim
        self.metric, self.nlist, self.device, self.generation = index.metric, index.assigner.nlist, index.device, \
            index.generation
        self.tiers, self.factory, self.build = index.tiers, m.factory, m.build
        self.full_path = index.root / layout.shard_dir(m.shards[0].number) / layout.FULL_FILE

    def search(self, x: np.ndarray, params: SearchParams) -> np.ndarray:
        return self._index.search_batch(x, params=params).rows

    def assign(self, x: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        return self._index.assigner.assign(self._index.codec.transform.apply(x), nprobe)

    def list_sizes(self) -> np.ndarray:
        return self._index.backend.list_sizes()

    def exact_topk(self, x: np.ndarray, k: int) -> np.ndarray:
        return self._index.backend.exhaustive(x, k, None)[1]

    def live_rows(self) -> np.ndarray:
        return self._index.backend.live_rows()

    def full_vectors(self, rows: np.ndarray) -> np.ndarray:
        return self._index.backend.full_vectors(rows)

    def query_vectors(self, queries) -> np.ndarray:
        return self._index.query_vectors(queries)[0]

    def store(self, change: Callable[[Manifest], None], lock: bool = True) -> None:
        self._index.update_settings(change, lock=lock)
