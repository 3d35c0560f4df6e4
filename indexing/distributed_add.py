"""An add on a Ray cluster: one Ray task per new shard, like the distributed build; the driver checks the ids
and commits the generation (`indexing.add`)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from matryoshka.core.errors import InputError
from matryoshka.core.progress import bar

from .distributed_build import _spec_source, _unwrap, connect
from .options import BuildOptions
from .shard_api import check_unique_ids, shard_id_keys, shard_rows, write_shard
from .sources import open_parquet
from .training import BuildState


def _add_task(root: str, spec: dict, number: int, rows: tuple[int, int], id_start: int, opts: BuildOptions,
              state: BuildState, has_text: bool, id_type: pa.DataType, id_offset: int | None,
              attributes: pa.Schema | None) -> tuple[dict, np.ndarray]:
    """Run in a Ray worker: write one new shard and return its metadata and sorted id keys."""
    from matryoshka.core.device import set_threads
    set_threads(opts.threads)
    meta = write_shard(Path(root), _spec_source(spec), number, rows, id_start, opts, state, "cpu", has_text,
                       id_type, id_offset, attributes)
    return meta, shard_id_keys(root, number)


def write_shards_on_ray(root: Path, data, ids, first: tuple[int, int], opts: BuildOptions, state: BuildState,
                        has_text: bool, id_type: pa.DataType, id_offset: int | None, address: str,
                        quiet: bool, attributes: pa.Schema | None = None) -> list[dict]:
    """Write a .npy or Parquet input (with embeddings) as new shards numbered from first[0], rows from first[1],
    one Ray task each; refuses ids used twice among them. The input and the index must be on storage every
    node sees."""
    path = Path(data) if isinstance(data, (str, os.PathLike)) else None
    if path is None or not path.exists():
        raise InputError(f"an add on Ray reads a .npy or Parquet path that every node sees; got {data!r}")
    if path.suffix != ".npy" and "embedding" not in open_parquet(path).schema.names:
        raise InputError(f"{path} has no `embedding` column: an add on Ray takes embeddings; encode the texts "
                         "first, or add without ray=")
    ray = connect(address)
    spec = {"path": str(path.resolve()), "ids": str(Path(ids).resolve()) if ids else None}
    plan = shard_rows(_spec_source(spec), opts.shard_size)
    task = ray.remote(_add_task).options(num_cpus=1, max_retries=2)
    refs = {task.remote(str(root), spec, first[0] + i, (lo, hi), first[1] + lo, opts, state, has_text, id_type,
                        id_offset, attributes): i for i, (lo, hi) in enumerate(plan)}
    metas, keys = [None] * len(plan), [None] * len(plan)
    with bar(plan[-1][1] if plan else 0, "add on ray", quiet) as pbar:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            i = refs.pop(ready[0])
            metas[i], keys[i] = _unwrap(ray, ready[0])
            metas[i].pop("seconds")
            pbar.update(metas[i]["count"])
    check_unique_ids(root, metas, keys)
    return metas
