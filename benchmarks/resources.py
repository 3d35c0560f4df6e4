"""Threads, timing and peak memory of the benchmark process.

Peak RSS: `resource.getrusage(RUSAGE_SELF).ru_maxrss` is the high-water mark of the whole benchmark process
since it started (data, ground truth, every system measured so far). Where Linux allows it, the mark is reset
before each system (`/proc/self/clear_refs` = 5) and read from `VmHWM`, so a row's peak covers that system's
build and search only, on top of the data the process already held.
"""
from __future__ import annotations

import os
import resource
import time
from contextlib import contextmanager

from matryoshka.core.device import set_threads

__all__ = ["set_threads", "reset_peak", "peak_rss", "timed", "PEAK_RSS_NOTE"]

PEAK_RSS_NOTE = __doc__.split("Peak RSS: ", 1)[1].strip().replace("\n", " ")


def reset_peak() -> bool:
    """Reset the process's RSS high-water mark; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    """Peak resident bytes since the last reset (VmHWM), or since the start (getrusage) without /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def process_peak_rss() -> int:
    """getrusage's peak RSS of this process since it started, in bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextmanager
def timed(out: dict, key: str):
    """Add the seconds the block took to out[key]."""
    t = time.perf_counter()
    try:
        yield
    finally:
        out[key] = out.get(key, 0.0) + time.perf_counter() - t


def cpu_count() -> int:
    return os.cpu_count() or 1
