"""Bytes each part of an index needs, for planning a build on paper and checking free disk up front."""
from __future__ import annotations

import math

from matryoshka.core import cost_model, layout

ID_MAP_BYTES = 12  # Parquet id map per row, measured on string ids like "doc-123456789" (int ids: ~8)


def code_bytes(factory: str, index_dim: int) -> int:
    """Bytes of one vector's first-pass code."""
    return int(cost_model.code_bytes(layout.parse_factory(factory)[1], index_dim))


def estimate(n: int, full_dim: int, index_dim: int, factory: str, shard_size: int,
             batch_rows: int = 16384, train_size: int = 0) -> dict:
    """Per-part sizes in bytes for n vectors: resident RAM, memory-mapped stores, disk, GPU, build peak."""
    nlist = layout.parse_factory(factory)[0]
    code = code_bytes(factory, index_dim)
    centroids = nlist * index_dim * 4
    shards = max(1, math.ceil(n / shard_size))
    first_pass = n * (code + 8) + centroids  # code + int64 id per vector; one copy of the centroids for all shards
    index_files = first_pass + shards * centroids  # on disk every shard file carries its own copy
    short, full, ids = n * index_dim, n * full_dim * 2, n * ID_MAP_BYTES
    per_shard_codes = min(n, shard_size) * (code + 8)
    build_peak = per_shard_codes + batch_rows * full_dim * 4 * 6 + train_size * full_dim * 4 * 3
    return {
        "n": n, "shards": shards, "nlist": nlist,
        "ram_first_pass": first_pass, "ram_bytes_per_vector": first_pass / max(n, 1),
        "gpu_first_pass": first_pass,
        "mmap_short_int8": short, "mmap_full_f16": full, "id_maps": ids,
        "disk_total": index_files + short + full + ids,
        "disk_bytes_per_vector": (index_files + short + full + ids) / max(n, 1),
        "build_peak_ram": build_peak,
    }


def human(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(nbytes) < 1024 or unit == "PiB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1024
    return str(nbytes)
