"""Search on a Ray cluster: shard workers are Ray actors, the driver fans each query batch out and merges.

Each `ShardWorker` actor opens one or more shards (a `ShardGroup`) from the index folder, which must be on
storage every node sees. Per batch the driver makes three small rounds: the first pass (each worker's top k1),
the re-scoring of the global top k1 by the workers that own them, and the ids/texts of the rows it keeps;
the merges break ties by row, so results equal the single-process searcher's. The cross-encoder runs here.

Faults: a worker that dies is restarted by Ray (`max_restarts`) and reloads its shards; calls in flight are
retried (`max_task_retries`). A worker that still does not answer within `timeout_s` fails the search with
`ShardsUnavailable`, unless `allow_partial=True`: then the result is marked `partial` with `missing_shards`.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from matryoshka.core.errors import MatryoshkaError

from .index import Index
from .shard_group import ShardGroup


class ShardsUnavailable(MatryoshkaError):
    """Shard workers died or timed out and partial results were not allowed."""


class ShardWorker(ShardGroup):
    """A shard group that a Ray actor holds (plain class: Ray wraps it at runtime, any engine could)."""

    def ready(self) -> int:
        """The worker's process id, once its shards are open."""
        return os.getpid()


def _split(numbers: list[int], workers: int) -> list[list[int]]:
    """Contiguous runs of shard numbers, as even as possible."""
    workers = max(1, min(workers, len(numbers)))
    return [[int(n) for n in c] for c in np.array_split(np.array(numbers), workers)]


class RayIndex(Index):
    """An index searched by Ray actors; the same API as `Index` (search, search_batch, info)."""

    def __init__(self, path: str | Path, *, address: str | None = "auto", workers: int | None = None,
                 worker_cpus: float = 1.0, num_gpus: float = 0.0, max_restarts: int = 3, max_task_retries: int = 3,
                 timeout_s: float = 120.0, allow_partial: bool = False, model=None, reranker=None,
                 threads: int | None = None, verify: bool = False):
        self._ray_cfg = dict(address=address, workers=workers, worker_cpus=worker_cpus, num_gpus=num_gpus,
                             max_restarts=max_restarts, max_task_retries=max_task_retries)
        self.timeout_s, self.allow_partial = timeout_s, allow_partial
        super().__init__(path, device="cpu", model=model, reranker=reranker, threads=threads, verify=verify)
        if num_gpus:
            self.device = "gpu"  # the workers' first pass runs on their GPUs; no coarse assignment here

    def _open_groups(self, verify: bool) -> None:
        from indexing.distributed_build import connect
        cfg = self._ray_cfg
        ray = connect(cfg["address"])
        self._ray = ray
        numbers = [s["number"] for s in self.manifest["shards"]]
        self.worker_shards = _split(numbers, cfg["workers"] or len(numbers))
        actor = ray.remote(ShardWorker).options(
            num_cpus=cfg["worker_cpus"], num_gpus=cfg["num_gpus"], max_restarts=cfg["max_restarts"],
            max_task_retries=cfg["max_task_retries"])
        device = "gpu" if cfg["num_gpus"] else "cpu"
        self.workers = [actor.remote(str(self.root.resolve()), self.manifest, chunk, device, verify)
                        for chunk in self.worker_shards]
        self.pids = self._fan("ready", (), set())

    def _fan(self, method: str, args: tuple, missing: set) -> list:
        ray = self._ray
        from ray.exceptions import GetTimeoutError, ObjectLostError, RayActorError, RayTaskError, WorkerCrashedError
        args = tuple(ray.put(a) if isinstance(a, np.ndarray) and len(self.workers) > 1 else a for a in args)
        refs = [getattr(w, method).remote(*args) for w in self.workers]
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
                why = f"died and could not be restarted ({type(e).__name__}: {last[0][:200]})"
            if not self.allow_partial:
                raise ShardsUnavailable(
                    f"the worker for shard(s) {shards} {why} during {method}; no partial results are returned: "
                    "retry, raise max_restarts / timeout_s, or open with allow_partial=True to accept results "
                    "marked partial") from None
            missing.update(shards)
        return out

    def close(self) -> None:
        """Stop the shard workers."""
        for w in getattr(self, "workers", []):
            self._ray.kill(w, no_restart=True)
        self.workers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
