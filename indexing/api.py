"""`build`: build an index in this process or as Ray tasks, from any input a user has."""
from __future__ import annotations

import logging

import os
from functools import partial
from pathlib import Path

from matryoshka.core.errors import InputError
from matryoshka.core.progress import say

from .build import build_index
from .inputs import open_source
from .options import BuildOptions, plan_options


def build(out: str | os.PathLike, data, *, ids=None, texts=None, attributes=None, model: str | None = None,
          ray: str | None = None, queries=None, plan_from: str | os.PathLike | None = None, **options) -> Path:
    """Build an index in folder `out` from any input `open_source` accepts; options are BuildOptions fields.
    `attributes` (a pyarrow Table or dict of arrays, one row per vector; a Parquet input's extra columns
    instead) are stored for filtered search (`search_batch(where=...)`).

    ray="auto" or a cluster address builds the shards as Ray tasks (a .npy or Parquet path input only; needs
    the `distributed` extra), see `indexing.distributed_build`.

    `queries` (texts or full-dim vectors, real ones) measure the default operating point instead of the index's
    own vectors, which are easier queries. `plan_from` names an index whose plan (dims, shortening, partition,
    code, rotation) is repeated exactly, with nothing measured again; options given here override it."""
    opts = BuildOptions.of(**{**(plan_options(plan_from) if plan_from is not None else {}), **options})
    finish = partial(tune_new_index, queries=queries)
    if ray:
        if texts is not None or attributes is not None:
            raise InputError("a distributed build reads texts and attributes from the Parquet input's columns; "
                             "texts= and attributes= are for single-machine builds")
        from .distributed_build import build_distributed
        return build_distributed(out, data, ids=ids, model=model, options=opts, address=ray, finish=finish)
    source = open_source(data, ids, texts, model, "cpu", attributes)
    return build_index(out, source, opts, model_name=model, finish=finish)


def tune_new_index(root: Path, opts: BuildOptions, queries=None) -> None:
    """A build's last step (`indexing.build`): store the default operating point of the index in `root`, unless
    it has one, `opts.tune` is off, or exact truth over the whole index would cost more than MAX_TRUTH_WORK;
    on `queries` when given (then measured again even where a point is stored)."""
    if not opts.tune:
        return
    from retrieval.index import Index  # here: retrieval imports indexing's lower layers on import
    from retrieval.tuning import MAX_TRUTH_WORK, MIN_VECTORS, SAMPLE_QUERIES, describe, truth_work, tune
    with Index(root, device="cpu", threads=opts.threads) as index:
        if index.count < MIN_VECTORS or ("operating_point" in index.manifest and queries is None):
            return  # tiny (every search is exhaustive), or measured already
        if truth_work(index) > MAX_TRUTH_WORK:
            say(f"note: the default operating point was not measured: exact truth over {index.count:,} vectors "
                f"costs too much at build time; run `matryoshka tune {root}` (or Index.tune) to measure it",
                opts.quiet, logging.WARNING)
            return
        which = f"{len(queries)} given" if queries is not None else f"{min(SAMPLE_QUERIES, index.count)} sample"
        say(f"measuring the default operating point on {which} queries", opts.quiet)
        point = tune(index, opts.target_recall, queries, lock=False)
    say(f"operating point: {describe(point.to_dict())}", opts.quiet)
