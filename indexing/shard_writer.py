"""Writes one shard into a temporary folder and renames it into place only when it is complete."""
from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from matryoshka.core import layout
from matryoshka.core.device import to_gpu
from .ivf import clone_empty
from matryoshka.storage.npy_writer import NpyAppender


class ShardWriter:
    """Appends (ids, full vectors, short float vectors, int8 codes, texts) batch by batch."""

    def __init__(self, root: Path, number: int, id_start: int, trained: np.ndarray, full_dim: int, dim: int,
                 has_text: bool, device: str, reserve: int = 0, seconds: dict | None = None):
        self.seconds = seconds if seconds is not None else {}  # time spent per step, added to the caller's
        self.root, self.number, self.id_start, self.count = root, number, id_start, 0
        self.final = root / layout.SHARDS / layout.shard_name(number)
        self.tmp = root / layout.SHARDS / f".tmp-{layout.shard_name(number)}"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.index = clone_empty(trained)
        if device == "gpu" and "FastScan" not in type(self.index).__name__:
            self.index = to_gpu(self.index)
            if reserve and hasattr(self.index, "reserveMemory"):
                self.index.reserveMemory(reserve)
        self.full = NpyAppender(self.tmp / layout.FULL_FILE, full_dim, np.float16)
        self.short = NpyAppender(self.tmp / layout.SHORT_FILE, dim, np.int8)
        self.ids: list[pa.Array] = []
        self.doc_bytes = open(self.tmp / layout.DOC_BYTES, "wb") if has_text else None
        self.doc_offsets = [np.zeros(1, np.int64)] if has_text else None
        self._doc_end = 0

    def add(self, ids: pa.Array, full: np.ndarray, short: np.ndarray, codes: np.ndarray,
            texts: list[str] | None) -> None:
        n = len(ids)
        gids = np.arange(self.id_start + self.count, self.id_start + self.count + n, dtype=np.int64)
        t = time.perf_counter()
        self.index.add_with_ids(short, gids)  # coarse assignment + PQ encoding
        t = self._lap("pq_encode", t)
        self.full.append(full.astype(np.float16))
        self.short.append(codes)
        self.ids.append(ids)
        if self.doc_bytes is not None:
            encoded = [t.encode() for t in texts]
            self.doc_bytes.write(b"".join(encoded))
            ends = self._doc_end + np.cumsum([len(e) for e in encoded], dtype=np.int64)
            self._doc_end = int(ends[-1]) if n else self._doc_end
            self.doc_offsets.append(ends)
        self.count += n
        self._lap("write", t)

    def _lap(self, name: str, t: float) -> float:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - t
        return now

    def finish(self, id_type: pa.DataType) -> dict:
        """Flush every file, record sizes and checksums in shard.json, and rename the folder into place."""
        self.full.close()
        self.short.close()
        index = self.index
        if "Gpu" in type(index).__name__:
            index = faiss.index_gpu_to_cpu(index)
        try:
            faiss.write_index(index, str(self.tmp / layout.INDEX_FILE))
        except RuntimeError as e:  # faiss reports I/O errors as RuntimeError; keep a full disk recognizable
            if "No space left" in str(e):
                raise OSError(errno.ENOSPC, "No space left on device", str(self.tmp)) from None
            raise
        ids = pa.concat_arrays([a.cast(id_type) for a in self.ids]) if self.ids else pa.array([], id_type)
        pq.write_table(pa.table({"id": ids}), self.tmp / layout.IDS_FILE)
        if self.doc_bytes is not None:
            self.doc_bytes.close()
            np.save(self.tmp / layout.DOC_OFFSETS, np.concatenate(self.doc_offsets))
        files = {p.name: layout.file_record(p) for p in sorted(self.tmp.iterdir())}
        meta = {"number": self.number, "count": self.count, "id_start": self.id_start, "files": files,
                "ids_are_rows": self._ids_are_rows(ids)}
        layout.write_json_atomic(self.tmp / layout.SHARD_META, meta)
        for p in self.tmp.iterdir():  # data must be on disk before the rename makes the shard visible
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        self.tmp.rename(self.final)
        layout.fsync_dir(self.final.parent)
        return meta

    def _ids_are_rows(self, ids: pa.Array) -> bool:
        """Whether the external ids are the global row numbers (the default): then no id map is held in RAM."""
        if not pa.types.is_integer(ids.type):
            return False
        return bool(np.array_equal(ids.to_numpy(zero_copy_only=False), np.arange(self.id_start,
                                                                                  self.id_start + self.count)))

    def abandon(self) -> None:
        """Drop the unfinished shard (after an error); a resumed build writes it again from its first row."""
        for f in (self.full._f, self.short._f, self.doc_bytes):
            if f is not None and not f.closed:
                try:
                    f.close()
                except OSError:  # a full disk cannot take the buffered tail; the folder goes anyway
                    pass
        shutil.rmtree(self.tmp, ignore_errors=True)
