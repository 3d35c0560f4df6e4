"""`open_index`: open an index for search with its shards in this process or in Ray workers, or one a server serves."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from matryoshka.indexing.options import BuildOptions
from matryoshka.core.errors import InputError
from matryoshka.core.progress import say

from .index import Index

if TYPE_CHECKING:
    from .remote import RemoteIndex


def open_index(path: str | Path, *, ray: str | None = None, **kwargs) -> Index | RemoteIndex:
    """Open an index folder for search; see `Index` for device, model, reranker, threads and verify.

    ray="auto" or a cluster address puts the shards in Ray actors (see `retrieval.distributed_search`; needs
    the `distributed` extra); kwargs then also take `RayBackend`'s options (workers, worker_cpus, num_gpus,
    max_restarts, max_task_retries, timeout_s, allow_partial).

    An http:// or https:// URL opens the index a `matryoshka serve` serves there, through the same API
    (`retrieval.remote.RemoteIndex`; needs httpx, the `server` extra); kwargs then take token, timeout and
    must_exist (False: a handle on an index that its first add creates, on a server of many)."""
    if isinstance(path, str) and path.startswith(("http://", "https://")):
        return _remote(path, ray, kwargs)
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


def _remote(url: str, ray: str | None, kwargs: dict) -> RemoteIndex:
    wrong = sorted(set(kwargs) - {"token", "timeout", "must_exist"}) + (["ray"] if ray else [])
    if wrong:
        raise InputError(f"{', '.join(wrong)}: options of a local index; a remote one takes token=, timeout= and "
                         "must_exist= (the server sets the rest: matryoshka serve --help)")
    try:
        from .remote import RemoteIndex
    except ImportError as e:
        raise InputError(f"opening a URL needs httpx ({e}): from a clone of the repository, pip install -e "
                         "\".[server]\"") from None
    return RemoteIndex(url, **kwargs)


def tune_new_index(root: Path, opts: BuildOptions, queries=None) -> None:
    """A build's last step (registered for `indexing.build` as the entry point `matryoshka.build_finish: tune`):
    store the default operating point of the index in `root` (under `opts.memory_budget`, the point for the
    placement that budget gives), unless
    it has one, `opts.tune` is off, or exact truth over the whole index would cost more than MAX_TRUTH_WORK;
    on `queries` when given (then measured again even where a point is stored)."""
    if not opts.tune:
        return
    from matryoshka.storage import tiers

    from .tuning import MAX_TRUTH_WORK, MIN_VECTORS, SAMPLE_QUERIES, describe, truth_work, tune
    # under a memory budget, measured for the stores' placement it gives (stored per placement)
    with Index(root, device="cpu", threads=opts.threads, memory_budget=opts.memory_budget) as index:
        key = tiers.point_key(index.tiers)  # "" when every store is in RAM or the page cache
        measured = key in index.manifest.operating_points if key else index.manifest.operating_point is not None
        if index.count < MIN_VECTORS or (measured and queries is None):
            return  # tiny (every search is exhaustive), or measured already
        if truth_work(index.tunable()) > MAX_TRUTH_WORK:
            say(f"note: the default operating point was not measured: exact truth over {index.count:,} vectors "
                f"costs too much at build time; run `matryoshka tune {root}` (or Index.tune) to measure it",
                opts.quiet, logging.WARNING)
            return
        which = f"{len(queries)} given" if queries is not None else f"{min(SAMPLE_QUERIES, index.count)} sample"
        say(f"measuring the default operating point on {which} queries", opts.quiet)
        point = tune(index.tunable(), opts.target_recall, queries, lock=False)
    say(f"operating point: {describe(point.to_dict())}", opts.quiet)
