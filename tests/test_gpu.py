"""The GPU path: training, adding and the first pass on a faiss GPU build. Skipped where there is none."""
import numpy as np
import pytest
from conftest import exact_topk, recall_at

from matryoshka import indexing
from matryoshka import retrieval
from matryoshka.core.device import GPU_MAX_K, gpu_count, resolve_device
from matryoshka.core.errors import InputError

needs_gpu = pytest.mark.skipif(gpu_count() == 0, reason="no GPU visible to faiss (faiss-cpu or no device)")


def test_device_choice_without_a_gpu_is_cpu_and_gpu_is_refused_clearly():
    if gpu_count():
        assert resolve_device("auto") == "gpu"
    else:
        assert resolve_device("auto") == "cpu"
        with pytest.raises(InputError, match="device='cpu'"):
            resolve_device("gpu")


@needs_gpu
@pytest.mark.gpu
def test_gpu_build_gives_the_same_file_format_and_quality(tmp_path, small_data):
    docs, queries = small_data
    big = np.concatenate([docs] * 4) + np.random.default_rng(0).normal(0, 0.01, (12000, 96)).astype(np.float32)
    indexing.build(tmp_path / "g", big, index_dim=32, pq_bytes=8, device="gpu", quiet=True)
    gpu = retrieval.open_index(tmp_path / "g", device="gpu")
    cpu = retrieval.open_index(tmp_path / "g", device="cpu")
    truth = exact_topk(big, queries, 10)
    assert recall_at(gpu.search_batch(queries, k=10).rows, truth) >= 0.9
    assert recall_at(cpu.search_batch(queries, k=10).rows, truth) >= 0.9
    r = gpu.search_batch(queries[:2], k=10, k1=5000, nprobe=5000)  # beyond the GPU limit: clamped, not wrong
    assert r.rows.shape == (2, 10) and GPU_MAX_K == 2048


@pytest.mark.slow
def test_engine_indexes_are_made_without_the_factory_parser_and_equal_its_output():
    """faiss-cuda 1.14 wheels raise std::bad_cast from index_factory: the engine builds its indexes from their
    classes, and they must serialize byte for byte like the factory's."""
    import faiss

    from matryoshka.indexing import ivf
    x = np.random.default_rng(0).standard_normal((12000, 32)).astype(np.float32)
    for factory in ("IVF16,Flat", "IVF16,PQ8", "IVF16,PQ16x4fs"):
        for metric in ("cosine", "l2"):
            ours = ivf.train(factory, x, metric, "cpu")
            try:
                ref = faiss.index_factory(32, factory, ivf.faiss_metric(metric))
            except RuntimeError as e:  # the broken parser itself: nothing to compare with
                pytest.skip(f"this faiss build cannot parse factory strings ({e})")
            inner = faiss.downcast_index(faiss.extract_index_ivf(ref))
            if hasattr(inner, "do_polysemous_training"):
                inner.do_polysemous_training = False
            ref.train(x)
            assert type(ours) is type(ref)
            assert bytes(faiss.serialize_index(ours)) == bytes(faiss.serialize_index(ref)), (factory, metric)
