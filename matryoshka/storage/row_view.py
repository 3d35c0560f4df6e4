"""One array over every shard's rows, so that a batch's candidates in any number of shards are one `np.take`.

Each shard's store is a shared mapping of its file (memory-mapped, or the map an SSD reader hints and copies
through). Linux's `mremap` with an old size of 0 maps the same pages a second time at a chosen address, copying
nothing; the shards' maps are placed side by side in one reserved address range, each at a row boundary of the
array over the range. Elsewhere (no `mremap`), or for stores that are not shared maps (a store read into RAM is
private memory, for its huge pages), `row_view` returns None and the caller gathers shard by shard.
"""
from __future__ import annotations

import ctypes
import mmap
import sys

import numpy as np

PAGE = mmap.PAGESIZE
_MREMAP_MAYMOVE, _MREMAP_FIXED, _MAP_NORESERVE = 1, 2, 0x4000
_FAILED = ctypes.c_void_p(-1).value
_libc = None


def _c():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.mmap.restype = _libc.mremap.restype = ctypes.c_void_p
        _libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                               ctypes.c_long]
        _libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
        _libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        _libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return _libc


def _shared_map(arr: np.ndarray) -> mmap.mmap | None:
    """The shared mapping an array's rows live in: an `np.memmap`'s map, or the map under `np.frombuffer(map)`."""
    base = arr
    while base is not None and not isinstance(base, mmap.mmap):
        base = base.obj if isinstance(base, memoryview) else \
            getattr(base, "_mmap", None) or getattr(base, "base", None)
    return None if base is None or base.closed else base


class _Range:
    """A reserved address range, unmapped when the last array over it is gone."""

    def __init__(self, size: int):
        self.size = size
        self.addr = None
        addr = _c().mmap(None, size, 0,  # PROT_NONE
                         mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE, -1, 0)
        if addr in (None, _FAILED):
            raise OSError(ctypes.get_errno(), "cannot reserve the address range")
        self.addr = addr

    def place(self, src: int, length: int, at: int) -> None:
        """Map the shared pages at `src` again at offset `at` of the range."""
        got = _c().mremap(src, 0, length, _MREMAP_MAYMOVE | _MREMAP_FIXED, self.addr + at)
        if got in (None, _FAILED):
            raise OSError(ctypes.get_errno(), "mremap cannot place a shard's map")

    def __del__(self):
        if self.addr is not None:
            _c().munmap(self.addr, self.size)


class RowView:
    """`array`: (rows, width) over every shard's store; shard s's row r is `array[first[s] + r]`. Its row 0
    starts `offset` bytes past a page boundary."""

    def __init__(self, array: np.ndarray, first: np.ndarray, offset: int):
        self.array, self.first, self.offset = array, first, offset

    @property
    def base(self) -> int:
        """The address of the page holding row 0."""
        return self.array.__array_interface__["data"][0] - self.offset

    def drop(self) -> None:
        """Unmap the pages this view has touched (what it maps stays where it is: a file, or shared memory), so that
        evicting a file from the page cache is not kept from it by this view's maps."""
        _c().madvise(self.base, self.offset + self.array.nbytes, mmap.MADV_DONTNEED)

    def will_need(self, first_page: np.ndarray, pages: np.ndarray) -> None:
        """Ask the kernel to read these pages (counted from the page holding row 0) now, all at once."""
        base, madvise = self.base, _c().madvise
        for p, n in zip((base + first_page * PAGE).tolist(), (pages * PAGE).tolist()):
            madvise(p, n, mmap.MADV_WILLNEED)


def row_view(arrays: list[np.ndarray], width: int, dtype) -> RowView | None:
    """The shards' stores side by side in one array (see the module's note), or None where that cannot be done."""
    dtype = np.dtype(dtype)
    row_bytes = width * dtype.itemsize
    if not sys.platform.startswith("linux") or not row_bytes or len(arrays) < 2:
        return None
    parts = []  # (map address, the array's offset in it, bytes to map) per shard; None for an empty shard
    for a in arrays:
        if not a.size:
            parts.append(None)
            continue
        m = _shared_map(a)
        if m is None or a.dtype != dtype or a.shape[1:] != (width,) or not a.flags.c_contiguous:
            return None
        start = np.frombuffer(m, np.uint8).__array_interface__["data"][0]
        delta = a.__array_interface__["data"][0] - start
        parts.append((start, delta, -(-(delta + a.nbytes) // PAGE) * PAGE))
    deltas = {p[1] % PAGE for p in parts if p is not None}
    if len(deltas) != 1:
        return None
    delta = deltas.pop()  # every map starts `delta` bytes before its rows: place them all alike
    step = PAGE // np.gcd(row_bytes, PAGE)  # rows between two row boundaries that fall `delta` past a page start
    first, at = np.zeros(len(arrays), np.int64), 0
    for i, (a, p) in enumerate(zip(arrays, parts)):
        if p is not None:  # the next map starts on the first row boundary past this map's last byte
            first[i] = at
            at = -(-((at + len(a)) * row_bytes + delta) // (step * row_bytes)) * step
    if not at:
        return None
    size = at * row_bytes + 2 * PAGE
    try:
        rng = _Range(size)
        for f, p in zip(first, parts):
            if p is not None:
                rng.place(p[0] + p[1] - delta, p[2] - (p[1] - delta), int(f) * row_bytes)
    except OSError:
        return None
    _c().madvise(rng.addr, size, mmap.MADV_RANDOM)  # rows are read at random: no read-around on a fault
    buf = (ctypes.c_char * (at * row_bytes)).from_address(rng.addr + delta)
    buf.owner = rng  # the range lives as long as any array over it
    return RowView(np.frombuffer(buf, dtype).reshape(at, width), first, delta)
