"""One shard opened for search, through a pinned folder: its IVF index in RAM, its stores memory-mapped, its
files checked."""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from matryoshka.core import layout
from matryoshka.core.codec import Codec
from matryoshka.core.errors import IndexFormatError, InputError

from .attribute_schema import padded
from .manifest import LEXICAL_DIR, LEXICAL_META, Manifest, ShardRecord
from .pinned import PinnedFolder
from .row_reader import FileRows, drop_cached
from .row_store import advise_random, check_mapped
from .tiers import RAM, SSD, SsdReads
from .tombstones import dead_rows


def _damaged(path: Path, what: str) -> IndexFormatError:
    return IndexFormatError(f"{path}: {what}; the shard is damaged: rebuild it (re-run the build into a new "
                            "folder) or restore it from a copy")


def check_file(folder: PinnedFolder, name: str, rec: dict, deep: bool) -> None:
    """The file's size, and its SHA-256 when `deep` (read in chunks), against its manifest record."""
    st = folder.stat(name)
    if st is None:
        raise _damaged(folder.path(name), "file is missing")
    if st.st_size != rec["bytes"]:
        raise _damaged(folder.path(name), f"size is {st.st_size} bytes, the manifest says {rec['bytes']} (truncated?)")
    if deep:
        with folder.open(name) as f:
            if layout.sha256_stream(f) != rec["sha256"]:
                raise _damaged(folder.path(name), "checksum does not match the manifest (bit rot or a partial copy)")


def read_checked(folder: PinnedFolder, name: str, rec: dict) -> bytes:
    """A file read whole, once its size and SHA-256 match its manifest record: what is checked is what is used."""
    try:
        data = folder.read_bytes(name)
    except FileNotFoundError:
        raise _damaged(folder.path(name), "file is missing") from None
    if len(data) != rec["bytes"]:
        raise _damaged(folder.path(name), f"size is {len(data)} bytes, the manifest says {rec['bytes']} (truncated?)")
    if hashlib.sha256(data).hexdigest() != rec["sha256"]:
        raise _damaged(folder.path(name), "checksum does not match the manifest (bit rot or a partial copy)")
    return data


def faiss_from_bytes(data: bytes) -> faiss.Index:
    """A faiss index from its file's bytes, without the L2 IVF-PQ precomputed table: faiss would rebuild it for
    every shard at nlist * M * 256 floats (268 MB at nlist 8192, PQ32; 8x the codes of a 1M-vector shard) to
    save a few percent of first-pass time."""
    reader = faiss.VectorIOReader()
    faiss.copy_array_to_vector(np.frombuffer(data, dtype=np.uint8), reader.data)
    return faiss.read_index(reader, faiss.IO_FLAG_SKIP_PRECOMPUTE_TABLE)


def read_shared(folder: PinnedFolder, manifest: Manifest) -> tuple[Codec, faiss.Index]:
    """The index's transform and int8 codec, and its trained IVF (centroids and codebooks, no vectors)."""
    codec = Codec.load(io.BytesIO(read_checked(folder, layout.TRANSFORM, manifest.transform_file)))
    return codec, faiss_from_bytes(read_checked(folder, layout.TRAINED, manifest.trained))


def read_dead(folder: PinnedFolder, meta: ShardRecord) -> np.ndarray | None:
    """A shard's mask of deleted rows (see `tombstones`), or None when it has none."""
    rec = meta.dead
    if not rec:
        return None
    name = f"{layout.shard_dir(meta.number)}/{rec['file']}"
    return dead_rows(read_checked(folder, name, rec), meta.count, rec, folder.path(name))


def open_store(folder: PinnedFolder, name: str, rows: int, width: int | None, dtype) -> np.ndarray:
    """Memory-map a .npy store, through the pinned folder, after checking its header against the manifest."""
    path, shape = folder.path(name), (rows, width) if width is not None else (rows,)
    try:
        f = folder.open(name)
    except FileNotFoundError:
        raise _damaged(path, "file is missing") from None
    with f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            got, fortran, got_dtype = read_header(f)
        except Exception as e:  # noqa: BLE001 - a damaged header raises ValueError, EOFError, SyntaxError, ...
            raise _damaged(path, f"not a readable .npy file ({type(e).__name__}: {e})") from None
        if got != shape or got_dtype != np.dtype(dtype) or (fortran and len(shape) > 1):
            raise _damaged(path, f"holds {got} {got_dtype}{' (Fortran order)' if fortran else ''}, expected "
                                 f"{shape} {np.dtype(dtype)}")
        if not np.prod(shape):
            return np.zeros(shape, dtype)
        arr = np.memmap(f, dtype=dtype, mode="r", offset=f.tell(), shape=shape)
        arr.filename = str(path)  # opened through the pinned folder's descriptor: named for errors
        return arr


def _id_map(data: bytes, path: Path, count: int, row_start: int | None) -> np.ndarray | pa.Array | None:
    """A shard's external ids: a numpy array (integer ids) or an Arrow array (strings) held in RAM; None when
    the build recorded that the ids are the row numbers from `row_start`, which the Parquet statistics must
    then confirm (the file's checksum was checked already)."""
    if row_start is not None:
        md = pq.ParquetFile(pa.BufferReader(data)).metadata
        stats = [md.row_group(g).column(0).statistics for g in range(md.num_row_groups)]
        bounds = [(s.min, s.max) if s is not None and s.has_min_max else None for s in stats]
        span = (min(b[0] for b in bounds), max(b[1] for b in bounds)) if bounds and None not in bounds else None
        if md.num_rows != count or (count and span != (row_start, row_start + count - 1)):
            raise _damaged(path, f"the manifest says its ids are the rows {row_start}..{row_start + count - 1}, "
                                 "its statistics disagree")
        return None
    ids = pq.read_table(pa.BufferReader(data)).column("id").combine_chunks()
    if len(ids) != count:
        raise _damaged(path, f"holds {len(ids)} ids, expected {count}")
    return ids.to_numpy() if pa.types.is_integer(ids.type) else ids


def _load(root: PinnedFolder, name: str, arr: np.ndarray) -> np.ndarray:
    """A mapped store's rows read into memory in large sequential reads (its map is advised random: copying
    through it would fault one page at a time), then its pages dropped from the page cache (they would count
    twice)."""
    if not isinstance(arr, np.memmap) or not arr.nbytes:
        return np.array(arr)
    # private memory, not a shared map `row_view` could place: random rows of a large store gather 1.4x faster
    # from the transparent huge pages numpy asks for, which shared memory does not get (shmem_enabled=never)
    out = np.empty(arr.shape, arr.dtype)
    view, got = memoryview(out.reshape(-1)).cast("B"), 0
    with root.open(name) as f:
        f.seek(arr.offset)
        while got < len(view):
            n = f.readinto(view[got:])
            if not n:
                raise _damaged(root.path(name), f"ends {len(view) - got} bytes early")
            got += n
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return out


class Shard:
    def __init__(self, root: PinnedFolder, meta: ShardRecord, full_dim: int, index_dim: int, has_text: bool,
                 deep: bool = False, attributes: pa.Schema | None = None, codes: bool = True):
        """`codes=False` leaves the faiss codes unread (`index` None): a search that already holds them in its
        merged first pass (`retrieval.first_pass`) reads them again only with `read_codes`."""
        self.meta, self.schema = meta, attributes
        self.number, self.count, self.id_start = meta.number, meta.count, meta.id_start
        folder = layout.shard_dir(self.number)
        if not root.is_dir(folder):
            raise IndexFormatError(f"shard folder {root.path(folder)} is missing; restore it or rebuild the index")
        files = meta.files
        for name in files:
            check_file(root, f"{folder}/{name}", files[name],
                       deep and name not in (layout.INDEX_FILE, layout.IDS_FILE, layout.ATTR_FILE))
        self.index = self.read_codes(root) if codes else None
        ids_bytes = read_checked(root, f"{folder}/{layout.IDS_FILE}", files[layout.IDS_FILE])
        try:
            self.ids = _id_map(ids_bytes, root.path(f"{folder}/{layout.IDS_FILE}"), self.count,
                               self.id_start if meta.ids_are_rows else None)
        except IndexFormatError:
            raise
        except Exception as e:  # noqa: BLE001 - Arrow raises many kinds
            raise _damaged(root.path(folder), f"cannot be read ({type(e).__name__}: {e})") from None
        del ids_bytes
        self.dead = read_dead(root, meta)  # bool mask of deleted rows, when there are any
        self.attrs = None  # attribute columns of the rows (filtered search), when the index stores any
        if layout.ATTR_FILE in files:
            self.attrs = pq.read_table(pa.BufferReader(read_checked(root, f"{folder}/{layout.ATTR_FILE}",
                                                                    files[layout.ATTR_FILE])))
        if attributes is not None:  # the index's columns: some may be newer than this shard (null here)
            self.attrs = padded(self.attrs, attributes, self.count)
        layout.crash_point("open-stores", self.number)
        self.slots = None  # with the stores in IVF-list order: the slot of each row in them
        if layout.SLOTS_FILE in files:
            self.slots = np.load(io.BytesIO(read_checked(root, f"{folder}/{layout.SLOTS_FILE}",
                                                         files[layout.SLOTS_FILE])))
            if self.slots.shape != (self.count,):
                raise _damaged(root.path(folder), f"holds {self.slots.shape} slots, expected {self.count}")
        self.short = open_store(root, f"{folder}/{layout.SHORT_FILE}", self.count, index_dim, np.int8)
        self.full = open_store(root, f"{folder}/{layout.FULL_FILE}", self.count, full_dim, np.float16)
        advise_random(self.short)
        advise_random(self.full)
        self.doc_offsets = self.doc_bytes = None
        if has_text:
            self.doc_offsets = open_store(root, f"{folder}/{layout.DOC_OFFSETS}", self.count + 1, None, np.int64)
            try:
                f = root.open(f"{folder}/{layout.DOC_BYTES}")
            except FileNotFoundError:
                raise _damaged(root.path(f"{folder}/{layout.DOC_BYTES}"), "file is missing") from None
            with f:
                size = os.fstat(f.fileno()).st_size
                self.doc_bytes = np.memmap(f, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
                if size:
                    self.doc_bytes.filename = str(root.path(f"{folder}/{layout.DOC_BYTES}"))
        self._lexical_dir = root.path(f"{folder}/{LEXICAL_DIR}") if LEXICAL_META in files else None
        self._lexical = None
        self.readers: dict = {}  # store -> row_reader.FileRows, for stores read from SSD
        self._paths = {n: root.path(f"{folder}/{n}") for n in (layout.SHORT_FILE, layout.FULL_FILE,
                                                                layout.DOC_OFFSETS, layout.DOC_BYTES)}

    @property
    def codes_key(self) -> tuple:
        """What identifies this shard's faiss codes: equal keys, equal codes (the file's checksum included)."""
        return self.number, self.id_start, self.count, self.meta.files[layout.INDEX_FILE]["sha256"]

    def read_codes(self, root: PinnedFolder) -> faiss.Index:
        """The shard's faiss index (its IVF-PQ codes, global row ids), read and checked against the manifest."""
        folder = layout.shard_dir(self.number)
        data = read_checked(root, f"{folder}/{layout.INDEX_FILE}", self.meta.files[layout.INDEX_FILE])
        try:
            index = faiss_from_bytes(data)
        except Exception as e:  # noqa: BLE001 - faiss raises many kinds
            raise _damaged(root.path(folder), f"cannot be read ({type(e).__name__}: {e})") from None
        if index.ntotal != self.count:
            raise _damaged(root.path(folder), f"holds {index.ntotal} codes, expected {self.count}")
        return index

    def held_bytes(self) -> int:
        """Bytes this shard holds in RAM beside its codes: external ids, attribute columns, the deleted-row mask, the
        slots of a list-ordered shard."""
        return sum(int(getattr(a, "nbytes", 0)) for a in (self.ids, self.attrs, self.dead, self.slots)
                   if a is not None)

    def vectors(self, attr: str, local: np.ndarray) -> np.ndarray:
        """Rows of the "short" (int8) or "full" store by local row, wherever the store's order put them."""
        check_mapped(getattr(self, attr))
        return np.asarray(getattr(self, attr)[local if self.slots is None else self.slots[local]])

    def place(self, root: PinnedFolder, tiers: dict, ssd: SsdReads) -> None:
        """Read the stores whose tier is RAM into memory; open readers for the stores on SSD (`storage.tiers`)."""
        folder = layout.shard_dir(self.number)
        for store, attr, name in (("int8", "short", layout.SHORT_FILE), ("full", "full", layout.FULL_FILE)):
            arr = getattr(self, attr)
            if tiers.get(store) == RAM:
                setattr(self, attr, _load(root, f"{folder}/{name}", arr))
            elif tiers.get(store) == SSD:
                with root.open(f"{folder}/{name}") as f:
                    self.readers[store] = FileRows(f.fileno(), getattr(arr, "offset", 0), self.count, arr.shape[1],
                                                   arr.dtype, method=ssd.method, depth=ssd.depth, direct=ssd.direct,
                                                   name=root.path(f"{folder}/{name}"))
        if tiers.get("texts") == RAM and self.doc_offsets is not None:
            self.doc_offsets = _load(root, f"{folder}/{layout.DOC_OFFSETS}", self.doc_offsets)
            self.doc_bytes = _load(root, f"{folder}/{layout.DOC_BYTES}", self.doc_bytes)

    def drop_page_cache(self) -> None:
        """Make the stores that are not in RAM cold again: their pages leave this process's maps and the page
        cache, as if the index had just been opened on a machine whose memory they do not fit (for measuring)."""
        arrays = {layout.SHORT_FILE: self.short, layout.FULL_FILE: self.full, layout.DOC_OFFSETS: self.doc_offsets,
                  layout.DOC_BYTES: self.doc_bytes}
        for name, arr in arrays.items():
            if arr is not None:
                try:
                    drop_cached(arr, self._paths[name])
                except FileNotFoundError:  # replaced by a newer generation: nothing of it is read any more
                    pass
        for r in self.readers.values():
            r.drop_cached()

    def close(self) -> None:
        for r in self.readers.values():
            r.close()
        self.readers = {}

    def external_ids(self, local: np.ndarray) -> list:
        if self.ids is None:
            return (np.asarray(local, np.int64) + self.id_start).tolist()
        if isinstance(self.ids, np.ndarray):
            return self.ids[local].tolist()
        return self.ids.take(pa.array(local)).to_pylist()

    def lexical_index(self):
        """The shard's BM25 index (`storage.lexical.LexicalIndex`), opened on first use."""
        if self._lexical_dir is None:
            raise InputError("this index has no lexical index; build it with lexical=True (--lexical) to search "
                             "with mode='lexical' or 'hybrid'")
        if self._lexical is None:
            from .lexical import LexicalIndex
            self._lexical = LexicalIndex(self._lexical_dir, None if self.dead is None else np.flatnonzero(self.dead))
        return self._lexical

    def find(self, ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(positions in `ids`, local rows) of the live rows whose external id is among `ids` (of the index's
        id type)."""
        if self.ids is None:  # integer ids that are the rows' global numbers
            local = np.asarray(ids.to_numpy(zero_copy_only=False), np.int64) - self.id_start
            pos = np.flatnonzero((local >= 0) & (local < self.count))
            local = local[pos]
        else:
            found = pc.index_in(pa.array(self.ids) if isinstance(self.ids, np.ndarray) else self.ids, value_set=ids)
            local = np.flatnonzero(found.is_valid().to_numpy(zero_copy_only=False))
            pos = found.take(pa.array(local)).to_numpy(zero_copy_only=False).astype(np.int64)
        if self.dead is not None:
            keep = ~self.dead[local]
            pos, local = pos[keep], local[keep]
        return pos, local

    def attributes(self, local: np.ndarray) -> list[dict]:
        """The attribute values of local rows, one dict each, without the columns that are null for the row."""
        if self.attrs is None:
            return [{} for _ in local]
        return [{k: v for k, v in row.items() if v is not None} for row in self.attrs.take(pa.array(local)).to_pylist()]

    def texts(self, local: np.ndarray) -> list[str]:
        check_mapped(self.doc_offsets)
        check_mapped(self.doc_bytes)
        out = []
        for r in local:
            lo, hi = int(self.doc_offsets[r]), int(self.doc_offsets[r + 1])
            out.append(bytes(self.doc_bytes[lo:hi]).decode("utf-8", errors="replace"))
        return out
