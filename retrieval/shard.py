"""One shard opened for search: its IVF index in RAM, its stores memory-mapped, its files checked."""
from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from indexing import layout
from indexing.errors import IndexFormatError
from rerank.gather import advise_random


def _damaged(path: Path, what: str) -> IndexFormatError:
    return IndexFormatError(f"{path}: {what}; the shard is damaged: rebuild it (re-run the build into a new "
                            "folder) or restore it from a copy")


def check_files(folder: Path, files: dict, deep: bool, whole: tuple[str, ...] = ()) -> None:
    """Sizes of every file; SHA-256 of the files read whole (`whole`), or of every file when `deep`."""
    for name, rec in files.items():
        p = folder / name
        if not p.exists():
            raise _damaged(p, "file is missing")
        if p.stat().st_size != rec["bytes"]:
            raise _damaged(p, f"size is {p.stat().st_size} bytes, the manifest says {rec['bytes']} (truncated?)")
        if (deep or name in whole) and layout.sha256_file(p) != rec["sha256"]:
            raise _damaged(p, "checksum does not match the manifest (bit rot or a partial copy)")


def open_store(path: Path, rows: int, width: int, dtype) -> np.ndarray:
    """Memory-map a .npy store after checking its header against what the manifest promises."""
    try:
        arr = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise _damaged(path, f"not a readable .npy file ({e})") from None
    if arr.shape != (rows, width) or arr.dtype != np.dtype(dtype):
        raise _damaged(path, f"holds {arr.shape} {arr.dtype}, expected ({rows}, {width}) {np.dtype(dtype)}")
    return arr


class Shard:
    def __init__(self, root: Path, meta: dict, full_dim: int, index_dim: int, has_text: bool, deep: bool = False):
        self.number, self.count, self.id_start = meta["number"], meta["count"], meta["id_start"]
        folder = root / layout.SHARDS / layout.shard_name(self.number)
        if not folder.is_dir():
            raise IndexFormatError(f"shard folder {folder} is missing; restore it or rebuild the index")
        check_files(folder, meta["files"], deep, whole=(layout.INDEX_FILE, layout.IDS_FILE))
        try:
            self.index = faiss.read_index(str(folder / layout.INDEX_FILE))
            ids = pq.read_table(folder / layout.IDS_FILE).column("id").combine_chunks()
        except Exception as e:  # noqa: BLE001 - faiss and Arrow raise many kinds
            raise _damaged(folder, f"cannot be read ({type(e).__name__}: {e})") from None
        if self.index.ntotal != self.count or len(ids) != self.count:
            raise _damaged(folder, f"holds {self.index.ntotal} codes and {len(ids)} ids, expected {self.count}")
        self.ids = ids.to_numpy() if pa.types.is_integer(ids.type) else ids
        self.short = open_store(folder / layout.SHORT_FILE, self.count, index_dim, np.int8)
        self.full = open_store(folder / layout.FULL_FILE, self.count, full_dim, np.float16)
        advise_random(self.short)
        advise_random(self.full)
        self.doc_offsets = self.doc_bytes = None
        if has_text:
            self.doc_offsets = np.load(folder / layout.DOC_OFFSETS, mmap_mode="r")
            if self.doc_offsets.shape != (self.count + 1,) or self.doc_offsets.dtype != np.int64:
                raise _damaged(folder / layout.DOC_OFFSETS, "has the wrong number or type of offsets")
            size = (folder / layout.DOC_BYTES).stat().st_size
            self.doc_bytes = np.memmap(folder / layout.DOC_BYTES, dtype=np.uint8, mode="r") if size else \
                np.zeros(0, np.uint8)

    def external_ids(self, local: np.ndarray) -> list:
        if isinstance(self.ids, np.ndarray):
            return self.ids[local].tolist()
        return self.ids.take(pa.array(local)).to_pylist()

    def texts(self, local: np.ndarray) -> list[str]:
        out = []
        for r in local:
            lo, hi = int(self.doc_offsets[r]), int(self.doc_offsets[r + 1])
            out.append(bytes(self.doc_bytes[lo:hi]).decode("utf-8", errors="replace"))
        return out
