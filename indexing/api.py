"""`build`: build an index in this process or as Ray tasks, from any input a user has."""
from __future__ import annotations

import os
from pathlib import Path

from matryoshka.core.errors import InputError

from .build import build_index
from .inputs import open_source
from .options import BuildOptions


def build(out: str | os.PathLike, data, *, ids=None, texts=None, model: str | None = None, ray: str | None = None,
          **options) -> Path:
    """Build an index in folder `out` from any input `open_source` accepts; options are BuildOptions fields.

    ray="auto" or a cluster address builds the shards as Ray tasks (a .npy or Parquet path input only; needs
    the `distributed` extra), see `indexing.distributed_build`."""
    opts = BuildOptions.of(**options)
    if ray:
        if texts is not None:
            raise InputError("a distributed build reads texts from the Parquet input's `text` column; texts= is "
                             "for single-machine builds")
        from .distributed_build import build_distributed
        return build_distributed(out, data, ids=ids, model=model, options=opts, address=ray)
    source = open_source(data, ids, texts, model, "cpu")
    return build_index(out, source, opts, model_name=model)
