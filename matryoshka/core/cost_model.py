"""Search cost in counted work, priced once per machine: what makes plan and operating-point choices stable.

A build chooses its partition, code and operating point by comparing settings. Timing each one made the
choice depend on how busy the machine was (the same command built `IVF2048,PQ32` and `IVF4096,PQ64x4fs`).
Here a setting's cost is the work it does, counted exactly on the data:

    coarse assignment: nlist x dim multiply-adds        lists probed x per-list cost (tables, heaps)
    codes scanned x code bytes x per-byte cost          int8 candidates x index dim, full candidates x full dim

and each kind of work is priced by a constant measured once on this machine (`calibrate`) and stored in a
file (`$MATRYOSHKA_CALIBRATION`, default `~/.cache/matryoshka/calibration.json`), keyed by the processor, the
thread count and the faiss version. Every later build on the machine prices with the same constants, so the
same input and options give the same choices however loaded the cores are; the constants used are recorded
in the manifest. `matryoshka calibrate` measures them again.
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

CALIBRATION_ENV = "MATRYOSHKA_CALIBRATION"
VERSION = 1
FAMILIES = ("fs", "pq", "flat")  # 4-bit fast-scan PQ, 8-bit PQ, uncompressed (small indexes)
_DIM, _LISTS, _ROWS, _FEW, _TRAIN, _QUERIES, _NPROBE, _DEPTH = 128, 64, 65536, 2048, 10240, 512, 8, 200


@dataclass(frozen=True)
class Calibration:
    """Nanoseconds per unit of work on one machine, at one thread count."""

    coarse_ns: float  # per centroid x dim of the coarse assignment, per query
    list_ns: dict  # per list probed, by code family
    code_ns: dict  # per byte of code scanned, by code family
    int8_ns: float  # per int8 candidate x index dim re-scored
    full_ns: float  # per float16 candidate x full dim re-scored
    machine: str
    threads: int

    def to_dict(self) -> dict:
        return asdict(self)


def family(factory_or_code: str) -> str:
    """The code family of a faiss factory string or code ('IVF1024,PQ64x4fs' -> 'fs')."""
    code = factory_or_code.rpartition(",")[2]
    return "fs" if code.endswith("fs") else "flat" if code == "Flat" else "pq"


def code_bytes(code: str, dim: int) -> float:
    """Bytes per vector of a code: 'PQ32' 32, 'PQ64x4fs' 32, 'Flat' 4 x dim."""
    if code == "Flat":
        return 4.0 * dim
    m, _, bits = code[2:].removesuffix("fs").partition("x")
    return int(m) * int(bits or 8) / 8


def query_ms(cal: Calibration, *, nlist: int, dim: int, code: str, lists: float, codes: float,
             int8: float = 0.0, full: float = 0.0, full_dim: int = 0, reads: float = 0.0,
             read_ns: float = 0.0) -> float:
    """Modelled milliseconds per query (in a batch) for the counted work of one setting: `lists` probed and
    `codes` scanned per query on average, `int8` and `full` candidates re-scored, and `reads` device reads of
    stores on SSD at `read_ns` each (`device_read_ns`)."""
    f = family(code)
    ns = (cal.coarse_ns * nlist * dim + cal.list_ns[f] * lists + cal.code_ns[f] * code_bytes(code, dim) * codes
          + cal.int8_ns * dim * int8 + cal.full_ns * full_dim * full + read_ns * reads)
    return ns * 1e-6


def device_read_ns(path: str | os.PathLike, measure, *, recalibrate: bool = False) -> float:
    """Nanoseconds per random read of the device that holds `path`, in a batch: `measure()` gives reads per
    second at the queue depth the SSD tier uses. Measured once per device and stored with the constants."""
    st = os.stat(path)
    key = f"device v{VERSION}; {os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    stored = _read(_path()).get(key)
    if stored and not recalibrate:
        return float(stored["read_ns"])
    value = {"read_ns": 1e9 / measure(), "path": str(path)}
    _store(key, value)
    return value["read_ns"]


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}; {os.cpu_count()} cpus; faiss {faiss.__version__}"


def _path() -> Path:
    env = os.environ.get(CALIBRATION_ENV)
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "matryoshka" / "calibration.json"


def _key(machine: str, threads: int) -> str:
    return f"v{VERSION}; {machine}; {threads} threads"


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def calibration(threads: int | None = None, *, recalibrate: bool = False) -> Calibration:
    """The stored constants of this machine at `threads` (faiss's current count by default); measured and stored
    the first time (a few seconds), or again when `recalibrate`."""
    threads = threads or faiss.omp_get_max_threads()
    machine, path = _machine(), _path()
    key = _key(machine, threads)
    stored = _read(path).get(key)
    if stored and not recalibrate:
        try:
            return Calibration(**stored)
        except TypeError:
            pass  # written by another version of this module: measure again
    cal = calibrate(machine, threads)
    _store(key, cal.to_dict())
    return cal


def _store(key: str, value: dict) -> None:
    path = _path()
    entries = _read(path)
    entries[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "w") as f:
        json.dump(entries, f, indent=2, sort_keys=True)
    os.replace(tmp, path)  # two processes calibrating at once: one file wins whole


def _best_s(fn, repeats: int = 7) -> float:
    """The fastest of `repeats` runs after a warm one: what the machine can do, least touched by other load."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _scan_costs(code: str, base: np.ndarray, centroids: np.ndarray, q: np.ndarray) -> tuple[float, float]:
    """(ns per list probed, ns per code byte scanned) for one code family: the same lists searched holding
    many and few rows, so the per-list and per-code parts separate."""
    probe = faiss.SearchParametersIVF(nprobe=_NPROBE)
    trained = faiss.index_factory(base.shape[1], f"IVF{len(centroids)},{code}", faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(trained))
    ivf.quantizer.add(centroids)
    if hasattr(ivf, "do_polysemous_training"):
        ivf.do_polysemous_training = False  # minutes of training for a code ordering the scan does not use
    trained.train(base[:_TRAIN])
    cost = []
    for rows in (len(base), _FEW):
        index = faiss.clone_index(trained)
        index.add(base[:rows])
        ivf = faiss.extract_index_ivf(index)
        _, lists = ivf.quantizer.search(q, _NPROBE)
        sizes = np.array([ivf.invlists.list_size(int(i)) for i in range(len(centroids))])
        coarse = _best_s(lambda: ivf.quantizer.search(q, _NPROBE))
        secs = max(0.0, _best_s(lambda: index.search(q, 10, params=probe)) - coarse)
        cost.append((secs / len(q), sizes[lists].sum(1).mean() * code_bytes(code, base.shape[1])))
    (t_many, b_many), (t_few, b_few) = cost
    per_byte = max(0.0, (t_many - t_few) / max(b_many - b_few, 1.0))
    per_list = max(0.0, (t_few - per_byte * b_few) / _NPROBE)
    return per_list * 1e9, per_byte * 1e9


def calibrate(machine: str | None = None, threads: int | None = None) -> Calibration:
    """Measure the constants on synthetic data (the best of 7 runs each): a few seconds."""
    threads = threads or faiss.omp_get_max_threads()
    rng = np.random.default_rng(0)
    base = rng.standard_normal((_ROWS, _DIM), dtype=np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    q = np.ascontiguousarray(base[rng.choice(_ROWS, _QUERIES, replace=False)] + 0.1)
    centroids = np.ascontiguousarray(base[rng.choice(_ROWS, _LISTS, replace=False)])
    flat = faiss.IndexFlatIP(_DIM)
    flat.add(np.ascontiguousarray(base[:4096]))  # as 4096 centroids
    coarse = _best_s(lambda: flat.search(q, _NPROBE)) / (len(q) * flat.ntotal * _DIM) * 1e9
    list_ns, code_ns = {}, {}
    for f, code in zip(FAMILIES, (f"PQ{_DIM // 4}x4fs", f"PQ{_DIM // 8}", "Flat")):
        list_ns[f], code_ns[f] = _scan_costs(code, base, centroids, q)
    cand = rng.integers(0, _ROWS, size=(len(q), _DEPTH))
    codes = (base * 127).astype(np.int8)
    scale = np.full(_DIM, 1 / 127, np.float32)
    int8 = _best_s(lambda: np.matmul(codes[cand].astype(np.float32), (q * scale)[:, :, None]))
    full_store = base.astype(np.float16)
    full = _best_s(lambda: np.matmul(_f32(full_store[cand]), q[:, :, None]))
    per = cand.size * _DIM
    return Calibration(coarse, list_ns, code_ns, int8 / per * 1e9, full / per * 1e9, machine or _machine(),
                       threads)


def _f32(x: np.ndarray) -> np.ndarray:
    try:
        import torch
    except ImportError:
        return x.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(x)).float().numpy()
