"""Search on a Ray cluster: shard groups live in Ray actors; the driver fans each stage out and merges.

Each `ShardWorker` actor opens one or more shards (a `ShardGroup`) from the index folder, which must be on
storage every node sees. Per batch the driver makes three small rounds: the first pass (each worker's top k1),
the re-scoring of the global top k1 by the workers that own them, and the ids/texts of the rows it keeps;
the merges break ties by row, so results equal the single-process searcher's. The cross-encoder runs on the
driver, in `Index`.

Faults: a worker that dies is restarted by Ray (`max_restarts`) and reloads its shards; calls in flight are
retried (`max_task_retries`). A worker that still does not answer within `timeout_s` fails the search with
`ShardsUnavailable`, unless `allow_partial=True`: then the result is marked `partial` with `missing_shards`.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from matryoshka.indexing.distributed_build import connect
from matryoshka.core.errors import IndexFormatError, MatryoshkaError, ShardsUnavailable
from matryoshka.storage import tiers
from matryoshka.storage.lexical import query_terms
from matryoshka.storage.manifest import Manifest

from .backend import Scorer
from .first_pass import merge_topk
from .shard_group import ShardGroup

__all__ = ["RayBackend", "ShardWorker", "ShardsUnavailable"]


class ShardWorker(ShardGroup):
    """A shard group that a Ray actor holds (plain class: Ray wraps it at runtime, any engine could)."""

    def ready(self) -> int:
        """The worker's process id, once its shards are open."""
        return os.getpid()

    def stage(self, root: str, manifest: Manifest, numbers: list[int]) -> int:
        """Open shards `numbers` of generation `manifest` beside the ones held now (`Index.reload`)."""
        self._staged = ShardGroup(root, manifest, numbers, device=self.device, verify=self.verify, previous=self)
        return os.getpid()

    def switch(self, keep: bool) -> None:
        """Answer from the staged shards from now on (keep=True), or drop them."""
        staged, self._staged = getattr(self, "_staged", None), None
        if keep and staged is not None:
            self.__dict__.update({k: v for k, v in staged.__dict__.items() if k != "_staged"})


def _split(numbers: list[int], workers: int) -> list[list[int]]:
    """Contiguous runs of shard numbers, as even as possible."""
    workers = max(1, min(workers, len(numbers)))
    return [[int(n) for n in c] for c in np.array_split(np.array(numbers), workers)]


class RayBackend:
    """Shard groups in Ray actors, with the interface of `backend.Backend`."""

    def __init__(self, root: Path, manifest: Manifest, *, address: str | None = "auto", workers: int | None = None,
                 worker_cpus: float = 1.0, num_gpus: float = 0.0, max_restarts: int = 3, max_task_retries: int = 3,
                 timeout_s: float = 120.0, allow_partial: bool = False, verify: bool = False):
        self.timeout_s, self.allow_partial = timeout_s, allow_partial
        self._ray = connect(address)
        numbers = [s.number for s in manifest.shards]
        self.worker_shards = _split(numbers, workers or len(numbers))
        actor = self._ray.remote(ShardWorker).options(num_cpus=worker_cpus, num_gpus=num_gpus,
                                                      max_restarts=max_restarts, max_task_retries=max_task_retries)
        device = "gpu" if num_gpus else "cpu"
        self.workers = [actor.remote(str(root.resolve()), manifest, chunk, device=device, verify=verify)
                        for chunk in self.worker_shards]
        self.pids = self._gather("opening", lambda w: w.ready.remote(), set())

    def reload(self, folder, manifest: Manifest, between_searches: Callable[[Callable[[], None]], None]) -> bool:
        """Have the running workers open generation `manifest`, its shards spread over them again (workers
        left without a shard stop); the cluster and the workers stay up. Every worker opens the new generation
        beside the old one; all switch to it only once all have it, through `between_searches(switch)`, which
        runs the switch while no search is in flight."""
        chunks = _split([s.number for s in manifest.shards], len(self.workers))
        workers, extra, root = self.workers[:len(chunks)], self.workers[len(chunks):], str(folder.path().resolve())
        refs = [w.stage.remote(root, manifest, c) for w, c in zip(workers, chunks)]
        try:
            self._ray.get(refs, timeout=self.timeout_s)
        except Exception:
            self._ray.get([w.switch.remote(False) for w in workers])
            raise

        def switch():
            self._ray.get([w.switch.remote(True) for w in workers])
            self.workers, self.worker_shards = workers, chunks
        between_searches(switch)
        for w in extra:
            self._ray.kill(w, no_restart=True)
        return True

    def live_rows(self) -> np.ndarray:
        parts = self._gather("the live rows", lambda w: w.live_rows.remote(), set())
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    def full_vectors(self, rows: np.ndarray) -> np.ndarray:
        parts = self._gather("the full vectors", lambda w: w.full_vectors.remote(rows), set())
        return np.sum(parts, axis=0)  # each row is non-zero in the one worker that holds it

    def list_sizes(self) -> np.ndarray:
        return np.sum(self._gather("the list sizes", lambda w: w.list_sizes.remote(), set()), axis=0)

    def first_pass(self, short: np.ndarray, k: int, nprobe: int, assigned: tuple[np.ndarray, np.ndarray] | None,
                   missing: set | None = None, where=None) -> tuple[np.ndarray, np.ndarray]:
        n = len(short)
        short, assigned = self._put(short), self._put(assigned)
        parts = self._gather("the first pass", lambda w: w.first_pass.remote(short, k, nprobe, assigned, None, where),
                             missing)
        return self._merged(parts, n, k)

    def passing(self, where, missing: set | None = None) -> int:
        """Live rows passing `where`: each worker evaluates it on its own shards."""
        return sum(self._gather("the filter", lambda w: w.passing.remote(where), missing))

    def exhaustive(self, x: np.ndarray, k: int, where, missing: set | None = None) -> tuple[np.ndarray, np.ndarray]:
        n, ref = len(x), self._put(x)
        return self._merged(self._gather("the exhaustive search", lambda w: w.exhaustive.remote(ref, k, where),
                                         missing), n, k)

    @staticmethod
    def _merged(parts: list, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        if not parts:
            return np.full((n, 0), -np.inf, np.float32), np.full((n, 0), -1, np.int64)
        return merge_topk([p[0] for p in parts], [p[1] for p in parts], k)

    def score(self, store: str, queries: np.ndarray, cand: np.ndarray, scorer: Scorer,
              missing: set | None = None) -> np.ndarray:
        """Each worker scores the candidates it owns, where their rows are; only the scores travel."""
        refs = [self._put(a) for a in (queries, cand)]
        parts = self._gather("re-scoring", lambda w: w.score.remote(store, *refs, scorer), missing)
        return np.maximum.reduce(parts) if parts else np.full(cand.shape, -np.inf, np.float32)  # -inf: not owned

    def lookup(self, rows: np.ndarray, texts: bool, missing: set | None = None) -> tuple[list, list | None]:
        ids: list = [None] * len(rows)
        out: list | None = [""] * len(rows) if texts else None
        for g_ids, g_texts in self._gather("the id lookup", lambda w: w.lookup.remote(rows, texts), missing):
            for p, v in enumerate(g_ids):
                if v is not None:
                    ids[p] = v
                    if texts:
                        out[p] = g_texts[p]
        return ids, out

    def lexical(self, texts: list[str], k: int, where=None, missing: set | None = None, syntax: bool = False
                ) -> tuple[np.ndarray, np.ndarray]:
        stats = None
        if not syntax:  # index-wide BM25 statistics: every worker's counts, summed, then one search with them
            terms = sorted({t for text in texts for t in query_terms(text)})
            parts = self._gather("the lexical statistics", lambda w: w.lexical_stats.remote(terms), missing)
            stats = (sum(p[0] for p in parts), {t: sum(p[1][t] for p in parts) for t in terms},
                     sum(p[2] for p in parts))
        parts = self._gather("the lexical search", lambda w: w.lexical.remote(texts, k, where, None, syntax, stats),
                             missing)
        if not parts:
            return np.full((len(texts), k), -np.inf, np.float32), np.full((len(texts), k), -1, np.int64)
        return merge_topk([p[0] for p in parts], [p[1] for p in parts], k)

    def select(self, where, missing: set | None = None) -> np.ndarray:
        parts = self._gather("the filter", lambda w: w.select.remote(where), missing)
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    def find(self, ids, missing: set | None = None) -> np.ndarray:
        parts = self._gather("the id search", lambda w: w.find.remote(ids), missing)
        return np.maximum.reduce(parts) if parts else np.full(len(ids), -1, np.int64)

    def attributes(self, rows: np.ndarray, missing: set | None = None) -> list[dict | None]:
        out: list = [None] * len(rows)
        for part in self._gather("the attributes", lambda w: w.attributes.remote(rows), missing):
            for p, v in enumerate(part):
                if v is not None:
                    out[p] = v
        return out

    def id_map_bytes(self) -> int:
        return sum(self._gather("the id map count", lambda w: w.id_map_bytes.remote(), set()))

    def placement(self) -> dict:
        """Each store's tier and bytes, summed over the workers (they open every store memory-mapped)."""
        parts = self._gather("the store placement", lambda w: w.placement.remote(), set())
        kinds = tiers.choose({}, None)
        return {s: {"tier": kinds[s], "bytes": sum(p[s]["bytes"] for p in parts),
                    "device": "Ray shard workers: " + ", ".join(sorted({p[s]["device"] for p in parts}))}
                for s in tiers.STORES}

    def drop_page_cache(self) -> None:
        self._gather("dropping the page cache", lambda w: w.drop_page_cache.remote(), set())

    def store_reads(self) -> dict:
        parts = self._gather("the read counts", lambda w: w.store_reads.remote(), set())
        out: dict = {}
        for part in parts:
            for store, stats in part.items():
                out[store] = {k: out.get(store, {}).get(k, 0) + v for k, v in stats.items()}
        return out

    def _put(self, a):
        """Large arrays go to the object store once, not once per worker."""
        return self._ray.put(a) if isinstance(a, (np.ndarray, tuple)) and len(self.workers) > 1 else a

    def _gather(self, stage: str, call: Callable, missing: set | None) -> list:
        """Every worker's answer to `call(worker)`; a worker that cannot answer raises ShardsUnavailable, or
        adds its shards to `missing` when partial results are allowed."""
        from ray.exceptions import GetTimeoutError, ObjectLostError, RayActorError, RayTaskError, WorkerCrashedError
        ray = self._ray
        refs = [call(w) for w in self.workers]
        deadline = time.monotonic() + self.timeout_s
        out = []
        for shards, ref in zip(self.worker_shards, refs):
            try:
                out.append(ray.get(ref, timeout=max(0.0, deadline - time.monotonic())))
                continue
            except RayTaskError as e:  # the worker raised: an engine error names its fix, pass it on as itself
                if isinstance(e.cause, MatryoshkaError):
                    raise e.cause from None
                raise
            except GetTimeoutError:
                why = f"did not answer within {self.timeout_s:g} s"
                ray.cancel(ref)
            except (RayActorError, ObjectLostError, WorkerCrashedError) as e:
                last = [ln.strip() for ln in str(e).splitlines() if ln.strip()][-1:] or [""]
                if getattr(e, "_actor_init_failed", False):  # it could not open its shards: damaged or replaced
                    raise IndexFormatError(f"the worker for shard(s) {shards} could not open them: {last[0]}") \
                        from None
                why = f"died and could not be restarted ({type(e).__name__}: {last[0][:200]})"
            if not self.allow_partial or missing is None:
                raise ShardsUnavailable(
                    f"the worker for shard(s) {shards} {why} during {stage}; no partial results are returned: "
                    "retry, raise max_restarts / timeout_s, or open with allow_partial=True to accept results "
                    "marked partial") from None
            missing.update(shards)
        return out

    def close(self) -> None:
        """Stop the shard workers."""
        for w in self.workers:
            self._ray.kill(w, no_restart=True)
        self.workers = []
