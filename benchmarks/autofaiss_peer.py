"""autofaiss's automatically chosen index at the engine's memory budget, run in a separate interpreter.

autofaiss pins numpy < 2, which this project's environment does not have, so it runs in whatever Python
is named by --autofaiss-python or $MATRYOSHKA_AUTOFAISS_PYTHON (e.g. a throwaway venv:
`python -m venv /tmp/af && /tmp/af/bin/pip install autofaiss "pyarrow<16"`), or in this one if it imports.
Without one the peer is skipped and the report says why.
"""
from __future__ import annotations

import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .data import Dataset
from .metrics import Qrels, percentiles_ms, quality
from .peers import _row, skipped

WORKER = Path(__file__).with_name("autofaiss_worker.py")


def find_python(explicit: str | None = None) -> tuple[str | None, str]:
    """(interpreter, why) where autofaiss imports; (None, reason) when none does."""
    candidates = [p for p in (explicit, os.environ.get("MATRYOSHKA_AUTOFAISS_PYTHON")) if p]
    if importlib.util.find_spec("autofaiss") is not None:
        candidates.append(sys.executable)
    for py in candidates:
        r = subprocess.run([py, "-c", "import autofaiss, faiss, numpy; print(faiss.__version__, numpy.__version__)"],
                           capture_output=True, text=True)
        if r.returncode == 0:
            return py, f"autofaiss with faiss/numpy {r.stdout.strip()} in {py}"
    if not candidates:
        return None, ("autofaiss is not importable here (it pins numpy<2, this environment has numpy "
                      f"{np.__version__}); pass --autofaiss-python PATH to a venv that has it")
    return None, f"autofaiss does not import in {', '.join(candidates)}"


def run_autofaiss(ds: Dataset, truth: np.ndarray, qrels: Qrels | None, budget_bytes: float, threads: int,
                  latency_queries: int, workdir: Path, python: str | None = None, timeout: float = 3600) -> dict:
    py, why = find_python(python)
    if py is None:
        return skipped("autofaiss", "n/a", ds, why)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        docs = ds.path
        if docs is None:
            docs = Path(tmp) / "docs.npy"
            np.save(docs, np.asarray(ds.docs, dtype=np.float32))
        np.save(Path(tmp) / "queries.npy", ds.queries)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads))
        try:
            r = subprocess.run([py, str(WORKER), str(docs), str(Path(tmp) / "queries.npy"), str(int(budget_bytes)),
                                str(threads), str(latency_queries), tmp], capture_output=True, text=True, env=env,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            return skipped("autofaiss", "n/a", ds, f"autofaiss took more than {timeout:.0f} s")
        if r.returncode != 0 or not (Path(tmp) / "result.json").exists():
            tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
            return skipped("autofaiss", "n/a", ds, f"autofaiss failed: {' | '.join(tail)}")
        res = json.loads((Path(tmp) / "result.json").read_text())
        rows10, rows100 = np.load(Path(tmp) / "rows10.npy"), np.load(Path(tmp) / "rows100.npy")
    m = quality(rows10, truth, None)
    if qrels:
        m.update({k: v for k, v in quality(rows100, truth, qrels).items() if k != "recall_at_10"})
    p50, p99 = percentiles_ms(res["latency_seconds"])
    m.update({"qps": len(ds.queries) / res["batch_seconds"], "batch_seconds": res["batch_seconds"], "p50_ms": p50,
              "p99_ms": p99, "latency_queries": len(res["latency_seconds"]),
              "peak_rss_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024})
    per_vec = res["index_bytes"] / ds.n
    return _row("autofaiss", f"{res['index_key']} {res['index_param']}", ds, per_vec, 0.0, per_vec,
                res["build_seconds"], m, budget_bytes=budget_bytes, note=why)
