"""`compact`: rewrite the shards whose share of deleted rows passed a threshold, without the dead rows.

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
from matryoshka.storage.shard_files import Shard

from .attributes import index_attributes
from .generation import Change
from .invlists import copy_kept
from .shard_api import shard_ids
from .shard_writer import ShardSpec, ShardWriter

MIN_DEAD = 0.2  # default: rewrite a shard once a fifth of its rows are deleted
CHUNK = 65536  # rows copied at once


def compact(index_dir: str | os.PathLike, *, min_dead: float = MIN_DEAD, quiet: bool = False) -> dict:
    """Rewrite every shard at least `min_dead` deleted (0 < min_dead <= 1); returns the change record, or a
    record with nothing rewritten when no shard qualifies (no new generation is written then)."""
    if not (isinstance(min_dead, (int, float)) and 0 < min_dead <= 1):
        raise InputError(f"min_dead must be a fraction in (0, 1]; got {min_dead!r}")
    with Change(index_dir, "compact") as change:
        m, root = change.manifest, change.root
        todo = [s for s in m["shards"] if (s.get("dead") or {}).get("count", 0) >= min_dead * max(s["count"], 1)]
        if not todo:
            say(f"no shard has {min_dead:.0%} of its rows deleted; nothing to compact", quiet)
            return {"op": "compact", "generation": change.generation, "rewritten": [], "removed_rows": 0}
        number, row = change.next_shards()
        spec = ShardSpec(root, np.frombuffer((root / layout.TRAINED).read_bytes(), np.uint8), m["full_dim"],
                         m["index_dim"], m["has_text"], "cpu", attributes=index_attributes(root, m))
        id_type = pa.int64() if m["id_type"] == "int" else pa.string()
        rewritten, timer = {}, StageTimer()
        with bar(sum(s["count"] for s in todo), "compact", quiet) as pbar:
            for meta in todo:
                new = _rewrite(change, meta, spec, number, row, id_type, timer)
                layout.crash_point("compacted", meta["number"])
                rewritten[meta["number"]] = new
                if new is not None:
                    number, row = number + 1, row + new["count"]
                pbar.update(meta["count"])
        extra = {}
        if m["id_type"] == "int":  # the ids of removed rows stay used: an add numbers new documents after them
            top = [pa.compute.max(shard_ids(root, s["number"])).as_py() for s in todo if s["count"]]
            extra["next_id"] = max([m.get("next_id", 0)] + [t + 1 for t in top if t is not None])
        kept = [s for s in m["shards"] if s["number"] not in rewritten]
        shards = kept + [s for s in rewritten.values() if s is not None]
        removed = sum(s["count"] for s in todo) - sum(s["count"] for s in rewritten.values() if s is not None)
        record = change.commit(shards, {"rewritten": sorted(rewritten), "removed_rows": removed,
                                        "into": [s["number"] for s in rewritten.values() if s is not None]},
                               **extra)
    say(f"compacted {len(todo)} shard(s): {removed:,} deleted rows removed, generation {record['generation']}", quiet)
    return record


def _rewrite(change: Change, meta: dict, spec: ShardSpec, number: int, row: int, id_type: pa.DataType,
             timer: StageTimer) -> dict | None:
    """Write shard `meta`'s live rows as shard `number` from global row `row`; None when no row is live."""
    m = change.manifest
    old = Shard(change.folder, meta, m["full_dim"], m["index_dim"], m["has_text"])
    live = np.flatnonzero(~old.dead)
    if not len(live):
        return None
    new_ids = np.full(old.count, -1, np.int64)
    new_ids[live] = row + np.arange(len(live))
    writer = ShardWriter(spec, number, row, timer)
    try:
        copy_kept(old.index, writer.index, new_ids, old.id_start)
        for lo in range(0, len(live), CHUNK):
            rows = live[lo:lo + CHUNK]
            ids = pa.array(rows + old.id_start, pa.int64()) if old.ids is None else \
                pa.array(old.ids[rows]) if isinstance(old.ids, np.ndarray) else old.ids.take(pa.array(rows))
            writer.append_rows(ids, np.asarray(old.full[rows]), np.asarray(old.short[rows]),
                               old.texts(rows) if old.doc_offsets is not None else None,
                               old.attrs.take(pa.array(rows)) if old.attrs is not None else None)
        return writer.finish(id_type)
    except BaseException:
        writer.abandon()
        raise
