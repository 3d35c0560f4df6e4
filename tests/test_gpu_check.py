"""The device check and the re-scoring benchmark, run on the CPU at a tiny size (every step but the GPU's), and
the data and exact truth they make with torch. The CUDA run skips without a GPU."""
import json

import numpy as np
import pytest
import torch

from matryoshka.benchmarks import device_data, gpu_check, rescore_device
from matryoshka.core.device import gpu_count

TINY = ["--n", "6000", "--dim", "48", "--index-dim", "16", "--pq-bytes", "4", "--queries", "250", "--single", "5",
        "--rescore-rows", "3000"]


def _exact(q: np.ndarray, docs: np.ndarray, k: int, metric: str) -> np.ndarray:
    if metric == "cosine":
        q, docs = (a / np.linalg.norm(a, axis=1, keepdims=True) for a in (q, docs))
    s = q @ docs.T if metric != "l2" else -((q[:, None, :] - docs[None]) ** 2).sum(-1)
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_exact_topk_in_blocks_is_the_brute_force_top(metric, monkeypatch):
    monkeypatch.setattr(device_data, "BLOCK_SCORES", 7 * 300)  # blocks of 300 documents: merged 7 times
    docs = device_data.clustered(2000, 24, "cpu", clusters=16)
    q = device_data.clustered(7, 24, "cpu", stream=2, clusters=16)
    got = device_data.exact_topk(q, docs, 10, metric).numpy()
    assert np.array_equal(got, _exact(q.numpy().astype(np.float64), docs.numpy().astype(np.float64), 10, metric))


def test_made_vectors_repeat_and_each_stream_differs():
    a = device_data.clustered(1000, 32, "cpu", stream=1)
    assert torch.equal(a, device_data.clustered(1000, 32, "cpu", stream=1))
    assert not torch.equal(a, device_data.clustered(1000, 32, "cpu", stream=2))
    assert a[:, :4].std() > 3 * a[:, -4:].std()  # the leading dims carry the variance


def test_the_rescoring_benchmark_times_every_path_over_numpy(tmp_path):
    r = rescore_device.main(["--queries", "30", "--rows", "2000", "--short-dim", "16", "--full-dim", "32",
                             "--repeats", "1", "--out", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(r))
    assert set(r["seconds"]) == {"numpy", "torch-cpu"} | ({"torch-cuda"} if torch.cuda.is_available() else set())
    t = r["seconds"]["torch-cpu"]
    assert r["over_numpy"]["torch-cpu"]["int8_held"] == t["int8_held"] / r["seconds"]["numpy"]["int8"]
    assert all(s > 0 for path in r["seconds"].values() for s in path.values())


def test_the_device_check_runs_every_step_on_the_cpu(tmp_path):
    out = tmp_path / "check.json"
    r = gpu_check.main(TINY + ["--device", "cpu", "--index", str(tmp_path / "idx"), "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(r))
    assert list(r["seconds"]) == ["generate", "exact_truth", "build", "search_cpu", "rescore"]
    assert "gpu" not in r and r["card"] is None
    cpu = r["cpu"]
    assert set(cpu["batches"]) == {1, 100, 10_000} and cpu["batches"][10_000]["queries"] == 250
    assert {"first_pass", "int8", "full"} <= set(cpu["batches"][100]["ms_per_query"])
    assert cpu["recall_at_10"] > 0.8 and cpu["stores"]["codes"] == "ram"
    assert set(r["rescore"]["seconds"]) == {"numpy", "torch-cpu"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or gpu_count() == 0, reason="needs CUDA and faiss's GPU build")
def test_the_device_check_on_a_gpu(tmp_path):
    r = gpu_check.main(TINY + ["--index", str(tmp_path / "idx"), "--out", str(tmp_path / "check.json")])
    assert r["card"] and r["gpu"]["recall_at_10"] > 0.8 and r["cpu"]["recall_at_10"] > 0.8
    assert set(r["rescore"]["seconds"]) == {"numpy", "torch-cpu", "torch-cuda"}
