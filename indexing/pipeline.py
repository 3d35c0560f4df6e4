"""The per-batch work of every build: validate -> normalize -> transform -> int8 -> shards, with the trained
state, whichever process or scheduler runs it."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa

from matryoshka.core import layout
from matryoshka.core.codec import Codec
from matryoshka.core.errors import InputError
from matryoshka.core.progress import say
from matryoshka.core.timing import StageTimer
from matryoshka.core.vectors import as_matrix, normalize

from .attributes import conform
from .ids import DuplicateGuard, id_kind
from .options import BuildOptions
from .shard_writer import ShardSpec, ShardWriter
from .sources import Batch
from .training import BuildState


class Pipeline:
    """Turns batches into finished shards of the trained index in `root`."""

    def __init__(self, root: Path, state: BuildState, opts: BuildOptions, device: str, has_text: bool,
                 timer: StageTimer, id_type: pa.DataType | None = None, attributes: pa.Schema | None = None):
        self.codec = Codec.load(root / layout.TRANSFORM)
        trained = np.frombuffer((root / layout.TRAINED).read_bytes(), dtype=np.uint8)
        self.spec = ShardSpec(root, trained, state.full_dim, state.index_dim, has_text, device, opts.shard_size,
                              attributes=attributes, lexical=opts.lexical,
                              row_order=opts.row_order)
        self.state, self.opts, self.timer, self.id_type = state, opts, timer, id_type

    def prepare(self, batch: Batch, guard: DuplicateGuard):
        """(ids, normalized vectors, short vectors, int8 codes) of a batch, or an InputError naming the row."""
        self.timer.mark()
        ids = batch.ids
        if self.id_type is None:
            self.id_type = ids.type
        elif id_kind(ids) != id_kind(pa.array([], self.id_type)):
            raise InputError(f"rows {batch.start}..: ids are {id_kind(ids)}s but the index's (or earlier rows') are "
                             f"{id_kind(pa.array([], self.id_type))}s; use one id type for the whole corpus")
        x = as_matrix(batch.vectors, self.state.full_dim, "vectors", batch.start, ids)
        x = normalize(x, self.opts.metric, "vectors", batch.start, ids)
        guard.check(ids, batch.start)
        self.timer.lap("validate")
        short = self.codec.transform.apply(x)
        self.timer.lap("transform")
        codes = self.codec.int8.encode(short)
        self.timer.lap("int8")
        return ids, x, short, codes

    def fill_shards(self, batches: Iterable[Batch], guard: DuplicateGuard, number: int, start: int, pbar,
                    stop: int | None = None) -> list[dict]:
        """Write the rows of `batches` into shards number, number + 1, ... (the first of them from global row
        `start`) until the batches end or the input's row `stop`; return the finished shards' metadata."""
        opts, timer, shards, writer = self.opts, self.timer, [], None
        timer.mark()
        try:
            for batch in batches:
                timer.lap("read")
                if stop is not None and batch.start + len(batch.ids) > stop:
                    batch = batch.head(max(stop - batch.start, 0))
                if not len(batch.ids):
                    break
                ids, x, short, codes = self.prepare(batch, guard)
                attrs = self._attributes(batch)
                lo = 0
                while lo < len(ids):
                    if writer is None:
                        writer = ShardWriter(self.spec, number + len(shards), start + lo, timer)
                    take = min(len(ids) - lo, opts.shard_size - writer.count)
                    sl = slice(lo, lo + take)
                    writer.add(ids[sl], x[sl], short[sl], codes[sl], batch.texts[sl] if batch.texts else None,
                               attrs.slice(lo, take) if attrs is not None else None)
                    layout.crash_point("mid_shard", writer.number)
                    lo += take
                    if writer.count == opts.shard_size:
                        shards.append(self._finish(writer, guard))
                        writer = None
                start += len(ids)
                pbar.update(len(ids))
                if stop is not None and batch.start + len(ids) >= stop:
                    break
                timer.mark()
            if writer is not None and writer.count:
                shards.append(self._finish(writer, guard))
                writer = None
        finally:
            if writer is not None:
                writer.abandon()
        return shards

    def _attributes(self, batch: Batch) -> pa.Table | None:
        """The batch's attributes in the index's columns and types (None when the index stores none); an input
        without attributes leaves every column null for its rows, as it does a column it lacks."""
        schema = self.spec.attributes
        if schema is None:
            return None
        if batch.attrs is None:
            return pa.Table.from_arrays([pa.nulls(len(batch.vectors), f.type) for f in schema], schema=schema)
        return conform(batch.attrs, schema, batch.start)

    def _finish(self, writer: ShardWriter, guard: DuplicateGuard) -> dict:
        self.timer.mark()
        meta = writer.finish(self.id_type)
        self.timer.lap("finish_shard")
        layout.crash_point("between_shards", meta["number"])
        guard.written()
        say(f"shard {layout.shard_name(meta['number'])}: {meta['count']:,} vectors written "
            f"(rows {meta['id_start']:,}..{meta['id_start'] + meta['count'] - 1:,})", self.opts.quiet)
        return meta
