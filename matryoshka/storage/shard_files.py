"""One shard opened for search: its IVF index in RAM, its stores memory-mapped, its files checked."""
from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from matryoshka.core import layout
from matryoshka.core.errors import IndexFormatError

from .row_store import advise_random


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


def read_faiss(path: Path) -> faiss.Index:
    """Read a faiss index without the L2 IVF-PQ precomputed table: faiss would rebuild it for every shard at
    nlist * M * 256 floats (268 MB at nlist 8192, PQ32; 8x the codes of a 1M-vector shard) to save a few
    percent of first-pass time."""
    return faiss.read_index(str(path), faiss.IO_FLAG_SKIP_PRECOMPUTE_TABLE)


def open_store(path: Path, rows: int, width: int | None, dtype) -> np.ndarray:
    """Memory-map a .npy store after checking its header against what the manifest promises."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - a damaged header raises ValueError, EOFError, SyntaxError, ...
        raise _damaged(path, f"not a readable .npy file ({type(e).__name__}: {e})") from None
    shape = (rows, width) if width is not None else (rows,)
    if not isinstance(arr, np.ndarray) or arr.shape != shape or arr.dtype != np.dtype(dtype):
        raise _damaged(path, f"holds {getattr(arr, 'shape', '?')} {getattr(arr, 'dtype', '?')}, expected {shape} "
                             f"{np.dtype(dtype)}")
    return arr


def _id_map(path: Path, count: int, row_start: int | None) -> np.ndarray | pa.Array | None:
    """A shard's external ids: a numpy array (integer ids) or an Arrow array (strings) held in RAM; None when
    the build recorded that the ids are the row numbers from `row_start`, which the Parquet statistics must
    then confirm (the file's checksum was checked already)."""
    if row_start is not None:
        md = pq.ParquetFile(path).metadata
        stats = [md.row_group(g).column(0).statistics for g in range(md.num_row_groups)]
        bounds = [(s.min, s.max) if s is not None and s.has_min_max else None for s in stats]
        span = (min(b[0] for b in bounds), max(b[1] for b in bounds)) if bounds and None not in bounds else None
        if md.num_rows != count or (count and span != (row_start, row_start + count - 1)):
            raise _damaged(path, f"the manifest says its ids are the rows {row_start}..{row_start + count - 1}, "
                                 "its statistics disagree")
        return None
    ids = pq.read_table(path).column("id").combine_chunks()
    if len(ids) != count:
        raise _damaged(path, f"holds {len(ids)} ids, expected {count}")
    return ids.to_numpy() if pa.types.is_integer(ids.type) else ids


class Shard:
    def __init__(self, root: Path, meta: dict, full_dim: int, index_dim: int, has_text: bool, deep: bool = False):
        self.number, self.count, self.id_start = meta["number"], meta["count"], meta["id_start"]
        folder = root / layout.SHARDS / layout.shard_name(self.number)
        if not folder.is_dir():
            raise IndexFormatError(f"shard folder {folder} is missing; restore it or rebuild the index")
        check_files(folder, meta["files"], deep, whole=(layout.INDEX_FILE, layout.IDS_FILE))
        try:
            self.index = read_faiss(folder / layout.INDEX_FILE)
            self.ids = _id_map(folder / layout.IDS_FILE, self.count, self.id_start if meta.get("ids_are_rows")
                               else None)
        except IndexFormatError:
            raise
        except Exception as e:  # noqa: BLE001 - faiss and Arrow raise many kinds
            raise _damaged(folder, f"cannot be read ({type(e).__name__}: {e})") from None
        if self.index.ntotal != self.count:
            raise _damaged(folder, f"holds {self.index.ntotal} codes, expected {self.count}")
        self.short = open_store(folder / layout.SHORT_FILE, self.count, index_dim, np.int8)
        self.full = open_store(folder / layout.FULL_FILE, self.count, full_dim, np.float16)
        advise_random(self.short)
        advise_random(self.full)
        self.doc_offsets = self.doc_bytes = None
        if has_text:
            self.doc_offsets = open_store(folder / layout.DOC_OFFSETS, self.count + 1, None, np.int64)
            size = (folder / layout.DOC_BYTES).stat().st_size
            self.doc_bytes = np.memmap(folder / layout.DOC_BYTES, dtype=np.uint8, mode="r") if size else \
                np.zeros(0, np.uint8)

    def external_ids(self, local: np.ndarray) -> list:
        if self.ids is None:
            return (np.asarray(local, np.int64) + self.id_start).tolist()
        if isinstance(self.ids, np.ndarray):
            return self.ids[local].tolist()
        return self.ids.take(pa.array(local)).to_pylist()

    def texts(self, local: np.ndarray) -> list[str]:
        out = []
        for r in local:
            lo, hi = int(self.doc_offsets[r]), int(self.doc_offsets[r + 1])
            out.append(bytes(self.doc_bytes[lo:hi]).decode("utf-8", errors="replace"))
        return out
