"""Writes one shard into a temporary folder and renames it into place only when it is complete."""
from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from matryoshka.core import layout
from matryoshka.core.device import to_gpu
from matryoshka.core.timing import StageTimer
from matryoshka.storage import lexical
from matryoshka.storage.lexical import LexicalWriter
from matryoshka.storage.npy_writer import NpyAppender

from .ivf import clone_empty


REORDER_ROWS = 65536  # rows moved at a time when a shard's stores are put in IVF-list order


@dataclass
class ShardSpec:
    """What every shard of a build shares: the folder, the trained empty IVF (serialized), the widths."""

    root: Path
    trained: np.ndarray
    full_dim: int
    index_dim: int
    has_text: bool
    device: str
    reserve: int = 0  # vectors to reserve GPU memory for
    attributes: pa.Schema | None = None  # attribute columns stored per shard (indexing.attributes)
    lexical: bool = False  # a BM25 index of the texts per shard (matryoshka.storage.lexical)
    row_order: str = "input"  # "lists": the int8 and full stores in IVF-list order, with a slot per row


class ShardWriter:
    """Appends (ids, full vectors, short float vectors, int8 codes, texts) batch by batch."""

    def __init__(self, spec: ShardSpec, number: int, id_start: int, timer: StageTimer):
        self.timer = timer  # time spent per step, added to the build's
        root = spec.root
        self.root, self.number, self.id_start, self.count = root, number, id_start, 0
        self.final = root / layout.SHARDS / layout.shard_name(number)
        self.tmp = root / layout.SHARDS / f".tmp-{layout.shard_name(number)}"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.index = clone_empty(spec.trained)
        if spec.device == "gpu" and "FastScan" not in type(self.index).__name__:
            self.index = to_gpu(self.index)
            if spec.reserve and hasattr(self.index, "reserveMemory"):
                self.index.reserveMemory(spec.reserve)
        self.full = NpyAppender(self.tmp / layout.FULL_FILE, spec.full_dim, np.float16)
        self.short = NpyAppender(self.tmp / layout.SHORT_FILE, spec.index_dim, np.int8)
        self.ids: list[pa.Array] = []
        self.attrs: list[pa.Table] = []
        self.attributes = spec.attributes
        self.doc_bytes = open(self.tmp / layout.DOC_BYTES, "wb") if spec.has_text else None
        self.doc_offsets = [np.zeros(1, np.int64)] if spec.has_text else None
        self._doc_end = 0
        self.lexical = LexicalWriter(self.tmp / lexical.FOLDER) if spec.lexical else None
        self.row_order = spec.row_order

    def add(self, ids: pa.Array, full: np.ndarray, short: np.ndarray, codes: np.ndarray,
            texts: list[str] | None, attrs: pa.Table | None = None) -> None:
        n = len(ids)
        gids = np.arange(self.id_start + self.count, self.id_start + self.count + n, dtype=np.int64)
        self.timer.mark()
        self.index.add_with_ids(short, gids)  # coarse assignment + PQ encoding
        self.timer.lap("pq_encode")
        self.append_rows(ids, full, codes, texts, attrs)

    def append_rows(self, ids: pa.Array, full: np.ndarray, codes: np.ndarray, texts: list[str] | None,
                    attrs: pa.Table | None = None) -> None:
        """Append rows to the stores, id map, texts and attributes only (compaction copies the faiss codes)."""
        n = len(ids)
        if self.attributes is not None:
            self.attrs.append(attrs)
        self.full.append(full.astype(np.float16, copy=False))
        self.short.append(codes)
        self.ids.append(ids)
        if self.doc_bytes is not None:
            encoded = [t.encode() for t in texts]
            self.doc_bytes.write(b"".join(encoded))
            ends = self._doc_end + np.cumsum([len(e) for e in encoded], dtype=np.int64)
            self._doc_end = int(ends[-1]) if n else self._doc_end
            self.doc_offsets.append(ends)
        if self.lexical is not None:
            self.lexical.add(texts)
        self.count += n
        self.timer.lap("write")

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
        if self.row_order == "lists" and self.count:
            self._order_by_lists(index)
        ids = pa.concat_arrays([a.cast(id_type) for a in self.ids]) if self.ids else pa.array([], id_type)
        pq.write_table(pa.table({"id": ids}), self.tmp / layout.IDS_FILE)
        if self.attributes is not None:
            attrs = pa.concat_tables(self.attrs) if self.attrs else self.attributes.empty_table()
            pq.write_table(attrs, self.tmp / layout.ATTR_FILE)
        if self.doc_bytes is not None:
            self.doc_bytes.close()
            np.save(self.tmp / layout.DOC_OFFSETS, np.concatenate(self.doc_offsets))
        if self.lexical is not None:
            self.lexical.finish()
        files = {p.relative_to(self.tmp).as_posix(): layout.file_record(p) for p in _files(self.tmp)}
        meta = {"number": self.number, "count": self.count, "id_start": self.id_start, "files": files,
                "ids_are_rows": self._ids_are_rows(ids)}
        layout.write_json_atomic(self.tmp / layout.SHARD_META, meta)
        for p in _files(self.tmp) + [self.tmp / layout.SHARD_META]:  # on disk before the rename shows the shard
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        if self.lexical is not None:
            layout.fsync_dir(self.tmp / lexical.FOLDER)
        self.tmp.rename(self.final)
        layout.fsync_dir(self.final.parent)
        return meta

    def _order_by_lists(self, index) -> None:
        """Rewrite the int8 and full stores with the rows of each IVF list next to each other (stable within a
        list) and save each row's slot: the candidates of a probed list then share pages."""
        ivf = faiss.extract_index_ivf(index)
        list_of = np.empty(self.count, np.int64)
        for lst in range(ivf.nlist):
            n = ivf.invlists.list_size(lst)
            if n:
                list_of[faiss.rev_swig_ptr(ivf.invlists.get_ids(lst), n) - self.id_start] = lst
        order = np.argsort(list_of, kind="stable")
        slots = np.empty(self.count, np.uint32)
        slots[order] = np.arange(self.count, dtype=np.uint32)
        for name in (layout.SHORT_FILE, layout.FULL_FILE):
            path = self.tmp / name
            src = np.load(path, mmap_mode="r")
            out = NpyAppender(self.tmp / f".{name}", src.shape[1], src.dtype)
            for lo in range(0, self.count, REORDER_ROWS):
                out.append(np.asarray(src[order[lo:lo + REORDER_ROWS]]))
            out.close()
            del src
            os.replace(self.tmp / f".{name}", path)
        np.save(self.tmp / layout.SLOTS_FILE, slots)

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


def _files(folder: Path) -> list[Path]:
    """The files of a shard being written, its lexical folder's included (tantivy's lock files left out)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".tantivy-")
                  and p.name != layout.SHARD_META)
