"""Reading scattered rows of a store file from the device, many reads in flight, instead of one page fault at a
time through a memory map.

A batch's candidate rows are sorted, rows that share a page (or sit on neighbouring pages) are coalesced into
one read of whole pages, and the reads are issued together: by a pool of threads calling `os.preadv` (which
releases the GIL), through io_uring (the `liburing` binding, when installed), or as `madvise(MADV_WILLNEED)`
hints on a memory map followed by the copy. `O_DIRECT` reads bypass the page cache, so that a store kept on
SSD takes no memory beyond the batch being read. The measurement that chose the default is in
`benchmarks/cold.py` and the README.
"""
from __future__ import annotations

import mmap
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from matryoshka.core.errors import StoreDamaged

PAGE = mmap.PAGESIZE
METHODS = ("pread", "uring", "willneed", "mmap")
DEFAULT_METHOD = "willneed"  # measured fastest: benchmarks/results/cold-gcide-120k.json
DEFAULT_DEPTH = 32  # reads in flight: the device's random-read rate flattens out near queue depth 32
_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(depth: int) -> ThreadPoolExecutor:
    with _pools_lock:
        if depth not in _pools:
            _pools[depth] = ThreadPoolExecutor(depth, thread_name_prefix="matryoshka-read")
        return _pools[depth]


_uring_ok: bool | None = None
# The real read path (`FileRows`, method "uring") over a file every machine has, checked against a plain read.
_URING_PROBE = """
import os, sys
import numpy as np
from matryoshka.storage import row_reader
row_reader._uring_ok = True  # this process is the check
f = row_reader.FileRows(sys.executable, 0, 8192, 1, np.uint8, method="uring", depth=2)
sys.exit(0 if f.read(np.arange(0, 8192, 7)).tobytes() == os.pread(f.fd, 8192, 0)[::7] else 1)
"""


def uring_available() -> bool:
    """Whether io_uring can be used here: the `liburing` binding imports, the kernel lets a ring be made (a sysctl
    or a seccomp filter can forbid it) and a read through it returns the file's bytes. Checked once, in a child
    process: a binding built for another CPU dies of an illegal instruction, which must not take this one."""
    global _uring_ok
    if _uring_ok is None:
        try:
            probe = subprocess.run([sys.executable, "-c", _URING_PROBE], capture_output=True, timeout=60,
                                   check=False)
            _uring_ok = probe.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            _uring_ok = False
    return _uring_ok


def damaged(path, have: int, need: int) -> StoreDamaged:
    """The error for a store file found shorter than the rows it must hold."""
    return StoreDamaged(f"{path} holds {have} bytes but its rows need {need}: it was truncated or replaced after the "
                        "index was opened; the search was refused rather than answered from missing rows. Restore "
                        "the file or rebuild the index (matryoshka verify INDEX lists what is damaged)")


@dataclass
class ReadStats:
    """Device reads issued for a store since it was opened: reads (coalesced extents), pages, rows asked."""

    reads: int = 0
    pages: int = 0
    rows: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, reads: int, pages: int, rows: int) -> None:
        with self.lock:
            self.reads, self.pages, self.rows = self.reads + reads, self.pages + pages, self.rows + rows

    def to_dict(self) -> dict:
        return {"reads": self.reads, "pages": self.pages, "rows": self.rows}


def extents(rows: np.ndarray, offset: int, row_bytes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For sorted rows of a file whose row r starts at byte offset + r * row_bytes: (first page, page count) of
    each coalesced read, and where each row starts in a buffer holding those reads back to back."""
    start = offset + rows.astype(np.int64) * row_bytes
    first, last = start // PAGE, (start + row_bytes - 1) // PAGE
    new = np.ones(len(rows), bool)
    new[1:] = first[1:] > last[:-1] + 1  # a row on the page after the previous row's last page joins its read
    heads = np.flatnonzero(new)
    ext_first = first[heads]
    ext_last = np.maximum.reduceat(last, heads) if len(heads) else last[:0]
    pages = ext_last - ext_first + 1
    buf_page = np.concatenate([[0], np.cumsum(pages)[:-1]]).astype(np.int64)
    ext_of_row = np.cumsum(new) - 1
    pos = (buf_page[ext_of_row] - ext_first[ext_of_row]) * PAGE + start
    return ext_first, pages, pos


class FileRows:
    """Rows of one (rows, width) matrix stored at byte `offset` of a file, read by position.

    `method`: "pread" (a thread pool, `depth` reads in flight), "uring" (io_uring, `depth` in flight),
    "willneed" (hints on a memory map, then the copy) or "mmap" (plain page faults, one after another).
    `direct` opens the file with O_DIRECT (pread only): nothing read enters the page cache."""

    def __init__(self, path: str | os.PathLike | int, offset: int, rows: int, width: int, dtype, *,
                 method: str = DEFAULT_METHOD, depth: int = DEFAULT_DEPTH, direct: bool = False,
                 name: str | os.PathLike | None = None):
        if method not in METHODS:
            raise ValueError(f"unknown read method {method!r}; choose one of {', '.join(METHODS)}")
        if direct and method != "pread":
            raise ValueError("direct (O_DIRECT) reads need method='pread'")
        if method == "uring" and not uring_available():
            raise ValueError("method='uring' cannot read here: it needs the liburing package built for this CPU, on "
                             "a kernel that allows io_uring; use method='willneed' or 'pread'")
        self.offset, self.count, self.width, self.dtype = offset, rows, width, np.dtype(dtype)
        self.row_bytes = width * self.dtype.itemsize
        self.method, self.depth, self.direct = method, depth, direct
        self.name = str(name if name is not None else path)  # for errors
        self.end = offset + rows * self.row_bytes  # the file's size must reach this for every row to be read
        flags = os.O_RDONLY | (os.O_DIRECT if direct else 0)
        self.fd = os.open(f"/proc/self/fd/{path}", flags) if isinstance(path, int) else os.open(path, flags)
        if not direct:
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_RANDOM)  # no read-ahead around each row
        self.stats = ReadStats()
        self._map = self._rows = None
        if method in ("willneed", "mmap") and rows:
            self._map = mmap.mmap(self.fd, 0, access=mmap.ACCESS_READ)
            self._map.madvise(mmap.MADV_RANDOM)
            self._rows = np.frombuffer(self._map, self.dtype, rows * width, offset).reshape(rows, width)

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The rows (sorted, local to this file) as a (len(rows), width) array."""
        return self.start(rows)()

    def start(self, rows: np.ndarray) -> Callable[[], np.ndarray]:
        """Issue the reads of `read(rows)` and return what waits for them and returns the rows: a store gathering
        from many shard files starts every file's reads before it waits for any."""
        rows = np.asarray(rows, np.int64)
        if not len(rows):
            return lambda: np.zeros((0, self.width), self.dtype)
        if rows[0] < 0 or rows[-1] >= self.count or (len(rows) > 1 and (np.diff(rows) < 0).any()):
            raise ValueError(f"rows must be sorted and within 0..{self.count - 1}")
        first, pages, pos = extents(rows, self.offset, self.row_bytes)
        self.stats.add(len(first), int(pages.sum()), len(rows))
        self.check()  # a map read past a truncated file's end is SIGBUS; a pread, zeros
        if self._rows is not None:
            if self.method == "willneed":
                for p, n in zip((first * PAGE).tolist(), (pages * PAGE).tolist()):
                    self._map.madvise(mmap.MADV_WILLNEED, p, min(n, len(self._map) - p))
            return lambda: self._rows[rows]
        buf = mmap.mmap(-1, int(pages.sum()) * PAGE)  # page-aligned, as O_DIRECT needs
        try:
            done = self._uring(buf, first, pages) if self.method == "uring" else self._pread(buf, first, pages)
        except BaseException:
            buf.close()
            raise

        def finish() -> np.ndarray:
            try:
                done()
                flat = np.frombuffer(buf, np.uint8)
                # a view with one window per byte position; indexing it copies each row's bytes once
                out = np.lib.stride_tricks.sliding_window_view(flat, self.row_bytes)[pos]
                del flat
                return out.view(self.dtype).reshape(len(rows), self.width)
            finally:
                buf.close()
        return finish

    def mapped_rows(self) -> np.ndarray:
        """The rows as an array over this reader's map (methods willneed and mmap; empty for a file of none)."""
        return self._rows if self._rows is not None else np.zeros((0, self.width), self.dtype)

    def check(self) -> None:
        """Refuse to read when the file no longer holds every row (truncated after it was opened)."""
        have = os.fstat(self.fd).st_size
        if have < self.end:
            raise damaged(self.name, have, self.end)

    def _short(self, start: int, got: int) -> None:
        """A read of the extent at `start` that ended after `got` bytes: fine only where the rows end."""
        if start + got < self.end:
            raise damaged(self.name, start + got, self.end)

    def _pread(self, buf: mmap.mmap, first: np.ndarray, pages: np.ndarray) -> Callable[[], None]:
        """Submit the reads to the pool; return what waits for every one of them."""
        view = memoryview(buf)
        offs = (first * PAGE).tolist()
        sizes = (pages * PAGE).tolist()
        at = np.concatenate([[0], np.cumsum(pages)[:-1]]).astype(np.int64) * PAGE
        at = at.tolist()
        fd = self.fd

        def run(part: range) -> None:
            for i in part:
                want, got = sizes[i], 0
                while got < want:  # a short read only at the end of the file
                    n = os.preadv(fd, [view[at[i] + got:at[i] + want]], offs[i] + got)
                    if n <= 0:
                        break
                    got += n
                if got < want:
                    self._short(offs[i], got)
        n = len(offs)
        workers = max(1, min(self.depth, n))
        step = -(-n // workers)
        futures = []

        def done() -> None:
            try:
                wait(futures)  # every read ends before the buffer can be freed, failed or not
                for f in futures:
                    f.result()
            finally:
                view.release()
        try:
            for lo in range(0, n, step):
                futures.append(_pool(self.depth).submit(run, range(lo, min(n, lo + step))))
        except BaseException:
            wait(futures)
            view.release()
            raise
        return done

    def _uring(self, buf: mmap.mmap, first: np.ndarray, pages: np.ndarray) -> Callable[[], None]:
        import liburing as L  # the binding reads into bytearrays only: one per read, copied into place
        offs, sizes = (first * PAGE).tolist(), (pages * PAGE).tolist()
        at = (np.concatenate([[0], np.cumsum(pages)[:-1]]).astype(np.int64) * PAGE).tolist()
        ring, cqe = L.Ring(), L.Cqe()
        L.io_uring_queue_init(self.depth, ring)
        bufs: dict[int, bytearray] = {}  # reads in flight: their buffers live until their completion arrives
        error, nxt = None, 0
        try:
            while bufs or (nxt < len(offs) and error is None):
                while error is None and nxt < len(offs) and len(bufs) < self.depth:
                    b = bufs[nxt] = bytearray(sizes[nxt])
                    sqe = L.io_uring_get_sqe(ring)
                    L.io_uring_prep_read(sqe, self.fd, b, offs[nxt])
                    L.io_uring_sqe_set_data64(sqe, nxt)
                    nxt += 1
                L.io_uring_submit(ring)
                L.io_uring_wait_cqe(ring, cqe)
                c = cqe[0]
                i, res = L.io_uring_cqe_get_data64(c), c.res
                L.io_uring_cqe_seen(ring, c)
                b = bufs.pop(i)
                if res < 0:
                    error = error or OSError(-res, os.strerror(-res))
                elif error is None:
                    buf[at[i]:at[i] + res] = b[:res]
                    if res < sizes[i]:
                        try:
                            self._short(offs[i], res)
                        except Exception as e:  # noqa: BLE001 - raised once every read in flight has ended
                            error = e
        finally:
            L.io_uring_queue_exit(ring)
        if error is not None:
            raise error
        return lambda: None

    def drop_cached(self) -> None:
        """Drop this file's pages from this process's map and from the page cache (see `drop_cached`)."""
        if self._map is not None:
            self._map.madvise(mmap.MADV_DONTNEED)
        if self.fd >= 0:
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def close(self) -> None:
        self._rows = None
        if self._map is not None:
            self._map.close()
            self._map = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def random_read_rate(path: str | os.PathLike, depth: int = DEFAULT_DEPTH, reads: int = 2000) -> float:
    """Random page reads per second from the device holding `path` (O_DIRECT, `depth` in flight, pages spread
    over the file): what a store on SSD can ask of the disk."""
    size = os.path.getsize(path)
    pages = max(1, size // PAGE)
    pick = np.unique(np.random.default_rng(0).integers(0, pages, min(reads, pages)))
    r = FileRows(path, 0, pages, PAGE, np.uint8, method="pread", depth=depth, direct=True)
    try:
        t = time.perf_counter()
        r.read(pick)
        return r.stats.reads / (time.perf_counter() - t)
    finally:
        r.close()


def evict(path: str | os.PathLike) -> None:
    """Drop a file's pages from the page cache (clean pages only: what a cold start would find)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def drop_cached(array: np.ndarray, path: str | os.PathLike) -> None:
    """Make a memory-mapped array cold: unmap the pages this process touched (the kernel keeps mapped pages
    whatever it is advised), then drop the file's pages from the page cache. A plain array is left alone."""
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "_mmap", None) or getattr(base, "base", None)
    if base is not None and not base.closed:
        base.madvise(mmap.MADV_DONTNEED)
        evict(path)


def cached_fraction(path: str | os.PathLike) -> float:
    """The share of a file's pages now in the page cache (mincore over a fresh read-only map; reads nothing)."""
    import ctypes
    size = os.path.getsize(path)
    if not size:
        return 1.0
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        n = -(-size // PAGE)
        vec = (ctypes.c_ubyte * n)()
        view = np.frombuffer(m, np.uint8)
        addr = view.__array_interface__["data"][0]
        del view
        if ctypes.CDLL(None, use_errno=True).mincore(ctypes.c_void_p(addr), ctypes.c_size_t(size), vec) != 0:
            return float("nan")
        return float((np.frombuffer(vec, np.uint8) & 1).sum()) / n
    finally:
        m.close()
