"""A change to a finished index (add, delete, compact): from its newest generation to the next, under its lock.

A change writes only new files: new shard folders (new numbers, never reused) and new tombstone files (named
for the generation). Nothing the current generation names is touched, so a kill at any moment leaves it whole.
The change is committed by writing the next manifest atomically. Files the new generation no longer names
are kept (listed as `retained`) until the next change commits, then deleted; what a killed change wrote is
deleted at the start of the next one. Readers need an index's files only while they open it: the codes and
id maps are read into RAM and the stores stay memory-mapped, which keeps a deleted file's pages readable on a
local disk. On a network file system another node's maps may not survive the deletion, so readers there
(Ray workers) must `reload` before the second change after the one they hold. A reader in the middle of
opening a generation whose files are then deleted finds one missing, sees the newer generation, and opens
that instead (`retrieval.index.Index`).
"""
from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from matryoshka.core import layout
from matryoshka.core.errors import InputError
from matryoshka.storage.manifest import Manifest, ShardRecord, read_manifest, write_manifest
from matryoshka.storage.pinned import PinnedFolder
from matryoshka.storage.shard_files import read_dead
from matryoshka.storage.tombstones import write_dead

from .folder import BuildLock

MAX_CHANGES = 50  # change records kept in the manifest


class Change:
    """The newest generation of the index at `root`, locked against builds and other changes until closed."""

    def __init__(self, root: str | Path, op: str):
        self.root, self.op = Path(root), op
        if not self.root.is_dir():
            raise InputError(f"no index at {self.root}: the folder does not exist; build one first "
                             "(`matryoshka build` / indexing.build)")
        self.folder = PinnedFolder(self.root)
        try:
            read_manifest(self.folder)  # a clear error for a folder that holds no finished index, before locking
            self.lock = BuildLock(self.root)
        except BaseException:
            self.folder.close()
            raise
        try:
            self.manifest = read_manifest(self.folder)  # under the lock: the newest
            remove_unreferenced(self.root, self.manifest)  # what a killed change left: roll it back
        except BaseException:
            self.close()
            raise
        self.generation = self.manifest.generation
        self.started = time.perf_counter()

    def repeated(self, fingerprint: dict) -> dict | None:
        """The newest change's record, when it was this same change (a re-run after a kill that came after its
        commit): then there is nothing left to do."""
        last = (self.manifest.changes or [None])[-1]
        if last and last.get("op") == self.op and last.get("fingerprint") == fingerprint:
            return last
        return None

    def next_shards(self) -> tuple[int, int]:
        """(number, first row) of the first new shard this change may write."""
        return self.manifest.next_numbers()

    def mark_dead(self, rows: dict[int, list[int]]) -> list[ShardRecord]:
        """The current shards' records, with the given rows (shard number -> rows) added to their tombstones,
        each written as a new file for the next generation."""
        out = []
        for meta in self.manifest.shards:
            if rows.get(meta.number):
                dead = read_dead(self.folder, meta)
                dead = np.zeros(meta.count, bool) if dead is None else dead.copy()
                dead[rows[meta.number]] = True
                layout.crash_point("tombstone", meta.number)
                meta = replace(meta, dead=write_dead(self.root / layout.shard_dir(meta.number), self.generation + 1,
                                                     dead))
            out.append(meta)
        return out

    def commit(self, shards: list[ShardRecord], record: dict, **fields) -> dict:
        """Write the next generation with `shards` (and any other manifest `fields`), then delete what only
        older generations used. Returns the change record, with its generation and seconds."""
        number, row = self.next_shards()
        last = max((s.number for s in shards), default=-1), max((s.end for s in shards), default=0)
        record = {"op": self.op, "generation": self.generation + 1, **record,
                  "seconds": round(time.perf_counter() - self.started, 3)}
        m = replace(self.manifest, **fields)
        m = replace(m, format_version=layout.FORMAT_VERSION, generation=self.generation + 1, shards=tuple(shards),
                    count=sum(s.count for s in shards), dead=sum(s.dead_count for s in shards),
                    next_shard=max(number, last[0] + 1), next_row=max(row, last[1]),
                    retained=sorted(_named(self.manifest.shards) - _named(shards)),
                    changes=(self.manifest.changes + [record])[-MAX_CHANGES:])
        write_manifest(self.root, m)
        layout.crash_point("committed")
        self.manifest, self.generation = m, m.generation
        remove_unreferenced(self.root, m)
        return record

    def close(self) -> None:
        self.folder.close()
        self.lock.release()

    def __enter__(self) -> "Change":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:  # a failed change leaves only files no generation names: remove them now
            remove_unreferenced(self.root, self.manifest)
        self.close()


def _named(shards) -> set[str]:
    """Shard folders and tombstone files of shard records, relative to the shards folder."""
    out = set()
    for s in shards:
        out.add(layout.shard_name(s.number))
        if s.dead:
            out.add(f"{layout.shard_name(s.number)}/{s.dead['file']}")
    return out


def remove_unreferenced(root: Path, manifest: Manifest) -> None:
    """Delete shard folders and tombstone files that neither `manifest` nor the generation before it names
    (its `retained` list): unfinished ones, and those superseded two changes ago."""
    shards_dir = root / layout.SHARDS
    if not shards_dir.is_dir():
        return
    keep = _named(manifest.shards) | set(manifest.retained)
    removed = False
    for p in shards_dir.iterdir():
        if p.name not in keep:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
            removed = True
            continue
        for f in p.glob("dead.g*.bits*"):
            if f"{p.name}/{f.name}" not in keep:
                f.unlink()
                removed = True
    if removed:
        layout.fsync_dir(shards_dir)
