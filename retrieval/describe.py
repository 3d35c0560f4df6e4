"""`Index.info()`: what an opened index holds, where each store lives, and what it costs per vector."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import faiss

from matryoshka.core import layout
from matryoshka.storage import row_reader, tiers
from matryoshka.storage.manifest import LEXICAL_DIR

from .traffic import stale

if TYPE_CHECKING:
    from .index import Index


def describe(ix: "Index") -> dict:
    """The manifest summary of an open handle (called under its swap lock)."""
    m, n = ix.manifest, max(ix.count, 1)
    ivf = faiss.extract_index_ivf(ix.trained)
    # code + faiss's int64 row id per vector, the external ids (held by the backend), one copy of the centroids
    ram = ivf.code_size + 8 + (ix.backend.id_map_bytes() + ivf.nlist * ix.index_dim * 4) / n
    shard_bytes = [sum(f["bytes"] for f in s.files.values()) for s in m.shards]
    mmapped = ix.count * (ix.index_dim + 2 * ix.full_dim)  # int8 short + float16 full rows
    disk = sum(shard_bytes) + m.trained["bytes"] + m.transform_file["bytes"]
    placed = stores(ix)
    return {"path": str(ix.root), "count": ix.count, "live": ix.live, "dead": ix.count - ix.live,
            "generation": ix.generation, "metric": ix.metric, "full_dim": ix.full_dim,
            "index_dim": ix.index_dim, "factory": m.factory,
            "transform": m.transform, "model": (m.model or {}).get("name"),
            "device": ix.device,
            "shards": [{"number": s.number, "count": s.count, "bytes": b, "dead": s.dead_count}
                       for s, b in zip(m.shards, shard_bytes)],
            "changes": m.changes, "attributes": m.attributes,
            "ram_bytes_per_vector": ram, "mmap_bytes_per_vector": mmapped / n,
            "memory_budget": ix.memory_budget, "stores": placed,
            "resident_bytes": sum(s["bytes"] for s in placed.values() if s["tier"] in (tiers.RAM, tiers.PINNED)),
            "gpu_bytes": sum(s["bytes"] for s in placed.values() if s["tier"] == tiers.GPU),
            "disk_bytes_per_vector": disk / n, "build": m.build, "build_log": build_log(ix.root),
            "operating_point": tiers.operating_point(m, ix.tiers),
            "operating_point_stale": stale(tiers.operating_point(m, ix.tiers), ix.generation),
            "operating_points": m.operating_points, "defaults": ix.params.to_dict()}


def stores(ix: "Index") -> dict:
    """Per store: bytes, tier (RAM, page cache, SSD), the share of its files now in the page cache, and the
    device reads it issued since opening (stores read from SSD)."""
    placed, reads = ix.backend.placement(), ix.backend.store_reads()
    files = {"int8": (layout.SHORT_FILE,), "full": (layout.FULL_FILE,),
             "texts": (layout.DOC_OFFSETS, layout.DOC_BYTES)}
    out = {}
    for store in tiers.STORES:
        paths = [ix.root / layout.shard_dir(s.number) / f for s in ix.manifest.shards
                 for f in files.get(store, ()) if f in s.files]
        out[store] = {**placed[store], "page_cached": cached_share(paths) if paths else None}
        if store in reads:
            out[store]["reads"] = reads[store]
    if ix.manifest.lexical:  # BM25 per shard: memory-mapped by tantivy, read as queries need it
        paths = [ix.root / layout.shard_dir(s.number) / f for s in ix.manifest.shards for f in s.files
                 if f.startswith(LEXICAL_DIR + "/")]
        out["lexical"] = {"tier": tiers.CACHE, "bytes": sum(p.stat().st_size for p in paths if p.exists()),
                          "page_cached": cached_share(paths) if paths else None}
    return out


def cached_share(paths: list[Path]) -> float | None:
    """The share of the files' bytes now in the page cache (None when they cannot be read)."""
    try:
        sizes = [p.stat().st_size for p in paths]
        total = sum(sizes)
        return sum(row_reader.cached_fraction(p) * b for p, b in zip(paths, sizes)) / total if total else 1.0
    except OSError:
        return None


def build_log(root: Path) -> dict | None:
    """Seconds per build step (`layout.BUILD_LOG`), when the folder has them."""
    try:
        return json.loads((root / layout.BUILD_LOG).read_text())
    except (OSError, ValueError):
        return None
