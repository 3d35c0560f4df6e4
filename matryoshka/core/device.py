"""Where the faiss work runs (CPU or GPU) and how many threads each library may use."""
from __future__ import annotations

import os
from importlib import metadata

import faiss

from .checks import integer
from .errors import InputError

GPU_MAX_K = 2048  # faiss GPU limit for k and nprobe in one call
DEVICES = ("auto", "cpu", "gpu")
MAX_THREADS = 4096  # more than any machine has cores; 10**6 made OpenMP run out of memory


def gpu_count() -> int:
    if not hasattr(faiss, "StandardGpuResources"):
        return 0
    return faiss.get_num_gpus()


def resolve_device(device: str = "auto") -> str:
    """'auto' picks the GPU when the faiss build has one; 'gpu' without one is an error."""
    if device not in DEVICES:
        raise InputError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "auto":
        return "gpu" if gpu_count() > 0 else "cpu"
    if device == "gpu" and gpu_count() == 0:
        raise InputError("device='gpu' was asked for but this faiss build sees no GPU; install faiss-gpu "
                         "(see the README) or pass device='cpu'")
    return device


_resources = None


def gpu_resources():
    global _resources
    if _resources is None:
        _resources = faiss.StandardGpuResources()
    return _resources


def to_gpu(index: faiss.Index) -> faiss.Index:
    co = faiss.GpuClonerOptions()
    co.useFloat16LookupTables = True  # needed by PQ with many sub-quantizers; harmless otherwise
    return faiss.index_cpu_to_gpu(gpu_resources(), 0, index, co)


def check_faiss_install() -> None:
    """faiss-cpu and faiss-gpu install the same module; both at once leave a half-overwritten faiss."""
    names = set()
    for dist in ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss-gpu-cu11", "faiss-cuda"):
        try:
            metadata.version(dist)
            names.add(dist)
        except metadata.PackageNotFoundError:
            pass
    if "faiss-cpu" in names and len(names) > 1:
        other = sorted(names - {"faiss-cpu"})[0]
        raise ImportError(f"both faiss-cpu and {other} are installed and overwrite each other's files; run "
                          f"`pip uninstall -y faiss-cpu {other} && pip install {other}`")


def set_threads(n: int | None = None) -> int:
    """Give faiss (OpenMP), torch and BLAS the same thread count, `n` or MATRYOSHKA_THREADS; with neither, change
    nothing (each library keeps what it has: every core by default, or what the caller set). The count in force
    for faiss is returned."""
    integer("threads (--threads)", n, 1, MAX_THREADS, optional=True)
    if n is None and os.environ.get("MATRYOSHKA_THREADS", "").strip():
        text = os.environ["MATRYOSHKA_THREADS"]
        if not text.strip().isdigit():
            raise InputError(f"MATRYOSHKA_THREADS must be a whole number of threads; got {text!r}: fix it, or "
                             "unset it (or set 0) to leave the libraries' threads as they are")
        n = int(text) or None
    if n is None:
        return faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        import torch
        torch.set_num_threads(n)
    except ImportError:
        pass
    from threadpoolctl import threadpool_limits
    threadpool_limits(n, user_api="blas")
    return n
