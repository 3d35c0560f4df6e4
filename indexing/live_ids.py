"""Where each external id of a finished index lives: (shard, row), for the ids of rows not deleted."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from matryoshka.storage.manifest import Manifest
from matryoshka.storage.pinned import PinnedFolder
from matryoshka.storage.shard_files import read_dead

from .ids import coerce_ids, hash_ids
from .shard_api import shard_ids


class LiveIds:
    """The live ids of the index in `folder` (its generation `manifest`), found by their 64-bit keys: 20 bytes
    per document. String keys that match are confirmed against the ids themselves."""

    def __init__(self, folder: PinnedFolder, manifest: Manifest):
        self.kind = "int" if manifest.id_type == "int" else "string"
        self.ids: dict[int, pa.Array] = {}
        keys, shards, rows = [], [], []
        self.dead: dict[int, np.ndarray] = {}
        self.max_int = -1  # the largest integer id any row holds, deleted or not
        for meta in manifest.shards:
            number = meta.number
            ids = self.ids[number] = shard_ids(folder.path(), number)
            dead = read_dead(folder, meta)
            if dead is not None:
                self.dead[number] = dead
            if self.kind == "int" and len(ids):
                self.max_int = max(self.max_int, int(pa.compute.max(ids).as_py()))
            live = np.flatnonzero(~dead) if dead is not None else np.arange(len(ids))
            keys.append(hash_ids(ids)[live])
            shards.append(np.full(len(live), number, np.int32))
            rows.append(live.astype(np.int64))
        allk = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
        order = np.argsort(allk, kind="stable")
        self.keys = allk[order]
        self.shard = np.concatenate(shards)[order] if shards else np.zeros(0, np.int32)
        self.row = np.concatenate(rows)[order] if rows else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.keys)

    def coerce(self, values) -> pa.Array:
        """Ids given by a user, as the index's id type (integers given as text are parsed)."""
        return coerce_ids(values, self.kind)

    def find(self, ids: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(positions in `ids`, shard numbers, rows in the shard) of the given ids that are live."""
        keys = hash_ids(ids)
        pos = np.minimum(np.searchsorted(self.keys, keys), max(len(self.keys) - 1, 0))
        hit = np.flatnonzero(self.keys[pos] == keys) if len(self.keys) else np.zeros(0, np.int64)
        out = [], [], []
        for i in hit:  # several live rows can share a string key; the id itself decides
            j = int(pos[i])
            while j < len(self.keys) and self.keys[j] == keys[i]:
                s, r = int(self.shard[j]), int(self.row[j])
                if self.kind == "int" or self.ids[s][r] == ids[int(i)]:
                    out[0].append(int(i))
                    out[1].append(s)
                    out[2].append(r)
                    break
                j += 1
        return tuple(np.array(a, dtype=np.int64) for a in out)
