"""`add`: new documents into a finished index, without retraining.

The documents go through the build's own per-batch pipeline with the index's transform, int8 scales and trained
IVF, into new shards (numbered after every shard the index ever had). Ids that are already live are refused,
or replaced with `upsert`: the old rows are deleted in the same generation that adds the new ones.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from dataclasses import fields
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa

from matryoshka.core import encoder, layout
from matryoshka.core.checks import flag
from matryoshka.core.codec import Codec
from matryoshka.core.device import set_threads
from matryoshka.core.errors import InputError
from matryoshka.core.progress import bar, say
from matryoshka.core.timing import StageTimer
from matryoshka.storage.manifest import Manifest, ShardRecord

from . import drift
from .attributes import check_add, describe, index_attributes, typed_nulls, widened
from .compact import merge, shard_spec
from .generation import Change
from .ids import DuplicateGuard
from .inputs import open_source
from .live_ids import LiveIds
from .options import BuildOptions
from .pipeline import Pipeline
from .shard_api import shard_ids, written_id
from .sources import ArraySource, Source, offset_ids
from .text_source import TextSource
from .training import BuildState

WORK_DIR = ".add"  # in the index folder: texts being encoded for an add (kept if killed, to resume)
MAX_ID = 2**63 - 1  # integer ids are int64
APPEND_ROWS = 65536  # an add merges into the last shard while it holds fewer live rows than this


def add(index_dir: str | os.PathLike, data, *, ids=None, texts=None, attributes=None, model: str | None = None,
        upsert: bool = False, quiet: bool = False, threads: int | None = None, ray: str | None = None) -> dict:
    """Add documents (any input `build` accepts) to the index in `index_dir` as a new generation; returns the
    change record (counts, seconds, drift). Integer-id indexes number documents given without ids after the
    largest id they hold; ids already live are refused unless `upsert`. Attribute columns new to the index are
added (null for earlier rows); those the input leaves out are null for its rows. ray="auto" or a cluster address writes
    the new shards as Ray tasks (a .npy or Parquet path with embeddings; see `indexing.distributed_add`)."""
    flag("upsert", upsert)
    flag("quiet", quiet)
    set_threads(threads)
    with Change(index_dir, "add") as change:
        m, root = change.manifest, change.root
        stored = index_attributes(root, m)
        source = _open_input(m, data, ids, texts, model, typed_nulls(attributes, stored))
        check_add(stored, source.attributes, _all_null(source))  # before anything is written
        if source.model_name and not m.has_text:  # texts to encode: the documents themselves (docs/usage.md)
            warnings.warn("this index was built without texts: the texts given are encoded with its model and "
                          "their vectors added, but the texts themselves are not stored (rebuild the index with "
                          "texts to keep them)", stacklevel=2)
        fingerprint = {"source": source.fingerprint(), "upsert": upsert}
        if (done := change.repeated(fingerprint)) is not None:
            say(f"this add was already committed as generation {done['generation']}; nothing to do", quiet)
            return done
        in_memory_ids = not (ids is None or isinstance(ids, (str, os.PathLike)))
        if ray and (texts is not None or attributes is not None or in_memory_ids):
            raise InputError("an add on Ray reads a .npy (ids: a .npy or Parquet path) or a Parquet path with its "
                             "columns; texts=, attributes= and in-memory ids are for an add without ray=")
        try:
            _prepare(source, root / WORK_DIR, fingerprint, quiet)
            record = _add(change, source, data, ids, upsert, quiet, threads, ray, fingerprint)
        finally:  # kept only when killed: a re-run of the same add resumes the encoding
            shutil.rmtree(root / WORK_DIR, ignore_errors=True)
    say(f"added {record['added']:,} documents in {len(record['shards'])} shard(s) ({record['replaced']:,} "
        f"replaced): generation {record['generation']}", quiet)
    return record


def _prepare(source: Source, work: Path, fingerprint: dict, quiet: bool) -> None:
    """Encode a texts input into `work`, resuming what a killed run of this same add encoded there."""
    stamp = work / "input.json"
    if work.exists() and (not stamp.exists() or json.loads(stamp.read_text()) != json.loads(json.dumps(fingerprint))):
        shutil.rmtree(work)  # another input's vectors: never reused
    work.mkdir(exist_ok=True)
    stamp.write_text(json.dumps(fingerprint))
    source.prepare(work, quiet)


def _add(change: Change, source: Source, data, ids, upsert: bool, quiet: bool, threads: int | None, ray: str | None,
         fingerprint: dict) -> dict:
    """Write the new shards, check their ids, measure drift and commit: the body of `add`."""
    m, root = change.manifest, change.root
    live = LiveIds(change.folder, m)
    offset = None
    named = ids is not None or "id" in getattr(source, "cols", [])  # a Parquet input reads its `id` column
    if not named and isinstance(source, (ArraySource, TextSource)):  # no ids given: number the new rows
        if live.kind != "int":
            raise InputError("the index's ids are strings: give ids= (--ids) for the documents to add")
        offset = max(int(live.max_int) + 1, int(m.next_id or 0))
        if offset + (source.count or 0) - 1 > MAX_ID:
            raise InputError(f"automatic ids would pass the largest integer id, 2^63-1: the index's ids reach "
                             f"{offset - 1} and {source.count:,} documents need new ones; give ids explicitly "
                             "(ids=, --ids)")
    opts = _options(m, quiet, threads)
    first = change.next_shards()
    state = BuildState({}, full_dim=m.full_dim, index_dim=m.index_dim)
    id_type = pa.int64() if live.kind == "int" else pa.string()
    schema = widened(index_attributes(root, m), source.attributes)
    guard = _AddGuard(live, upsert, root, first[0])
    if ray:  # one Ray task per new shard; ids are checked once they are written
        from .distributed_add import write_shards_on_ray
        new = write_shards_on_ray(root, data, ids, first, opts, state, m.has_text, id_type, offset, ray,
                                  quiet, schema)
        for meta in new:
            guard.check_live(shard_ids(root, meta["number"]), meta["id_start"] - first[1])
    else:  # ids are checked batch by batch, before they are written
        timer = StageTimer()
        pipe = Pipeline(root, state, opts, "cpu", m.has_text, timer, id_type, schema)
        with bar(source.count, "add", quiet) as pbar:
            new = pipe.fill_shards(offset_ids(source.batches(opts.batch_rows, 0), offset), guard, *first, pbar)
    new = [ShardRecord.of(s) for s in new]
    added = sum(s.count for s in new)
    if not added:
        raise InputError("the input holds no vectors; there is nothing to add")
    reference, measured = _drift(root, m, new)
    shards = _append_to_tail(change, change.mark_dead(guard.replaced), new, opts.shard_size, id_type, schema)
    warning = drift.verdict(measured, reference)
    if warning:
        warnings.warn(warning, stacklevel=2)
    seconds = time.perf_counter() - change.started
    record = {"fingerprint": fingerprint, "added": added, "replaced": sum(map(len, guard.replaced.values())),
              "shards": [s.number for s in new], "vectors_per_second": added / seconds, "drift": measured,
              "warning": warning, "engine": "ray" if ray else "local"}
    extra = {"next_id": max(guard.max_int + 1, offset or 0, m.next_id or 0)} if live.kind == "int" else {}
    return change.commit(shards, record, drift_reference=reference, attributes=describe(schema), **extra)


def _append_to_tail(change: Change, old: list[ShardRecord], new: list[ShardRecord], shard_size: int,
                    id_type: pa.DataType, attributes: pa.Schema | None) -> list[ShardRecord]:
    """The shards of the next generation: the index's, then the new ones; when the add wrote one shard, the last
    shard of the index and it merge into one, if the last holds fewer than APPEND_ROWS live rows and both fit in
    a shard. Fifty adds of ten rows then leave one small tail shard, not fifty (whose per-shard scans would make
    every search slower); each add rewrites at most APPEND_ROWS old rows, their codes copied."""
    if not old or len(new) != 1:
        return old + new
    tail, first = old[-1], new[0]
    if tail.live >= min(APPEND_ROWS, shard_size) or tail.live + first.count > shard_size:
        return old + new
    merged = merge(change, [tail, first], shard_spec(change.manifest, change.root, attributes), first.number + 1,
                   first.end, id_type, StageTimer())
    return old[:-1] + [merged]


def _open_input(m: Manifest, data, ids, texts, model: str | None, attributes) -> Source:
    """The input as a source of the index's kind: same dims, texts if it stores them, the index's model."""
    recorded = m.model
    if recorded is None and model is None and isinstance(data, (list, tuple)) and data and \
            all(isinstance(t, str) for t in data):
        raise InputError("this index was built from vectors without a model, so it cannot encode texts; add the "
                         "documents' vectors (their texts go in texts=)")
    source = open_source(data, ids, texts, model or (recorded or {}).get("name"), "cpu", attributes)
    if source.model_name:  # the input is texts, encoded here: with the model that made the index
        if recorded is None:
            raise InputError("this index was built from vectors without a model, so it cannot encode texts; add "
                             "the documents' vectors")
        encoder.check_fingerprint(recorded, encoder.fingerprint(source.model, source.model_name))
    if source.dim != m.full_dim:
        made = f" by {recorded['name']}" if recorded else ""
        raise InputError(f"the input has {source.dim}-dim vectors but the index holds {m.full_dim}-dim vectors"
                         f"{made}; add vectors of the same model and dims")
    if m.has_text and not source.has_text:
        raise InputError("this index stores the documents' texts: give texts= (or a `text` column) for the "
                         "documents to add")
    if source.has_text and not m.has_text and not source.model_name:  # texts besides vectors: nowhere to go
        raise InputError("this index was built without texts, so it cannot store the texts given (texts=, or the "
                         "input's `text` column): add the documents without them, or rebuild the index with texts")
    return source


def _all_null(source: Source) -> set[str]:
    """The attribute columns of an in-memory input that hold nothing but nulls (they fit a column of any type)."""
    attrs = getattr(source, "attrs", None)
    return {n for n in attrs.column_names if attrs.column(n).null_count == attrs.num_rows} if attrs is not None \
        else set()


def _options(m: Manifest, quiet: bool, threads: int | None) -> BuildOptions:
    known = {f.name for f in fields(BuildOptions)}
    stored = {k: v for k, v in m.build["options"].items() if k in known}
    return BuildOptions(**{**stored, "quiet": quiet, "threads": threads, "overwrite": False})


class _AddGuard(DuplicateGuard):
    """Duplicates within the input (the build's check) and ids already live in the index."""

    def __init__(self, live: LiveIds, upsert: bool, root: Path, first_new: int):
        super().__init__(lambda v: written_id(root, v, first_new))  # only the shards this add wrote
        self.live, self.upsert = live, upsert
        self.replaced: dict[int, list[int]] = {}  # shard number -> rows replaced (upsert)
        self.max_int = -1

    def check(self, ids: pa.Array, start: int) -> None:
        super().check(ids, start)
        self.check_live(ids, start)

    def check_live(self, ids: pa.Array, start: int) -> None:
        """Refuse ids already live in the index, or note their rows as replaced (upsert)."""
        if self.live.kind == "int" and len(ids):
            self.max_int = max(self.max_int, int(pa.compute.max(ids).as_py()))
        pos, shards, rows = self.live.find(ids)
        if len(pos) and not self.upsert:
            shown = ", ".join(repr(ids[int(p)].as_py()) for p in pos[:5])
            raise InputError(f"{len(pos)} id(s) in rows {start}.. are already in the index ({shown}"
                             f"{', ...' if len(pos) > 5 else ''}); pass upsert=True (--upsert) to replace those "
                             "documents, or give new ids")
        for s, r in zip(shards.tolist(), rows.tolist()):
            self.replaced.setdefault(s, []).append(r)


def _drift(root: Path, m: Manifest, new: list[ShardRecord]) -> tuple[dict, dict]:
    """(reference, added): drift figures of the index before its first change (kept in the manifest) and of
    the rows this add wrote."""
    codec = Codec.load(root / layout.TRANSFORM)
    trained = faiss.read_index(str(root / layout.TRAINED))  # owns the quantizer: keep it referenced
    quantizer = faiss.extract_index_ivf(trained).quantizer

    def stored(metas: list[ShardRecord]) -> np.ndarray:
        parts = [np.load(root / layout.shard_dir(s.number) / layout.SHORT_FILE, mmap_mode="r") for s in metas]
        per = -(-drift.SAMPLE // max(len(parts), 1))
        return np.concatenate([p[np.linspace(0, len(p) - 1, min(per, len(p))).astype(np.int64)] for p in parts
                               if len(p)] or [np.zeros((0, m.index_dim), np.int8)])
    reference = m.drift_reference or drift.measure(stored(m.shards), codec.int8, quantizer)
    added = drift.measure(stored(new), codec.int8, quantizer)
    return (added if reference["rows"] < drift.MIN_ROWS else reference), added  # an empty index: the first add
