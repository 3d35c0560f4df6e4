"""`open_index`: open an index for search with its shards in this process or in Ray workers."""
from __future__ import annotations

from pathlib import Path

from .index import Index


def open_index(path: str | Path, *, ray: str | None = None, **kwargs) -> Index:
    """Open an index folder for search; see `Index` for device, model, reranker, threads and verify.

    ray="auto" or a cluster address puts the shards in Ray actors (see `retrieval.distributed_search`; needs
    the `distributed` extra); kwargs then also take `RayBackend`'s options (workers, worker_cpus, num_gpus,
    max_restarts, max_task_retries, timeout_s, allow_partial)."""
    if not ray:
        return Index(path, **kwargs)
    from .distributed_search import RayBackend
    ray_opts = {k: kwargs.pop(k) for k in ("workers", "worker_cpus", "num_gpus", "max_restarts", "max_task_retries",
                                           "timeout_s", "allow_partial") if k in kwargs}
    kwargs.pop("device", None)  # the workers' device follows num_gpus; the driver only merges

    def backend(folder, manifest, codec, trained, verify):
        return RayBackend(folder.path(), manifest, address=ray, verify=verify, **ray_opts)
    index = Index(path, device="cpu", backend=backend, **kwargs)
    if ray_opts.get("num_gpus"):
        index.device = "gpu"  # the workers' first pass runs on their GPUs; no coarse assignment here
    return index
