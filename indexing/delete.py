"""`delete`: documents out of a finished index by external id or by condition, as tombstones in a new generation.

Every stage skips a deleted row from that generation on (the first pass through faiss's id selector); its
codes and stored vectors stay on disk until `compact` rewrites the shard.
"""
from __future__ import annotations

import hashlib
import os
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from matryoshka.core import layout
from matryoshka.core.errors import InputError
from matryoshka.core.progress import say
from matryoshka.storage import dict_filters, predicates
from matryoshka.storage.attribute_schema import manifest_schema, padded
from matryoshka.storage.manifest import Manifest
from matryoshka.storage.shard_files import read_checked, read_dead

from .generation import Change
from .ids import hash_ids, id_list
from .live_ids import LiveIds


def delete(index_dir: str | os.PathLike, ids: Iterable | None = None, *, where=None, missing_ok: bool = False,
           quiet: bool = False) -> dict:
    """Delete the documents with these external ids, those passing `where` (a SQL condition, a dict filter or
    a pyarrow expression, as `search_batch` takes it), or those of the ids that pass it; returns the change
    record. Ids not live in the index (never added, or deleted already) are refused, naming the first few,
    unless `missing_ok`: then the others are deleted and the unknown ones counted in the record. The condition
    is checked and evaluated on every shard before anything is written: a bad one deletes nothing."""
    if ids is None and where is None:
        raise InputError("delete takes ids, a where condition, or both; to delete every document give "
                         "where='true'")
    if isinstance(where, dict) and not where:
        raise InputError("where={} passes every document; to delete them all give where='true'")
    with Change(index_dir, "delete") as change:
        where = _condition(where, change.manifest)
        fingerprint = {} if where is None else {"where": predicates.key(where)}
        given = None
        if ids is not None:
            live = LiveIds(change.folder, change.manifest)
            given = live.coerce(id_list(ids))
            if not len(given):
                raise InputError("no ids were given to delete")
            given = given.unique()
            fingerprint.update(ids_sha256=hashlib.sha256(np.sort(hash_ids(given)).tobytes()).hexdigest(),
                               count=len(given))
        if (done := change.repeated(fingerprint)) is not None:
            say(f"this delete was already committed as generation {done['generation']}; nothing to do", quiet)
            return done
        passing = None if where is None else _passing(change, where)
        unknown, failing = np.zeros(0, np.int64), 0
        if given is not None:
            pos, shards, rows = live.find(given)
            unknown = np.setdiff1d(np.arange(len(given)), pos)
            if len(unknown) and not missing_ok:
                shown = ", ".join(repr(given[int(i)].as_py()) for i in unknown[:5])
                raise InputError(f"{len(unknown)} of the {len(given)} ids are not in the index ({shown}"
                                 f"{', ...' if len(unknown) > 5 else ''}): never added, or deleted already; "
                                 "nothing was deleted. Pass missing_ok=True (--missing-ok) to delete the others")
            by_shard: dict[int, list[int]] = {}
            for s, r in zip(shards.tolist(), rows.tolist()):
                if passing is None or passing[s][r]:
                    by_shard.setdefault(s, []).append(r)
            failing = len(pos) - sum(map(len, by_shard.values()))
        else:
            by_shard = {s: np.flatnonzero(mask).tolist() for s, mask in passing.items() if mask.any()}
        deleted = sum(map(len, by_shard.values()))
        counts = {"deleted": deleted, "unknown": len(unknown)}
        if where is not None and given is not None:
            counts["not_passing"] = failing  # live ids given that the condition kept
        if where is not None and not deleted:  # nothing passes: no new generation
            say(f"no live document {'of those ids ' if given is not None else ''}passes {_shown(where)}; nothing "
                "deleted", quiet)
            return {"op": "delete", "generation": change.generation, **counts}
        record = change.commit(change.mark_dead(by_shard), {"fingerprint": fingerprint, **counts})
    if given is None:
        detail = "passing the condition"
    else:
        detail = f"({len(unknown):,} ids unknown" + (f", {failing:,} not passing the condition)"
                                                    if where is not None else ")")
    say(f"deleted {deleted:,} documents {detail}: generation {record['generation']}", quiet)
    return record


def _condition(where, manifest: Manifest):
    """`where` as the filters evaluate it (a dict compiled to SQL), checked against the index's attributes
    before any shard is read."""
    if where is None:
        return None
    schema = manifest_schema(manifest.attributes)
    if schema is None:
        raise InputError("this index stores no attributes, so it cannot delete by condition; delete by ids")
    where = dict_filters.resolve(where, schema) if isinstance(where, dict) else where
    predicates.key(where)  # refuses what is not a condition
    if isinstance(where, str):
        predicates.check_sql(where, tuple(schema.names))
    return where


def _passing(change: Change, where) -> dict[int, np.ndarray]:
    """Each shard's live rows that pass `where` (shard number -> bool mask), evaluated on every shard first."""
    schema = manifest_schema(change.manifest.attributes)
    out = {}
    for meta in change.manifest.shards:
        name = f"{layout.shard_dir(meta.number)}/{layout.ATTR_FILE}"
        rec = meta.files.get(layout.ATTR_FILE)
        table = pq.read_table(pa.BufferReader(read_checked(change.folder, name, rec))) if rec else None
        mask = predicates.row_mask(padded(table, schema, meta.count), where)
        dead = read_dead(change.folder, meta)
        out[meta.number] = mask if dead is None else mask & ~dead
    return out


def _shown(where) -> str:
    return repr(where) if isinstance(where, str) else "the condition"
