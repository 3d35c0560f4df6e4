"""`build`: build an index in this process or as Ray tasks, from any input a user has."""
from __future__ import annotations

import os
from pathlib import Path

from matryoshka.core.errors import InputError
from matryoshka.core.progress import say

from .build import build_index
from .inputs import open_source
from .options import BuildOptions


def build(out: str | os.PathLike, data, *, ids=None, texts=None, attributes=None, model: str | None = None,
          ray: str | None = None, **options) -> Path:
    """Build an index in folder `out` from any input `open_source` accepts; options are BuildOptions fields.
    `attributes` (a pyarrow Table or dict of arrays, one row per vector; a Parquet input's extra columns
    instead) are stored for filtered search (`search_batch(where=...)`).

    ray="auto" or a cluster address builds the shards as Ray tasks (a .npy or Parquet path input only; needs
    the `distributed` extra), see `indexing.distributed_build`."""
    opts = BuildOptions.of(**options)
    if ray:
        if texts is not None or attributes is not None:
            raise InputError("a distributed build reads texts and attributes from the Parquet input's columns; "
                             "texts= and attributes= are for single-machine builds")
        from .distributed_build import build_distributed
        return build_distributed(out, data, ids=ids, model=model, options=opts, address=ray, finish=tune_new_index)
    source = open_source(data, ids, texts, model, "cpu", attributes)
    return build_index(out, source, opts, model_name=model, finish=tune_new_index)


def tune_new_index(root: Path, opts: BuildOptions) -> None:
    """A build's last step (`indexing.build`): store the default operating point of the index in `root`, unless
    it has one, `opts.tune` is off, or exact truth over the whole index would cost more than MAX_TRUTH_WORK."""
    if not opts.tune:
        return
    from retrieval.index import Index  # here: retrieval imports indexing's lower layers on import
    from retrieval.tuning import MAX_TRUTH_WORK, MIN_VECTORS, SAMPLE_QUERIES, describe, truth_work, tune
    index = Index(root, device="cpu", threads=opts.threads)
    if "operating_point" in index.manifest or index.count < MIN_VECTORS:  # tiny: every search is exhaustive
        return
    if truth_work(index) > MAX_TRUTH_WORK:
        say(f"note: the default operating point was not measured: exact truth over {index.count:,} vectors costs "
            f"too much at build time; run `matryoshka tune {root}` (or Index.tune) to measure it", opts.quiet)
        return
    say(f"measuring the default operating point on {min(SAMPLE_QUERIES, index.count)} sample queries", opts.quiet)
    point = tune(index, opts.target_recall, lock=False)
    say(f"operating point: {describe(point.to_dict())}", opts.quiet)
