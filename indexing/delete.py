"""`delete`: documents out of a finished index by external id, as tombstones in a new generation.

Every stage skips a deleted row from that generation on (the first pass through faiss's id selector); its
codes and stored vectors stay on disk until `compact` rewrites the shard.
"""
from __future__ import annotations

import hashlib
import os
from typing import Iterable

import numpy as np

from matryoshka.core.errors import InputError
from matryoshka.core.progress import say

from .generation import Change
from .ids import hash_ids
from .live_ids import LiveIds


def delete(index_dir: str | os.PathLike, ids: Iterable, *, missing_ok: bool = False, quiet: bool = False) -> dict:
    """Delete the documents with these external ids; returns the change record. Ids not live in the index
    (never added, or deleted already) are refused, naming the first few, unless `missing_ok`: then the others
    are deleted and the unknown ones counted in the record."""
    with Change(index_dir, "delete") as change:
        live = LiveIds(change.folder, change.manifest)
        if isinstance(ids, (str, bytes, int, np.integer)):
            ids = [ids]  # one id, not the characters of a string
        given = live.coerce(list(ids) if not hasattr(ids, "__len__") else ids)
        if not len(given):
            raise InputError("no ids were given to delete")
        given = given.unique()
        fingerprint = {"ids_sha256": hashlib.sha256(np.sort(hash_ids(given)).tobytes()).hexdigest(),
                       "count": len(given)}
        if (done := change.repeated(fingerprint)) is not None:
            say(f"this delete was already committed as generation {done['generation']}; nothing to do", quiet)
            return done
        pos, shards, rows = live.find(given)
        unknown = np.setdiff1d(np.arange(len(given)), pos)
        if len(unknown) and not missing_ok:
            shown = ", ".join(repr(given[int(i)].as_py()) for i in unknown[:5])
            raise InputError(f"{len(unknown)} of the {len(given)} ids are not in the index ({shown}"
                             f"{', ...' if len(unknown) > 5 else ''}): never added, or deleted already; nothing "
                             "was deleted. Pass missing_ok=True (--missing-ok) to delete the others")
        by_shard: dict[int, list[int]] = {}
        for s, r in zip(shards.tolist(), rows.tolist()):
            by_shard.setdefault(s, []).append(r)
        record = change.commit(change.mark_dead(by_shard), {"fingerprint": fingerprint, "deleted": len(pos),
                                                            "unknown": len(unknown)})
    say(f"deleted {len(pos):,} documents ({len(unknown):,} ids unknown): generation {record['generation']}", quiet)
    return record
