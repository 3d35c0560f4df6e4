"""Gathering candidate rows from per-shard memory-mapped matrices by global row id."""
from __future__ import annotations

import mmap

import numpy as np

from matryoshka.core.errors import StoreDamaged

from .file_watch import FileWatch
from .row_reader import PAGE, damaged, extents
from .row_view import row_view


def check_mapped(arr) -> None:
    """Refuse to read a memory-mapped store whose file became shorter than the map (a read past its end would
    kill the process with SIGBUS). One fstat of the map's own file; plain arrays pass."""
    m = getattr(arr, "_mmap", None)
    if m is None or m.closed:
        return
    need = int(getattr(arr, "offset", 0)) + arr.nbytes
    have = m.size()  # fstat of the file the map was made from, whatever its name is now
    if have < need:
        raise damaged(getattr(arr, "filename", "a store file"), have, need)


def advise_random(arr: np.ndarray) -> None:
    """Tell the kernel not to read ahead on a memory map that is read at random rows."""
    m = getattr(arr, "_mmap", None)
    if m is not None and hasattr(mmap, "MADV_RANDOM"):
        m.madvise(mmap.MADV_RANDOM)


def read_stats(store: "RowStore") -> dict | None:
    """Device reads a store read from SSD has issued since it was opened (None for a mapped store)."""
    if store is None or store.readers is None:
        return None
    stats = [r.stats.to_dict() for r in store.readers]
    return {k: sum(s[k] for s in stats) for k in ("reads", "pages", "rows")}


class RowStore:
    """One logical (N, w) matrix made of shards; shard s holds global rows starts[s] .. starts[s] + len - 1."""

    def __init__(self, starts: np.ndarray, arrays: list[np.ndarray], width: int, dtype, readers: list | None = None,
                 slots: list | None = None):
        self.starts = np.asarray(starts, dtype=np.int64)
        self.arrays = arrays
        self.width, self.dtype = width, np.dtype(dtype)
        self.readers = readers  # row_reader.FileRows per shard when the store is read from SSD, not mapped
        # per shard, the slot of each row when the shard stores its rows in IVF-list order (None: row order)
        self.slots = slots if slots is not None and any(s is not None for s in slots) else None
        # shards of one size from row 0 (a build's): a row's shard is a division, not a search
        sizes = np.diff(self.starts)
        self.step = int(sizes[0]) if len(sizes) and self.starts[0] == 0 and (sizes == sizes[0]).all() else None
        # every shard's rows in one array (`row_view`): a batch's candidates are one gather, however many shards;
        # read from SSD too when the readers read through maps (hints, then the copy), whose maps are placed
        maps = arrays if readers is None else [r.mapped_rows() for r in readers] \
            if all(r.method in ("willneed", "mmap") for r in readers) else None
        self.view = row_view(maps, width, dtype) if maps is not None and self.slots is None else None
        if self.view is not None:
            self.shift = self.view.first - self.starts  # a global row's place in the view: row + shift[its shard]
            self.end = self.view.first + np.array([len(a) for a in maps], np.int64)  # past each shard's last
            # files that can shrink under a map (SIGBUS when read past their end): checked when the rows touch them
            self.mapped = np.array([i for i, a in enumerate(arrays) if readers is not None
                                    or getattr(a, "_mmap", None) is not None], np.int64)
            # their sizes checked once per change to a watched file, not once per file a gather touches
            self.watch = FileWatch.make([readers[i].name if readers is not None else getattr(arrays[i], "filename",
                                                                                             None)
                                         for i in self.mapped]) if len(self.mapped) else None
            if self.watch is not None:
                self.watch.mark(-1)  # the first gather checks every file

    def shard_of(self, rows: np.ndarray) -> np.ndarray:
        """The shard (position) of each global row, as the smallest integers that hold it (numpy sorts 16-bit
        keys by radix)."""
        s = np.minimum(rows // self.step, len(self.starts) - 1) if self.step else \
            np.searchsorted(self.starts, rows, side="right") - 1
        return s.astype(np.int16 if len(self.starts) < 2**15 else np.int32)

    def take(self, gids: np.ndarray) -> np.ndarray:
        """Rows for global ids given in ascending order, read shard by shard (so the reads go forward)."""
        if self.view is not None:
            return self._from_view(gids)
        cuts = np.searchsorted(gids, self.starts[1:])
        slots = self.slots or [None] * len(self.starts)
        if self.readers is not None:  # every shard's reads in flight before any is waited for
            started, parts, error = [], [], None
            try:
                for r, s, rows, sl in zip(self.readers, self.starts, np.split(gids, cuts), slots):
                    if len(rows):
                        started.append(_start(r, rows - s, sl))
            except BaseException as e:  # noqa: BLE001 - raised once the reads already issued have ended
                error = e
            for finish in started:  # every read waited for, failed or not, before the search returns
                try:
                    parts.append(finish())
                except BaseException as e:  # noqa: BLE001 - the first error is the one raised
                    error = error or e
            if error is not None:
                raise error
        else:
            parts = [_take(a, rows - s if sl is None else sl[rows - s]) for a, s, rows, sl
                     in zip(self.arrays, self.starts, np.split(gids, cuts), slots) if len(rows)]
        if not parts:  # no rows asked for, or an index with no shards (every document deleted and compacted)
            return np.zeros((len(gids), self.width), self.dtype)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def candidates(self, cand: np.ndarray, in_order: bool = True) -> np.ndarray:
        """(nq, k) global ids -> (nq, k, width) rows; -1 entries get an arbitrary row.

        `in_order` reads the rows in ascending order (a forward sweep, for stores that live on disk); without
        it each row is read where it is asked for, which skips the sort: on page-cached int8 rows of a 1M
        index the sort cost more than the reads."""
        flat = np.where(cand >= 0, cand, self.starts[0] if len(self.starts) else -1).ravel()
        if self.readers is not None and len(self.starts):
            # every distinct row read once, all of a batch's reads in flight together
            rows, inverse = np.unique(flat, return_inverse=True)
            out = self.take(rows)[inverse]
        elif self.view is not None:
            out = self._from_view(flat, sort=in_order)
        elif in_order or self.slots is not None:
            order = np.argsort(flat, kind="stable")
            out = np.empty((len(flat), self.width), dtype=self.dtype)
            out[order] = self.take(flat[order])
        elif len(self.arrays) == 1:
            out = _take(self.arrays[0], flat - self.starts[0])
        else:  # grouped by shard once: one take per shard the candidates touch
            out = np.zeros((len(flat), self.width), dtype=self.dtype)
            shard = self.shard_of(flat)
            order = np.argsort(shard, kind="stable")
            bounds = np.searchsorted(shard[order], np.arange(len(self.arrays) + 1))
            for s in np.flatnonzero(np.diff(bounds)):
                at = order[bounds[s]:bounds[s + 1]]
                out[at] = _take(self.arrays[s], flat[at] - self.starts[s])
        return out.reshape(*cand.shape, self.width)

    def _from_view(self, rows: np.ndarray, sort: bool = False) -> np.ndarray:
        """Rows by global id, gathered from the view in one take (`sort`: in ascending order, a forward sweep)."""
        shard = self.shard_of(rows)
        at = rows + self.shift[shard]
        if len(rows) and ((rows < self.starts[0]) | (at >= self.end[shard])).any():  # a gap holds no pages: no reads
            raise IndexError("a row asked for is in none of this store's shards")
        if len(self.mapped):  # files mapped: every one the rows touch must hold them whole (else SIGBUS)
            self._check(shard)
        if self.readers is not None:  # from SSD (rows sorted): every page asked for at once, then the copy
            first, pages, _ = extents(at, self.view.offset, self.width * self.dtype.itemsize)
            self._count(shard, first, pages, at)
            if self.readers[0].method == "willneed":
                self.view.will_need(first, pages)
        if not sort:
            return np.take(self.view.array, at, axis=0)
        order = np.argsort(at, kind="stable")
        out = np.empty((len(rows), self.width), dtype=self.dtype)
        out[order] = np.take(self.view.array, at[order], axis=0)
        return out


    def _check(self, shard: np.ndarray) -> None:
        """Refuse a gather that touches a file shorter than its rows. Under a watch, every file is checked after a
        change to any watched file, and none otherwise; a file found short ends the watch (each gather then checks
        the files it touches, so that gathers from the other shards still answer)."""
        if self.watch is not None and self.watch.changed():
            before = self.watch.now()
            if all(self._holds(s) for s in self.mapped):
                self.watch.mark(before)
            else:
                self.watch = None
        if self.watch is None:
            for s in self.mapped[np.bincount(shard, minlength=len(self.arrays))[self.mapped] > 0]:
                self.readers[s].check() if self.readers is not None else check_mapped(self.arrays[s])

    def _holds(self, s: int) -> bool:
        try:
            self.readers[s].check() if self.readers is not None else check_mapped(self.arrays[s])
        except StoreDamaged:
            return False
        return True

    def _count(self, shard: np.ndarray, first: np.ndarray, pages: np.ndarray, at: np.ndarray) -> None:
        """Add the reads (extents), pages and rows of one gather to each shard reader's statistics."""
        n = len(self.readers)
        page = (self.view.offset + at * (self.width * self.dtype.itemsize)) // PAGE  # where each row starts
        of = shard[np.searchsorted(page, first)]  # the shard of each extent's first row
        reads, npages = np.bincount(of, minlength=n), np.bincount(of, pages, minlength=n)
        rows = np.bincount(shard, minlength=n)
        for s in np.flatnonzero(rows):
            self.readers[s].stats.add(int(reads[s]), int(npages[s]), int(rows[s]))


def _take(arr: np.ndarray, local: np.ndarray) -> np.ndarray:
    """Rows of one shard's mapped (or in-RAM) store, its file checked whole first."""
    check_mapped(arr)
    return np.take(np.asarray(arr), local, axis=0)


def _start(reader, local: np.ndarray, slots: np.ndarray | None):
    """Start reading rows of one shard from SSD: their slots in ascending order (forward reads); what the returned
    function gives back is in row order."""
    if slots is None:
        return reader.start(local)
    where = slots[local].astype(np.int64)
    order = np.argsort(where, kind="stable")
    finish = reader.start(where[order])

    def in_row_order() -> np.ndarray:
        got = finish()
        out = np.empty_like(got)
        out[order] = got
        return out
    return in_row_order
