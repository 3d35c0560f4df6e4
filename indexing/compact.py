"""`compact`: rewrite the shards whose share of deleted rows passed a threshold, without the dead rows, and merge
small shards (many small adds leave them) so that search cost stays that of a fresh build.

Each rewritten shard takes a new number and new rows; its faiss codes are copied, not encoded again
(`invlists.copy_kept`), and its stores, ids and texts keep the live rows in order, so searches return what a
fresh build of the live documents on the same trained quantizer would.
"""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute

from matryoshka.core import layout
from matryoshka.core.errors import InputError
from matryoshka.core.progress import bar, say
from matryoshka.core.timing import StageTimer
from matryoshka.storage.manifest import Manifest, ShardRecord
from matryoshka.storage.shard_files import Shard

from .attributes import index_attributes
from .generation import Change
from .invlists import copy_kept
from .shard_api import shard_ids
from .shard_writer import ShardSpec, ShardWriter

MIN_DEAD = 0.2  # default: rewrite a shard once a fifth of its rows are deleted
CHUNK = 65536  # rows copied at once


def compact(index_dir: str | os.PathLike, *, min_dead: float = MIN_DEAD, quiet: bool = False) -> dict:
    """Rewrite every shard at least `min_dead` deleted (0 < min_dead <= 1) without its dead rows, and merge runs
    of small shards (under half the build's shard size) into shards of at most that size; returns the change
    record, or a record with nothing rewritten when no shard qualifies (no new generation is written then)."""
    if isinstance(min_dead, bool) or not (isinstance(min_dead, (int, float)) and 0 < min_dead <= 1):
        raise InputError(f"min_dead must be a fraction in (0, 1]; got {min_dead!r}")
    with Change(index_dir, "compact") as change:
        m, root = change.manifest, change.root
        groups = _groups(m, min_dead)
        todo = [s for g in groups for s in g]
        if not todo:
            most = max((_dead_share(s) for s in m.shards), default=0.0)
            say(f"no shard has {percent(min_dead)} of its rows deleted (the most: {percent(most)}) and no small "
                "shards sit side by side; nothing to compact", quiet)
            return {"op": "compact", "generation": change.generation, "rewritten": [], "removed_rows": 0}
        number, row = change.next_shards()
        spec, id_type = shard_spec(m, root), pa.int64() if m.id_type == "int" else pa.string()
        written, timer = [], StageTimer()
        with bar(sum(s.count for s in todo), "compact", quiet) as pbar:
            for group in groups:
                new = merge(change, group, spec, number, row, id_type, timer)
                layout.crash_point("compacted", group[0].number)
                if new is not None:
                    written.append(new)
                    number, row = number + 1, row + new.count
                pbar.update(sum(s.count for s in group))
        extra = {}
        if m.id_type == "int":  # the ids of removed rows stay used: an add numbers new documents after them
            top = [pa.compute.max(shard_ids(root, s.number)).as_py() for s in todo if s.count]
            extra["next_id"] = max([m.next_id or 0] + [t + 1 for t in top if t is not None])
        gone = {s.number for s in todo}
        shards = [s for s in m.shards if s.number not in gone] + written
        removed = sum(s.count for s in todo) - sum(s.count for s in written)
        record = change.commit(shards, {"rewritten": sorted(gone), "removed_rows": removed,
                                        "into": [s.number for s in written]}, **extra)
    say(f"compacted {len(todo)} shard(s) into {len(written)}: {removed:,} deleted rows removed, generation "
        f"{record['generation']}", quiet)
    return record


def _live(meta: ShardRecord) -> int:
    return meta.live


def _groups(m: Manifest, min_dead: float) -> list[list[ShardRecord]]:
    """The shards to rewrite, grouped by the shard each becomes: a shard `min_dead` deleted on its own, or with
    its small neighbours; neighbouring small shards (live rows under half the shard size) merged while they fit
    in one shard. Shards that stay as they are are left out."""
    size = m.build["options"]["shard_size"]
    groups: list[list[ShardRecord]] = []
    run: list[ShardRecord] = []

    def close_run():
        if len(run) > 1 or (run and _dead_enough(run[0], min_dead)):
            groups.append(list(run))
        run.clear()
    for s in m.shards:
        small = _live(s) < size / 2
        if small and sum(map(_live, run)) + _live(s) <= size:
            run.append(s)
            continue
        close_run()
        if small:
            run.append(s)
        elif _dead_enough(s, min_dead):
            groups.append([s])
    close_run()
    return groups


def _dead_share(meta: ShardRecord) -> float:
    return meta.dead_count / max(meta.count, 1)


def percent(share: float) -> str:
    """A share as a percentage with three significant digits: 0.095%, not 0%."""
    return f"{share * 100:.3g}%"


def _dead_enough(meta: ShardRecord, min_dead: float) -> bool:
    return meta.dead_count >= min_dead * max(meta.count, 1)


def shard_spec(m: Manifest, root, attributes: pa.Schema | None = None) -> ShardSpec:
    """How a change writes shards of the index in `root` (manifest `m`): its trained IVF, store widths and
    attribute columns (default: the manifest's)."""
    return ShardSpec(root, np.frombuffer((root / layout.TRAINED).read_bytes(), np.uint8), m.full_dim,
                     m.index_dim, m.has_text, "cpu",
                     attributes=attributes if attributes is not None else index_attributes(root, m),
                     lexical=bool(m.lexical),
                     row_order=m.build["options"].get("row_order", "input"))


def merge(change: Change, metas: list[ShardRecord], spec: ShardSpec, number: int, row: int, id_type: pa.DataType,
          timer: StageTimer) -> ShardRecord | None:
    """Write the live rows of shards `metas`, in order, as shard `number` from global row `row`: their codes
    copied, not encoded again. None when no row is live."""
    m = change.manifest
    olds = [Shard(change.folder, meta, m.full_dim, m.index_dim, m.has_text, attributes=spec.attributes)
            for meta in metas]
    lives = [np.flatnonzero(~old.dead) if old.dead is not None else np.arange(old.count) for old in olds]
    if not sum(map(len, lives)):
        return None
    writer = ShardWriter(spec, number, row, timer)
    try:
        sources, start = [], row
        for old, live in zip(olds, lives):
            new_ids = np.full(old.count, -1, np.int64)
            new_ids[live] = start + np.arange(len(live))
            sources.append((old.index, new_ids, old.id_start))
            start += len(live)
        copy_kept(sources, writer.index)
        for old, live in zip(olds, lives):
            for lo in range(0, len(live), CHUNK):
                rows = live[lo:lo + CHUNK]
                ids = pa.array(rows + old.id_start, pa.int64()) if old.ids is None else \
                    pa.array(old.ids[rows]) if isinstance(old.ids, np.ndarray) else old.ids.take(pa.array(rows))
                writer.append_rows(ids, old.vectors("full", rows), old.vectors("short", rows),
                                   old.texts(rows) if old.doc_offsets is not None else None,
                                   old.attrs.take(pa.array(rows)) if old.attrs is not None else None)
        return ShardRecord.of(writer.finish(id_type))
    except BaseException:
        writer.abandon()
        raise
