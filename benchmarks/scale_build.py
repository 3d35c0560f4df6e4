"""Out-of-core build at scale: peak RSS, time and throughput per step, bytes per vector, against plan-size.

    python -m matryoshka.benchmarks.scale_build --n 10000000 --dim 768 --data /data/syn10m-768.npy --out /data/idx10m

Generates the synthetic input (float16 .npy, not Matryoshka-like) if it is missing, runs `matryoshka build`
under `/usr/bin/time -v` in its own process, and writes a JSON record (default benchmarks/results/).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from matryoshka.indexing.sizing import estimate
from matryoshka.storage.manifest import read_manifest
from matryoshka.storage.pinned import PinnedFolder

STEPS = ("read", "validate", "transform", "int8", "pq_encode", "write", "finish_shard")


def run(n: int, dim: int, data: Path, out: Path, extra: list[str], results: Path) -> dict:
    if not data.exists():
        from .synthetic import Synthetic
        Synthetic(dim=dim, matryoshka=False, clusters=4096, seed=10).write_npy(data, n)
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "matryoshka.retrieval.cli", "build", str(data),
           "--out", str(out), "--quiet", *extra]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(f"build failed:\n{p.stderr[-3000:]}")
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    with PinnedFolder(out) as folder:
        m = read_manifest(folder)
    secs = m.build["seconds"]
    disk = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    codes_and_ids = sum(s.files["index.faiss"]["bytes"] for s in m.shards)
    plan = estimate(m.count, m.full_dim, m.index_dim, m.factory, m.build["options"]["shard_size"],
                    m.build["options"]["batch_rows"], m.build["train_rows"])
    record = {
        "n": m.count, "full_dim": m.full_dim, "index_dim": m.index_dim, "factory": m.factory,
        "command": " ".join(cmd[2:]), "wall_seconds": round(wall, 1), "peak_rss_bytes": rss_kib * 1024,
        "train_seconds": round(secs["train"], 1), "train_rows": m.build["train_rows"],
        "seconds_per_step": {k: round(secs.get(k, 0.0), 1) for k in STEPS},
        "vectors_per_second_per_step": {k: round(m.count / secs[k]) for k in STEPS if secs.get(k)},
        "vectors_per_second_overall": round(m.count / wall),
        "disk_bytes_per_vector": round(disk / m.count, 1),
        "ram_bytes_per_vector_first_pass": round(codes_and_ids / m.count, 1),
        "plan_size": {k: plan[k] for k in ("disk_bytes_per_vector", "ram_bytes_per_vector", "build_peak_ram")},
    }
    results.mkdir(parents=True, exist_ok=True)
    (results / f"scale_build_{n}.json").write_text(json.dumps(record, indent=2))
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--data", type=Path, required=True, help=".npy input (generated if missing)")
    ap.add_argument("--out", type=Path, required=True, help="index folder")
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    a, extra = ap.parse_known_args(argv)
    print(json.dumps(run(a.n, a.dim, a.data, a.out, extra, a.results), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
