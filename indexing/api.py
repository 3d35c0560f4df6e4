"""`build`: build an index in this process or as Ray tasks, from any input a user has."""
from __future__ import annotations

import os
from functools import partial
from importlib.metadata import entry_points
from pathlib import Path

from matryoshka.core.errors import InputError

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
    finish = partial(finish_build, queries=queries)
    if ray:
        if texts is not None or attributes is not None:
            raise InputError("a distributed build reads texts and attributes from the Parquet input's columns; "
                             "texts= and attributes= are for single-machine builds")
        from .distributed_build import build_distributed
        return build_distributed(out, data, ids=ids, model=model, options=opts, address=ray, finish=finish)
    source = open_source(data, ids, texts, model, "cpu", attributes)
    return build_index(out, source, opts, model_name=model, finish=finish)


FINISH_GROUP = "matryoshka.build_finish"


def finish_build(root: Path, opts: BuildOptions, queries=None) -> None:
    """A build's last steps, on the complete index: what the packages above the build register under the entry
    point group `matryoshka.build_finish` (the search side measures the default operating point:
    `retrieval.api.tune_new_index`). The build calls them without importing them: the search package stands
    on the build's lower layers, never the other way."""
    for ep in sorted(entry_points(group=FINISH_GROUP), key=lambda e: e.name):
        ep.load()(root, opts, queries=queries)
